"""Symmetry prior (TriPlaneNet eqs. 14-15) and the GAN / latent regularisers."""
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxinv.losses import adversarial as A
from jaxinv.losses import symmetry as Y


def _imgs(seed=0, shape=(2, 16, 20, 3)):
  rng = np.random.default_rng(seed)
  return (jnp.asarray(rng.uniform(-1, 1, shape), jnp.float32),
          jnp.asarray(rng.uniform(-1, 1, shape), jnp.float32),
          jnp.asarray(rng.uniform(0.2, 2.0, shape[:3] + (1,)), jnp.float32))


def test_mirror_and_closed_forms():
  x, y, s = _imgs()
  np.testing.assert_array_equal(Y.mirror(x)[:, :, 0], x[:, :, -1])
  np.testing.assert_array_equal(Y.mirror(Y.mirror(x)), x)
  xn, yn, sn = map(np.asarray, (x, y, s))
  l1 = np.abs(xn - yn).mean(-1, keepdims=True)
  l2 = ((xn - yn) ** 2).mean(-1, keepdims=True)
  np.testing.assert_allclose(Y.symmetry_loss(x, y, s), np.mean(l2 / sn), rtol=1e-5)
  lap = math.log(math.sqrt(2)) + np.mean(np.log(sn) + math.sqrt(2) * l1 / sn)
  np.testing.assert_allclose(Y.symmetry_nll(x, y, s), lap, rtol=1e-5)
  gau = 0.5 * math.log(2 * math.pi) + np.mean(np.log(sn) + l1 ** 2 / (2 * sn ** 2))
  np.testing.assert_allclose(Y.symmetry_nll(x, y, s, density="gaussian"), gau, rtol=1e-5)
  sm = np.where(np.abs(xn - yn) < 1, 0.5 * (xn - yn) ** 2, np.abs(xn - yn) - 0.5).mean(-1, keepdims=True)
  np.testing.assert_allclose(Y.symmetry_loss(x, y, s, distance="smooth_l1"), np.mean(sm / sn), rtol=1e-5)


def test_laplacian_nll_optimal_sigma_is_sqrt2_l1():
  """d/dsigma [log s + sqrt2 l / s] = 0 at s = sqrt2 l: the NLL learns the residual scale."""
  x, y, _ = _imgs()
  l1 = jnp.abs(x - y).mean(-1, keepdims=True)
  g = jax.grad(lambda s: Y.symmetry_nll(x, y, s, eps=0.0))(math.sqrt(2) * l1)
  np.testing.assert_allclose(g, 0.0, atol=1e-6)


def test_uncertainty_net_and_gradients():
  x, y, _ = _imgs(shape=(1, 40, 36, 3))
  net = Y.UncertaintyNet(width=4, work_size=16)
  v = jax.jit(net.init)(jax.random.PRNGKey(0), x)

  def loss(params, img):
    return Y.symmetry_nll(Y.mirror(img), y[:1], net.apply(params, Y.mirror(img)))

  sig = jax.jit(net.apply)(v, x)
  assert sig.shape == (1, 40, 36, 1) and float(sig.min()) > 0
  gp, gx = jax.jit(jax.grad(loss, argnums=(0, 1)))(v, x)
  assert all(np.all(np.isfinite(t)) for t in jax.tree_util.tree_leaves((gp, gx)))
  with jax.enable_x64(True):
    x64, y64, s64 = (jnp.asarray(t, jnp.float64) for t in _imgs())
    f = jax.jit(lambda a: Y.symmetry_nll(a, y64, s64) + Y.symmetry_loss(a, y64, s64, distance="smooth_l1"))
    d = jnp.asarray(np.random.default_rng(1).standard_normal(x64.shape))
    fd = (f(x64 + 1e-6 * d) - f(x64 - 1e-6 * d)) / 2e-6
    np.testing.assert_allclose(float(jnp.vdot(jax.jit(jax.grad(f))(x64), d)), float(fd), rtol=1e-5)


def test_symmetry_bad_input():
  x, y, s = _imgs()
  with pytest.raises(ValueError, match="sigma"):
    Y.symmetry_loss(x, y, s[..., 0])
  with pytest.raises(ValueError, match="same shape"):
    Y.symmetry_loss(x, y[:1], s)
  with pytest.raises(ValueError, match="distance"):
    Y.symmetry_loss(x, y, s, distance="huber")


def test_gan_losses():
  r = jnp.array([2.0, -1.0])
  f = jnp.array([0.5, -3.0])
  sig = jax.nn.sigmoid
  np.testing.assert_allclose(A.d_logistic_loss(r, f),
                             np.mean(-np.log(sig(r))) + np.mean(-np.log(1 - sig(f))), rtol=1e-6)
  np.testing.assert_allclose(A.g_nonsaturating_loss(f), np.mean(-np.log(sig(f))), rtol=1e-6)
  # R1 of a linear critic D(x) = <a, x> is |a|^2 for every sample.
  a = jnp.arange(6.0).reshape(2, 3)
  x = jnp.ones((4, 2, 3))
  np.testing.assert_allclose(A.r1_penalty(lambda t: jnp.sum(t * a, axis=(1, 2)), x), 55.0)
  # ... and of D(x) = sum x^2 it is mean_b 4|x_b|^2 (samples kept apart).
  x2 = jnp.stack([jnp.ones((2, 3)), 2 * jnp.ones((2, 3))])
  np.testing.assert_allclose(A.r1_penalty(lambda t: jnp.sum(t * t, axis=(1, 2)), x2),
                             np.mean([4 * 6, 4 * 24]), rtol=1e-6)


def test_smooth_l1_and_latent_regularisers():
  x = jnp.array([0.0, 0.5, 3.0])
  y = jnp.zeros(3)
  np.testing.assert_allclose(A.smooth_l1(x, y), np.mean([0, 0.125, 2.5]))
  np.testing.assert_allclose(A.smooth_l1(x, y, beta=0.0), np.mean([0, 0.5, 3.0]))
  ws = jnp.zeros((2, 3, 4)).at[0, 1, 0].set(3.0).at[0, 2, 1].set(4.0).at[1, 2, 2].set(2.0)
  # unit 1: norms (3, 0) -> mean 1.5; unit 2: norms (4, 2) -> mean 3.
  np.testing.assert_allclose(A.delta_w_plus_reg(ws), 4.5)
  g = jax.grad(A.delta_w_plus_reg)(jnp.zeros((2, 14, 8)))
  assert np.all(np.isfinite(g))
  w = jnp.ones((2, 14, 8))
  np.testing.assert_allclose(A.latent_regression_loss(w, 0 * w), 1.0)
  np.testing.assert_allclose(A.latent_regression_loss(w, 0 * w, reduction="sum"), 112.0)
  np.testing.assert_allclose(A.feature_delta_reg(w, w), 0.0)
  assert np.all(np.isfinite(jax.grad(A.feature_delta_reg)(w, w)))
  with pytest.raises(ValueError, match="rank|dimensions"):
    A.delta_w_plus_reg(jnp.zeros((2, 8)))
