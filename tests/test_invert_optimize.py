"""Optimisation baselines on the tiny EG3D (random weights, L2-only objectives: no LPIPS network):
W / W+ projection lower their objective (one compiled loop serves both), also through
``jaxinv.invert``. (PTI-vs-W+ and tri-plane L-BFGS tests are not committed yet: not verified.)
"""
import functools

import jax
import jax.numpy as jnp
import numpy as np

from _invert_helpers import setup as _setup
import jaxinv
from jaxinv.inversion import optimize as opt

K = 6


def _mse(G, ws, c, target):
  return np.asarray(jnp.mean(jnp.square(G.synthesis(ws, c)["image"] - target), axis=(1, 2, 3)))


PROJ = opt.ProjectOptions(steps=K, lr=0.003, num_w_samples=256, initial_noise_factor=0.0)


@functools.lru_cache(maxsize=None)
def _projections():
  G, c, target = _setup()
  out = {}
  for mode in ("w", "wplus"):
    out[mode] = opt.project(G, target, c, mode=mode, key=jax.random.PRNGKey(2), options=PROJ)
  return out


def test_w_and_wplus_lower_their_objective():
  G, c, target = _setup()
  w_avg, _ = opt.w_stats(G, c[:1], jax.random.split(jax.random.PRNGKey(2))[0], 256)
  start = _mse(G, jnp.broadcast_to(w_avg[:, None], (2, G.num_ws, 512)), c, target)
  for mode, (ws, curve) in _projections().items():
    assert ws.shape == (2, G.num_ws, 512) and curve.shape == (2, K, 3)
    assert np.all(np.isfinite(np.asarray(curve)))
    end = _mse(G, ws, c, target)
    assert np.all(end < start), (mode, start, end)
    if mode == "w":  # one code for every layer
      np.testing.assert_allclose(ws, jnp.broadcast_to(ws[:, :1], ws.shape), atol=1e-6)


def test_noise_regularization_prefers_white_noise():
  rng = np.random.default_rng(0)
  white = jnp.asarray(rng.standard_normal((16, 16)), jnp.float32)
  smooth = jnp.asarray(np.cumsum(rng.standard_normal((16, 16)), axis=1) / 4, jnp.float32)
  assert opt.noise_regularization([smooth]) > 10 * opt.noise_regularization([white])
  assert float(opt.lr_ramp(0.5, 0.25, 0.05)) == 1.0 and float(opt.lr_ramp(0.0, 0.25, 0.05)) == 0.0


def test_w_and_wplus_through_invert():
  G, c, target = _setup()
  for mode in ("w", "wplus"):
    inv = jaxinv.invert(target, c, method=mode, weights={"generator": G}, key=jax.random.PRNGKey(2),
                        steps=K, lr=PROJ.lr, num_w_samples=256, initial_noise_factor=0.0)
    # invert splits its key: the projection gets the first half.
    ws, _ = opt.project(G, target, c, mode=mode, key=jax.random.split(jax.random.PRNGKey(2))[0],
                        options=PROJ)
    np.testing.assert_allclose(inv.ws, ws, atol=1e-5)
    assert inv.extra["loss"].shape == (2, K) and inv.extra["lpips"] is False




