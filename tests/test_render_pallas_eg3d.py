"""``G.replace(render_kernel="pallas")`` against ``"xla"`` and the official fixtures (interpret mode).

The fixture generator is shared with test_eg3d_generator.py (same lru_cache when both modules run in
one process). Tolerances: the fixture checks are test_eg3d_generator's own (``check_outputs``); the
Pallas path against the XLA path on the same generator is bounded by 2e-4 max (measured ~2e-5: both
walk the same samples; float32 rounding of the decoder's sums moves the coarse weights, which the
steep inverse-CDF importance sampling amplifies) and 1e-5 mean.
"""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from test_eg3d_generator import check_outputs, fixture_generator, half_draws

MAX_ATOL = 2e-4
MEAN_ATOL = 1e-5


def _close(a, b, name, max_atol=MAX_ATOL, mean_atol=MEAN_ATOL):
  a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
  assert a.shape == b.shape, name
  err = np.abs(a - b)
  assert err.max() <= max_atol and err.mean() <= mean_atol, (name, err.max(), err.mean())


def _pallas_calls(fn, *args):
  return str(jax.make_jaxpr(fn)(*args)).count("pallas_call")


def test_G_pallas_synthesis_matches_fixture_and_xla():
  G, st, cfg = fixture_generator("tiny")
  r = int(st["synthesis.neural_rendering_resolution"])
  ws, c = st["synthesis.ws"], st["synthesis.c"]
  gp, gx = G.replace(render_kernel="pallas"), G.replace(render_kernel="xla")
  for draws, stage in ((half_draws(2, r, cfg), "synthesis"),
                       ({"u_stratified": st["synthesis_randdraws.u_stratified"][..., 0],
                         "u_importance": st["synthesis_randdraws.u_importance"]},
                        "synthesis_randdraws")):
    out = gp.synthesis(ws, c, draws=draws, neural_rendering_resolution=r)
    check_outputs(out, st, stage, 2, r)
    ref = gx.synthesis(ws, c, draws=draws, neural_rendering_resolution=r)
    for k in ("image", "image_raw", "feature_image", "weights_sum"):
      _close(out[k], ref[k], f"{stage}.{k}")
    wsum = np.asarray(ref["weights_sum"])
    opaque = wsum > 1e-2
    _close(np.asarray(out["image_depth"])[opaque], np.asarray(ref["image_depth"])[opaque],
           f"{stage}.image_depth", 1e-3, 1e-4)


def test_every_G_entry_point_reaches_the_kernel():
  """G(z, c), G.synthesis and G.render_planes (so GOAE, TriPlaneNet, PTI, training) trace the
  kernel with render_kernel='pallas' (coarse + final pass) and never with 'xla' (or 'auto' on CPU)."""
  G, st, _ = fixture_generator("tiny")
  z, c, ws = st["mapping.z"][:1], st["synthesis.c"][:1], st["synthesis.ws"][:1]
  planes = jnp.zeros((1, 3, 256, 256, 32))
  # Every array is an argument (traced), as inside a user's jitted step.
  entries = (lambda g, z, c, ws, p: g(z, c, neural_rendering_resolution=4),
             lambda g, z, c, ws, p: g.synthesis(ws, c, neural_rendering_resolution=4),
             lambda g, z, c, ws, p: g.render_planes(p, ws, c, neural_rendering_resolution=4))
  expected_auto = 2 if jax.default_backend() == "gpu" else 0
  for entry in entries:
    for kernel, expected in (("pallas", 2), ("xla", 0), ("auto", expected_auto)):
      assert _pallas_calls(entry, G.replace(render_kernel=kernel), z, c, ws, planes) == expected
  with pytest.raises(ValueError, match="render_kernel"):
    G.replace(render_kernel="triton")


@pytest.mark.slow
def test_G_pallas_gradients_wrt_ws_equal_xla():
  G, st, _ = fixture_generator("tiny")
  ws, c = jnp.asarray(st["synthesis.ws"]), st["synthesis.c"]
  r = 8
  cot = jnp.asarray(np.random.default_rng(0).normal(size=(2, r, r, 32)), jnp.float32)

  def grad_fn(g):
    def loss(w):
      out = g.synthesis(w, c, neural_rendering_resolution=r)
      return jnp.sum(out["feature_image"] * cot) + jnp.sum(out["weights_sum"])
    return jax.grad(loss)(ws)

  gp = np.asarray(grad_fn(G.replace(render_kernel="pallas")))
  gx = np.asarray(grad_fn(G.replace(render_kernel="xla")))
  assert np.all(np.isfinite(gp)) and np.abs(gx).max() > 0
  np.testing.assert_allclose(gp, gx, atol=1e-4 * np.abs(gx).max(), rtol=0)
