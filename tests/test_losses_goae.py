"""GOAE's loss terms (jaxinv.losses.goae) against values computed by hand on small cases."""
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxinv.losses import goae as L


def softplus(x):
  return math.log1p(math.exp(x))


A = jnp.array([0.5, -1.0])


def linear_d(w):  # D(w) = a . w + 1/4: dD/dw = a for every sample
  return w @ A + 0.25


def quadratic_d(w):  # D(w) = |w|^2 / 2: dD/dw = w
  return 0.5 * jnp.sum(w * w, axis=-1)


REAL = jnp.array([[1.0, 0.0], [0.0, 1.0]])          # logits 0.75, -0.75
FAKE = jnp.array([[[2.0, 2.0], [0.0, 0.0]]])        # entries' logits -0.75, 0.25


def test_latent_d_loss_every_entry_is_a_fake_sample():
  want = (softplus(-0.75) + softplus(0.75)) / 2 + (softplus(-0.75) + softplus(0.25)) / 2
  np.testing.assert_allclose(L.latent_d_loss(linear_d, REAL, FAKE), want, rtol=1e-6)
  assert L.latent_entries(jnp.zeros((3, 14, 8))).shape == (42, 8)


def test_latent_d_r1_is_the_squared_gradient_norm():
  # linear D: |a|^2 = 1.25 for every real sample; gamma / 2 * 1.25 with gamma = 10.
  np.testing.assert_allclose(L.latent_d_r1(linear_d, REAL), 6.25, rtol=1e-6)
  # quadratic D: per-sample gradients w: (|(1,0)|^2 + |(0,2)|^2) / 2 = 2.5 -> 12.5.
  real = jnp.array([[1.0, 0.0], [0.0, 2.0]])
  np.testing.assert_allclose(L.latent_d_r1(quadratic_d, real), 12.5, rtol=1e-6)
  np.testing.assert_allclose(L.latent_d_r1(quadratic_d, real, gamma=2.0), 2.5, rtol=1e-6)
  want = (softplus(-0.75) + softplus(0.75)) / 2 + (softplus(-0.75) + softplus(0.25)) / 2 + 6.25
  np.testing.assert_allclose(L.latent_d_loss_with_r1(linear_d, REAL, FAKE), want, rtol=1e-6)


def test_latent_d_gradient_in_its_parameters():
  # d/db of eq. 2 (no R1) for D = a.w + b: mean(-sigmoid(-real)) + mean(sigmoid(fake)).
  def loss(b):
    return L.latent_d_loss(lambda w: w @ A + b, REAL, FAKE)
  sig = lambda x: 1 / (1 + math.exp(-x))
  want = -(sig(-0.75) + sig(0.75)) / 2 + (sig(-0.75) + sig(0.25)) / 2
  np.testing.assert_allclose(jax.grad(loss)(0.25), want, rtol=1e-5)


def test_encoder_adv_loss():
  np.testing.assert_allclose(L.encoder_adv_loss(linear_d, FAKE),
                             (softplus(0.75) + softplus(-0.25)) / 2, rtol=1e-6)


DEPTH = jnp.array([[[2.0, 3.0], [2.5, 3.5]], [[3.2, 3.2], [1.0, 3.2]]])[..., None]
WSUM = jnp.array([[[0.9, 0.1], [0.8, 0.2]], [[0.3, 0.3], [0.9, 0.4]]])[..., None]


def test_background_mask_from_opacity():
  m = L.background_mask(WSUM, 0.5)
  np.testing.assert_array_equal(m[..., 0], [[[0, 1], [0, 1]], [[1, 1], [0, 1]]])
  g = jax.grad(lambda w: jnp.sum(L.background_mask(w)))(WSUM)
  np.testing.assert_array_equal(g, 0)


def test_background_depth_loss_by_hand():
  m = L.background_mask(WSUM, 0.5)
  # sample 0: background residuals 3.0 - 3.2, 3.5 - 3.2 -> sqrt(0.13); sample 1: all zero.
  np.testing.assert_allclose(L.background_depth_loss(DEPTH, m, 3.2), math.sqrt(0.13) / 2,
                             rtol=1e-5)
  np.testing.assert_allclose(L.background_depth_loss(DEPTH, m, 3.2, squared=True),
                             0.13 / 8, rtol=1e-5)
  # Gradient only on background pixels: r / |r| for sample 0 (halved by the batch mean), and a
  # zero (not NaN) gradient for sample 1 whose residual vanishes.
  g = np.asarray(jax.grad(lambda d: L.background_depth_loss(d, m, 3.2))(DEPTH))[..., 0]
  n = math.sqrt(0.13)
  np.testing.assert_allclose(g[0], [[0, -0.2 / n / 2], [0, 0.3 / n / 2]], rtol=1e-5, atol=1e-7)
  np.testing.assert_array_equal(g[1], 0)
  s, cnt = L.background_depth_sums(DEPTH, m)
  np.testing.assert_allclose(s / cnt, (3.0 + 3.5 + 3.2 * 3) / 5, rtol=1e-6)


def test_w_plus_delta_and_feature_delta_by_hand():
  ws = jnp.array([[[0.0, 0.0], [3.0, 4.0], [1.0, 0.0]]])
  np.testing.assert_allclose(L.w_plus_delta_loss(ws), 6.0, rtol=1e-6)
  f_old = jnp.zeros((2, 1, 1, 2))
  f_new = jnp.array([[[[3.0, 4.0]]], [[[0.0, 0.0]]]])
  np.testing.assert_allclose(L.feature_delta_loss(f_new, f_old), 2.5, rtol=1e-6)
  g = jax.grad(lambda f: L.feature_delta_loss(f, f_old))(f_new)
  np.testing.assert_allclose(g[0, 0, 0], [0.3, 0.4], rtol=1e-5)
  np.testing.assert_array_equal(g[1], 0)


def test_shape_errors_are_clear():
  with pytest.raises(ValueError, match="real_w"):
    L.latent_d_loss(linear_d, jnp.zeros((2, 1, 2)), FAKE)
  with pytest.raises(ValueError, match="depth"):
    L.background_depth_loss(jnp.zeros((2, 2)), jnp.zeros((2, 2)), 1.0)
