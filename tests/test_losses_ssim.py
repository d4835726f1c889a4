"""SSIM against scikit-image; MS-SSIM properties and its reduction to SSIM."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxinv.losses import ssim as S

skm = pytest.importorskip("skimage.metrics")


def _pair(shape, noise=0.3, seed=0):
  rng = np.random.default_rng(seed)
  x = rng.uniform(-1, 1, shape).astype(np.float32)
  y = np.clip(x + noise * rng.standard_normal(shape), -1, 1).astype(np.float32)
  return x, y


@pytest.mark.parametrize("shape", [(2, 40, 48, 3), (1, 23, 31, 1)])
def test_ssim_matches_skimage(shape):
  x, y = _pair(shape)
  ours = np.asarray(jax.jit(S.ssim)(x, y))
  ref = [skm.structural_similarity(x[i], y[i], data_range=2.0, gaussian_weights=True, sigma=1.5,
                                   use_sample_covariance=False, channel_axis=-1)
         for i in range(shape[0])]
  np.testing.assert_allclose(ours, ref, rtol=1e-5, atol=1e-6)


def test_ms_ssim_properties():
  x, y = _pair((2, 176, 180, 3), noise=0.2)
  f = jax.jit(S.ms_ssim)
  np.testing.assert_allclose(f(x, x), 1.0, atol=1e-6)
  v = np.asarray(f(x, y))
  assert np.all((v > 0) & (v < 1))
  np.testing.assert_allclose(f(x[1:], y[1:])[0], v[1], rtol=1e-6)
  # Less noise -> more similar.
  _, y2 = _pair((2, 176, 180, 3), noise=0.05)
  assert np.all(np.asarray(f(x, y2)) > v)


def test_ms_ssim_single_scale_is_ssim_and_last_scale_uses_downsampled_images():
  x, y = _pair((1, 48, 50, 3))
  np.testing.assert_allclose(S.ms_ssim(x, y, weights=(1.0,)), S.ssim(x, y), rtol=1e-6)
  # Weight only on the coarsest of two scales: SSIM of the 2x2-average-pooled images.
  pool = lambda a: a.reshape(1, 24, 2, 25, 2, 3).mean(axis=(2, 4))
  ref = skm.structural_similarity(pool(x)[0], pool(y)[0], data_range=2.0, gaussian_weights=True,
                                  sigma=1.5, use_sample_covariance=False, channel_axis=-1)
  np.testing.assert_allclose(S.ms_ssim(x, y, weights=(0.0, 1.0)), [ref], rtol=1e-5)


def test_gradients_finite_and_match_finite_differences():
  x, y = _pair((1, 24, 24, 3))
  with jax.enable_x64(True):
    x64, y64 = jnp.asarray(x, jnp.float64), jnp.asarray(y, jnp.float64)
    g = jax.grad(S.ssim_loss)(x64, y64)
    d = jnp.asarray(np.random.default_rng(3).standard_normal(x.shape))
    eps = 1e-6
    fd = (S.ssim_loss(x64 + eps * d, y64) - S.ssim_loss(x64 - eps * d, y64)) / (2 * eps)
    np.testing.assert_allclose(float(jnp.vdot(g, d)), float(fd), rtol=1e-6)
  xs, ys = _pair((1, 161, 161, 3), noise=1.5)  # some clipped (negative) cs terms
  gm = jax.jit(jax.grad(S.ms_ssim_loss))(xs, ys)
  assert np.all(np.isfinite(gm))


def test_bad_input():
  x = jnp.zeros((1, 100, 100, 3))
  with pytest.raises(ValueError, match="too small"):
    S.ms_ssim(x, x)
  with pytest.raises(ValueError, match="same shape"):
    S.ssim(x, jnp.zeros((1, 100, 99, 3)))
  with pytest.raises(ValueError, match="dimensions"):
    S.ssim(x[0], x[0])
