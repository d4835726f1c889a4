"""Optimisation baselines on the tiny EG3D (random weights, L2-only objectives: no LPIPS network):
W / W+ projection lower their objective (one compiled loop serves both), also through
``jaxinv.invert``; tri-plane L-BFGS beats its starting point. (PTI-beats-W+ is not tested yet: its
compiled tuning loop alone takes minutes here.)
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






def _out_of_range_target():
  """G's render blended with a fixed high-frequency pattern: no code of G reproduces it, so
  the tri-plane offsets have something to win over the codes alone."""
  G, c, target = _setup()
  yy, xx = np.meshgrid(np.arange(target.shape[1]), np.arange(target.shape[2]), indexing="ij")
  pattern = np.sign(np.sin(xx / 3.0) * np.sin(yy / 5.0))[None, :, :, None] * np.array([1, -1, 0.5])
  return G, c, jnp.clip(0.6 * target + 0.4 * jnp.asarray(pattern, jnp.float32), -1, 1)


def test_triplane_opt_beats_its_starting_point():
  G, c, target = _out_of_range_target()
  ws, _ = opt.project(G, target, c, mode="wplus", key=jax.random.PRNGKey(3), options=PROJ)
  offsets, curve = opt.triplane_optimize(
      G, target, c, ws, options=opt.TriPlaneOptOptions(steps=3, max_linesearch_steps=4,
                                                       linesearch="backtracking"))
  curve = np.asarray(curve)
  assert curve.shape == (2, 4) and np.all(np.isfinite(curve))
  assert np.all(curve[:, -1] < curve[:, 0]), curve
  start = _mse(G, ws, c, target)
  planes = G.planes(ws) + offsets
  end = np.asarray(jnp.mean(jnp.square(G.render_planes(planes, ws, c)["image"] - target),
                            axis=(1, 2, 3)))
  assert np.all(end < start), (start, end)
