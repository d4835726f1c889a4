"""The assembled generator G against fixtures/eg3d: synthesis, recorded draws, SR-native quirk, G(z, c).

Tolerances: README §6 suggests atol 1e-4 for image/image_raw/feature_image/weights_sum. Our
tri-planes agree with the official ones to 2e-5 (float32 rounding of a different convolution
order; the SR alone agrees to 1e-4, see test_eg3d_nets.py). The fixtures' density calibration
(raw density std 6) amplifies that plane difference 10-40x in the composited rays, measured
max |diff| 1.3e-4 (0.5 draws), 3e-4 (R=64), 5.7e-4 (recorded draws, whose inverse-CDF samples are
steep in the weights). We therefore bound the max at 1e-3 and the *mean* at 3e-5 (measured up to 1.03e-5 with recorded draws), which still
fails on any real bug (a wrong sample, axis or gain moves thousands of pixels by >1e-2).
"""
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from conftest import eg3d_fixture, nchw_to_nhwc
from jaxinv.convert import eg3d as eg3d_convert
from jaxinv.models.eg3d import tiny_eg3d

MAX_ATOL = 1e-3
MEAN_ATOL = 3e-5


@functools.lru_cache(maxsize=None)
def fixture_generator(name: str):
  cfg, sd, stages = eg3d_fixture(name)
  kwargs = dict(cfg["constructor_kwargs"], neural_rendering_resolution=cfg["neural_rendering_resolution"])
  return eg3d_convert.from_state_dict(sd, kwargs), stages, cfg


def half_draws(b, r, cfg):
  rk = cfg["constructor_kwargs"]["rendering_kwargs"]
  return {"u_stratified": np.full((b, r * r, rk["depth_resolution"]), 0.5, np.float32),
          "u_importance": np.full((b, r * r, rk["depth_resolution_importance"]), 0.5, np.float32)}


def assert_image_close(actual, expected, name):
  a = np.asarray(actual, np.float64)
  e = np.asarray(expected, np.float64)
  assert a.shape == e.shape, f"{name}: {a.shape} != {e.shape}"
  err = np.abs(a - e)
  assert err.max() <= MAX_ATOL, f"{name}: max |diff| {err.max():.3g}"
  assert err.mean() <= MEAN_ATOL, f"{name}: mean |diff| {err.mean():.3g}"


def assert_depth_close(depth, ref, wsum_ref, name):
  """README §6: depth is ill-conditioned where the weight sum is tiny (2e-3 overall). On rays with
  weights_sum > 1e-2 we measured up to 2.4e-4 (sr_native), from the same plane-rounding amplification."""
  err = np.abs(np.asarray(depth, np.float64) - ref)
  mask = wsum_ref.reshape(err.shape) > 1e-2
  assert err[mask].max() <= 1e-3, f"{name}: max |diff| on opaque rays {err[mask].max():.3g}"
  assert err.max() <= 2e-3, f"{name}: max |diff| {err.max():.3g}"


def check_outputs(out, st, stage, b, r):
  for k in ("image", "image_raw", "feature_image"):
    if f"{stage}.{k}" in st:
      assert_image_close(out[k], nchw_to_nhwc(st[f"{stage}.{k}"]), f"{stage}.{k}")
  wref = st.get(f"{stage}.weights_sum", st.get("synthesis.weights_sum"))
  if f"{stage}.weights_sum" in st:
    assert_image_close(np.asarray(out["weights_sum"]).reshape(b, r * r, 1), wref, f"{stage}.weights_sum")
  assert_depth_close(out["image_depth"], nchw_to_nhwc(st[f"{stage}.image_depth"]),
                     nchw_to_nhwc(np.asarray(out["weights_sum"]).reshape(b, r, r, 1).transpose(0, 3, 1, 2)),
                     f"{stage}.image_depth")


def test_synthesis_half_draws_tiny():
  G, st, cfg = fixture_generator("tiny")
  r = int(st["synthesis.neural_rendering_resolution"])
  out = G.synthesis(st["synthesis.ws"], st["synthesis.c"], draws=half_draws(2, r, cfg),
                    neural_rendering_resolution=r)
  check_outputs(out, st, "synthesis", 2, r)
  # R=32 resizes before the SR: image_raw is the plain feature image (no quirk).
  np.testing.assert_array_equal(np.asarray(out["image_raw"]), np.asarray(out["feature_image"][..., :3]))


