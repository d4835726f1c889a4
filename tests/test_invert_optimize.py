"""Optimisation baselines on the tiny EG3D (random weights, L2-only objectives: no LPIPS network):
W / W+ projection lower their objective (one compiled loop serves both), also through
``jaxinv.invert``; on a target G cannot reproduce, PTI (through ``jaxinv.invert``, release
defaults but the step counts) beats W+ at the input view on the same step budget, and tri-plane
L-BFGS beats its starting point. Both start from one shared W+ pivot, so each compiles once.
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


@functools.lru_cache(maxsize=None)
def _pivot():
  """K W+ steps on the out-of-range target: the shared starting codes."""
  G, c, target = _out_of_range_target()
  return opt.project(G, target, c, mode="wplus", key=jax.random.PRNGKey(3), options=PROJ)[0]


def test_pti_beats_wplus_on_the_same_budget():
  G, c, target = _out_of_range_target()
  pivot = _pivot()
  # W+ gets K more steps from the pivot (the same compiled loop); PTI K tuning steps of G.
  more, _ = opt.project(G, target, c, mode="wplus", key=jax.random.PRNGKey(3), w_init=pivot,
                        options=PROJ)
  inv = jaxinv.invert(target, c, method="pti", weights={"generator": G}, key=jax.random.PRNGKey(4),
                      pivot=pivot, steps=K)
  curve = np.asarray(inv.extra["loss"])
  assert curve.shape == (K,) and np.all(np.isfinite(curve)) and inv.extra["lpips"] is False
  np.testing.assert_array_equal(np.asarray(inv.ws), np.asarray(pivot))  # PTI keeps its pivot
  wplus_err, pti_err = _mse(G, more, c, target), _mse(inv.G, inv.ws, c, target)
  assert np.all(pti_err < wplus_err), (pti_err, wplus_err)
  # The mapping network is frozen; the synthesis network moved.
  same = jax.tree_util.tree_map(lambda a, b: bool(jnp.array_equal(a, b)), G.params, inv.G.params)
  flat = jax.tree_util.tree_flatten_with_path(same)[0]
  assert all(v for p, v in flat if "mapping" in jax.tree_util.keystr(p))
  assert not all(v for p, v in flat if "mapping" not in jax.tree_util.keystr(p))


def test_triplane_opt_beats_its_starting_point():
  G, c, target = _out_of_range_target()
  ws = _pivot()
  inv = jaxinv.invert(target, c, method="triplane_opt", weights={"generator": G}, start=ws,
                      steps=3, max_linesearch_steps=4, linesearch="backtracking")
  curve = np.asarray(inv.extra["loss"])
  assert curve.shape == (2, 4) and np.all(np.isfinite(curve))
  assert np.all(curve[:, -1] < curve[:, 0]), curve
  start = _mse(G, ws, c, target)
  planes = G.planes(ws) + inv.offsets
  end = np.asarray(jnp.mean(jnp.square(G.render_planes(planes, ws, c)["image"] - target),
                            axis=(1, 2, 3)))
  assert np.all(end < start), (start, end)


def test_baselines_from_one_uint8_image():
  """Every baseline takes one ``[H, W, 3]`` uint8 photo and its ``[25]`` camera (a batch of
  one), and the uint8 image gives what its float form ``x / 127.5 - 1`` gives."""
  G, c, target = _setup()
  u8 = np.asarray(np.clip(np.rint((np.asarray(target[0]) + 1) * 127.5), 0, 255), np.uint8)
  as_float = jnp.asarray(u8, jnp.float32) / 127.5 - 1.0
  w = {"generator": G}
  key = jax.random.PRNGKey(5)
  few = dict(steps=2, num_w_samples=64)
  for method, opts in (("w", few), ("wplus", few), ("pti", dict(few, pivot_steps=2)),
                       ("triplane_opt", dict(steps=1, max_linesearch_steps=2, start_steps=2,
                                             num_w_samples=64, linesearch="backtracking"))):
    inv = jaxinv.invert(u8, c[0], method=method, weights=w, key=key, **opts)
    assert inv.ws.shape == (1, G.num_ws, 512) and inv.c.shape == (1, 25), method
    assert np.all(np.isfinite(np.asarray(inv.extra["loss"]))), method
    if method == "w":
      ref = jaxinv.invert(as_float, c[0], method=method, weights=w, key=key, **opts)
      np.testing.assert_allclose(inv.ws, ref.ws, atol=1e-6)
