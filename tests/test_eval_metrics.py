"""jaxinv.eval.metrics against scikit-image and hand-computed cases."""
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxinv.eval import metrics


class TinyId(nn.Module):
  """A random stand-in identity network: [B, 112, 112, 3] -> [B, 16] (not normalised)."""

  @nn.compact
  def __call__(self, x):
    x = nn.relu(nn.Conv(4, (3, 3), strides=(4, 4))(x))
    return nn.Dense(16)(x.reshape(x.shape[0], -1))


def tiny_id():
  m = TinyId()
  return m, jax.jit(m.init)(jax.random.PRNGKey(0), jnp.zeros((1, 112, 112, 3)))


NET = tiny_id()


def _pair(shape, seed=0):
  r = np.random.default_rng(seed)
  a = r.uniform(-1, 1, shape).astype(np.float32)
  b = np.clip(a + r.normal(0, 0.2, shape), -1, 1).astype(np.float32)
  return a, b


def test_mse_psnr_constructed_pair():
  a = np.zeros((2, 8, 8, 3), np.float32)
  b = np.stack([np.full((8, 8, 3), 0.5), np.full((8, 8, 3), -1.0)]).astype(np.float32)
  np.testing.assert_allclose(metrics.mse(a, b), [0.25, 1.0], rtol=1e-6)
  # 10 log10(2^2 / 0.25) = 10 log10(16); 10 log10(4 / 1)
  np.testing.assert_allclose(metrics.psnr(a, b), [10 * np.log10(16.0), 10 * np.log10(4.0)],
                             rtol=1e-6)
  assert float(metrics.psnr(a, a)[0]) == pytest.approx(10 * np.log10(4 / 1e-12), rel=1e-6)
  with pytest.raises(ValueError, match="same shape"):
    metrics.mse(a, b[:1])


def test_ssim_matches_scikit_image():
  skm = pytest.importorskip("skimage.metrics")
  a, b = _pair((2, 24, 20, 3))
  ours = np.asarray(metrics.ssim(a, b))
  ref = [skm.structural_similarity(a[i], b[i], data_range=2.0, channel_axis=-1,
                                   gaussian_weights=True, sigma=1.5,
                                   use_sample_covariance=False) for i in range(2)]
  np.testing.assert_allclose(ours, ref, atol=2e-5)
  np.testing.assert_allclose(metrics.ssim(a, a), [1.0, 1.0], atol=1e-6)


def test_ms_ssim_identical_and_too_small():
  a, b = _pair((1, 161, 161, 3))
  np.testing.assert_allclose(metrics.ms_ssim(a, a), [1.0], atol=1e-5)
  assert 0 < float(metrics.ms_ssim(a, b)[0]) < 1
  with pytest.raises(ValueError, match="too small"):
    metrics.ms_ssim(a[:, :100, :100], b[:, :100, :100])


@pytest.mark.parametrize("crop", ["psp", "none"])
def test_id_similarity_of_an_image_with_itself_is_one(crop):
  net = NET
  a, b = _pair((2, 64, 64, 3))
  np.testing.assert_allclose(metrics.id_similarity(net, a, a, crop), [1.0, 1.0], atol=1e-5)
  s = np.asarray(metrics.id_similarity(net, a, -a, crop))
  assert np.all(s < 0.999) and np.all(s >= -1.0001)
  # A plain callable works too.
  f = lambda x: net[0].apply(net[1], x)
  np.testing.assert_allclose(metrics.id_similarity(f, a, b, crop),
                             metrics.id_similarity(net, a, b, crop), atol=1e-6)
  with pytest.raises(ValueError, match="crop"):
    metrics.id_similarity(net, a, a, "tight")


def test_depth_error_hand_case():
  pred = np.zeros((2, 2, 2, 1), np.float32)
  true = np.array([[[1.0, 2.0], [np.inf, 4.0]], [[np.inf, np.inf], [np.inf, np.inf]]],
                  np.float32)[..., None]
  mask = np.array([[[1, 1], [1, 0]], [[0, 0], [0, 0]]], np.float32)[..., None]
  # Item 0: foreground pixels 1, 2 (the inf one is never counted, 4 is background) -> 1.5.
  out = np.asarray(metrics.depth_error(pred + 0.5, true, mask))
  assert out[0] == pytest.approx((0.5 + 1.5) / 2)
  assert np.isnan(out[1])  # no foreground at all