def test_synthesis_recorded_draws_tiny():
  G, st, _ = fixture_generator("tiny")
  draws = {"u_stratified": st["synthesis_randdraws.u_stratified"][..., 0],
           "u_importance": st["synthesis_randdraws.u_importance"]}  # stored [B*R*R, Ni]
  out = G.synthesis(st["synthesis.ws"], st["synthesis.c"], draws=draws)
  check_outputs(out, st, "synthesis_randdraws", 2, 32)


def test_synthesis_sr_native_inplace_quirk_and_switch():
  G, st, cfg = fixture_generator("tiny")
  r = int(st["synthesis_sr_native.neural_rendering_resolution"])
  assert r == 64
  out = G.synthesis(st["synthesis.ws"], st["synthesis.c"], draws=half_draws(2, r, cfg),
                    neural_rendering_resolution=r)
  check_outputs(out, st, "synthesis_sr_native", 2, r)
  raw_quirk = np.asarray(out["image_raw"])
  feat = np.asarray(out["feature_image"][..., :3])
  assert np.abs(raw_quirk - feat).max() > 0.5  # the quirk is visible (fixture: up to 1.8)
  off = G.replace(inplace_image_raw=False).synthesis(
      st["synthesis.ws"], st["synthesis.c"], draws=half_draws(2, r, cfg), neural_rendering_resolution=r)
  np.testing.assert_array_equal(np.asarray(off["image_raw"]), feat)
  np.testing.assert_array_equal(np.asarray(off["image"]), np.asarray(out["image"]))


def test_G_forward_tiny():
  G, st, cfg = fixture_generator("tiny")
  r = int(st["G_forward.neural_rendering_resolution"])
  out = G(st["G_forward.z"], st["G_forward.c"], truncation_psi=float(st["G_forward.truncation_psi"]),
          truncation_cutoff=int(st["G_forward.truncation_cutoff"]), draws=half_draws(2, r, cfg),
          neural_rendering_resolution=r)
  for k in ("image", "image_raw"):
    assert_image_close(out[k], nchw_to_nhwc(st[f"G_forward.{k}"]), f"G_forward.{k}")
  assert np.abs(np.asarray(out["image_depth"]) - nchw_to_nhwc(st["G_forward.image_depth"])).max() <= 2e-3
  assert out["image"].shape == (2, 128, 128, 3) and out["feature_image"].shape == (2, r, r, 32)
  assert out["weights_sum"].shape == (2, r, r, 1)


@pytest.mark.slow
def test_G_forward_ffhq512_slim():
  G, st, cfg = fixture_generator("ffhq512_slim")
  r = int(st["G_forward.neural_rendering_resolution"])
  out = G(st["G_forward.z"], st["G_forward.c"], truncation_psi=float(st["G_forward.truncation_psi"]),
          truncation_cutoff=int(st["G_forward.truncation_cutoff"]), draws=half_draws(2, r, cfg))
  # Measured: image 8.8e-6, image_raw 4.8e-6, depth 1e-3 (only on near-empty rays).
  for k in ("image", "image_raw"):
    np.testing.assert_allclose(np.asarray(out[k]), nchw_to_nhwc(st[f"G_forward.{k}"]), atol=1e-4, rtol=0)
  np.testing.assert_allclose(np.asarray(out["image_depth"]), nchw_to_nhwc(st["G_forward.image_depth"]),
                             atol=2e-3, rtol=0)


def test_deterministic_default_and_key():
  G, st, _ = fixture_generator("tiny")
  ws, c = st["synthesis.ws"], st["synthesis.c"]
  a = G.synthesis(ws, c)
  b = G.synthesis(ws, c)
  np.testing.assert_array_equal(np.asarray(a["image"]), np.asarray(b["image"]))
  k1 = G.synthesis(ws, c, key=jax.random.PRNGKey(1))
  k1b = G.synthesis(ws, c, key=jax.random.PRNGKey(1))
  k2 = G.synthesis(ws, c, key=jax.random.PRNGKey(2))
  np.testing.assert_array_equal(np.asarray(k1["image"]), np.asarray(k1b["image"]))
  assert np.abs(np.asarray(k1["image"]) - np.asarray(k2["image"])).max() > 1e-4


def test_jit_equals_eager_and_render_planes():
  G, st, _ = fixture_generator("tiny")
  ws, c = st["synthesis.ws"], st["synthesis.c"]
  jitted = np.asarray(G.mapping(st["mapping.z"], c, truncation_psi=0.7))
  with jax.disable_jit():
    eager = np.asarray(G.mapping(st["mapping.z"], c, truncation_psi=0.7))
  np.testing.assert_allclose(jitted, eager, atol=1e-6)
  planes = G.planes(ws)
  out_a = G.synthesis(ws, c)
  out_b = G.render_planes(planes, ws, c)
  np.testing.assert_allclose(np.asarray(out_a["image"]), np.asarray(out_b["image"]), atol=1e-6)


def test_G_is_a_pytree_and_grads_are_finite():
  G = tiny_eg3d(seed=0, neural_rendering_resolution=16)
  c = np.tile(eg3d_fixture("tiny")[2]["camera.c"][:1], (1, 1))
  z = np.random.default_rng(0).standard_normal((1, 64)).astype(np.float32)
  ws = G.mapping(z, c)
  leaves = jax.tree_util.tree_leaves(G)
  assert len(leaves) == len(jax.tree_util.tree_leaves(G.params))
  g_ws = jax.grad(lambda w: jnp.mean(G.planes(w) ** 2))(ws)
  assert np.all(np.isfinite(np.asarray(g_ws))) and np.abs(np.asarray(g_ws)).max() > 0
  planes = G.planes(ws)
  g_planes = jax.grad(lambda p: jnp.mean(G.render_planes(p, ws, c)["image"]))(planes)
  assert np.all(np.isfinite(np.asarray(g_planes))) and np.abs(np.asarray(g_planes)).max() > 0


def test_noise_modes():
  G, st, _ = fixture_generator("tiny")
  ws = st["backbone.ws"]
  const = np.asarray(G.planes(ws))
  none = np.asarray(G.planes(ws, noise_mode="none"))
  rand = np.asarray(G.planes(ws, noise_mode="random", key=jax.random.PRNGKey(0)))
  assert np.abs(const - none).max() > 1e-3 and np.abs(const - rand).max() > 1e-3
  with pytest.raises(ValueError, match="needs a key"):
    G.planes(ws, noise_mode="random")
  with pytest.raises(ValueError, match="noise_mode"):
    G.planes(ws, noise_mode="sometimes")


def test_input_validation():
  G, st, _ = fixture_generator("tiny")
  z, c = st["mapping.z"], st["mapping.c"]
  with pytest.raises(ValueError, match="z"):
    G.mapping(z[:, :10], c)
  with pytest.raises(ValueError, match="25"):
    G.mapping(z, c[:, :16])
  with pytest.raises(TypeError, match="floating"):
    G.mapping(z.astype(np.int32), c)
  bad = z.copy()
  bad[0, 0] = np.nan
  with pytest.raises(ValueError, match="NaN"):
    G.mapping(bad, c)
  with pytest.raises(ValueError, match="batch"):
    G.mapping(z, c[:1])
  with pytest.raises(ValueError, match="ws"):
    G.synthesis(st["synthesis.ws"][:, :5], c)
  with pytest.raises(ValueError, match="neural_rendering_resolution"):
    G.synthesis(st["synthesis.ws"], c, neural_rendering_resolution=0)
  from jaxinv.models.eg3d import EG3DConfig
  with pytest.raises(ValueError, match="unknown superresolution module"):
    G.config.replace(superresolution_module="training.superresolution.Bogus")
  with pytest.raises(ValueError, match="unknown key"):
    EG3DConfig.from_init_kwargs(dict(G.config.to_init_kwargs(), mystery=1))
