"""Renderer properties that need no fixture: compositing identities, symmetry, determinism, grads."""
import functools
import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxinv.nn.decoder import OSGDecoder
from jaxinv.render import camera, marcher, rays, renderer, sampling
from jaxinv.render.options import RenderOptions

TINY = RenderOptions(depth_resolution=8, depth_resolution_importance=8)
R = 8


@functools.lru_cache(maxsize=None)
def _scene(symmetric: bool = False, seed: int = 0):
  """Random planes [1, 3, 16, 16, 8] (optionally mirror-symmetric in x) and a decoder."""
  k1, k2 = jax.random.split(jax.random.PRNGKey(seed))
  planes = jax.random.normal(k1, (1, 3, 16, 16, 8)) * 2
  if symmetric:
    # x is grid-x (W) on planes 0 (XY) and 1 (XZ), and grid-y (H) on plane 2 (ZX).
    p01 = (planes[:, :2] + planes[:, :2, :, ::-1]) / 2
    p2 = (planes[:, 2:] + planes[:, 2:, ::-1, :]) / 2
    planes = jnp.concatenate([p01, p2], axis=1)
  dec = OSGDecoder(output_dim=4)
  params = dec.init(k2, jnp.zeros((1, 3, 2, 8)))
  # Denser than at init so the renders have opaque and empty regions.
  net2 = params["params"]["net_2"]
  net2["weight"] = net2["weight"].at[:, 0].multiply(16.0)
  net2["bias"] = net2["bias"].at[0].set(1.0)
  return planes, params


def _render(planes, params, c, options=TINY, **kw):
  o, d = rays.rays_from_label(c, R)
  return renderer.render(planes, functools.partial(OSGDecoder(output_dim=4).apply, params), o, d,
                         options, **kw)


@functools.lru_cache(maxsize=None)
def _jit_render():
  return jax.jit(_render, static_argnames=("options", "ray_chunk"))


def test_weights_sum_at_most_one_and_nonnegative():
  key = jax.random.PRNGKey(1)
  dens = jax.random.normal(key, (2, 16, 20, 1)) * 30
  depths = jnp.sort(jax.random.uniform(key, (2, 16, 20, 1)) * 3, axis=2)
  cols = jax.random.uniform(key, (2, 16, 20, 3))
  _, _, w = marcher.ray_march(cols, dens, depths)
  total = np.asarray(jnp.sum(w, axis=2))
  assert np.all(np.asarray(w) >= 0) and np.all(total <= 1 + 1e-6)


@pytest.mark.parametrize("raw_sigma", [-1.0, 0.5, 3.0])
def test_constant_density_matches_closed_form(raw_sigma):
  # Constant density s along [t0, t1]: opacity 1 - exp(-s (t1 - t0)), expected depth
  # sum over intervals of w_i * midpoint_i / total.
  depths = jnp.sort(jax.random.uniform(jax.random.PRNGKey(3), (1, 4, 30, 1)) * 2 + 1, axis=2)
  dens = jnp.full(depths.shape, raw_sigma)
  cols = jnp.ones(depths.shape[:-1] + (3,))
  rgb, _, w = marcher.ray_march(cols, dens, depths)
  s = np.log1p(np.exp(raw_sigma - 1))
  d = np.asarray(depths, np.float64)[..., 0]
  expected_total = 1 - np.exp(-s * (d[..., -1] - d[..., 0]))
  np.testing.assert_allclose(np.asarray(w).sum(axis=(2, 3)), expected_total, atol=1e-5)
  np.testing.assert_allclose(np.asarray(rgb)[..., 0], 2 * expected_total - 1, atol=2e-5)
  # Per-interval: w_i = T(t_i) - T(t_{i+1}) with T(t) = exp(-s (t - t0)).
  trans = np.exp(-s * (d - d[..., :1]))
  np.testing.assert_allclose(np.asarray(w)[..., 0], trans[..., :-1] - trans[..., 1:], atol=1e-5)


def test_white_back_adds_missing_weight():
  depths = jnp.broadcast_to(jnp.linspace(2.0, 3.0, 10)[None, None, :, None], (1, 2, 10, 1))
  dens = jnp.full(depths.shape, -2.0)
  cols = jnp.zeros(depths.shape[:-1] + (3,))
  rgb_black, _, w = marcher.ray_march(cols, dens, depths)
  rgb_white, _, _ = marcher.ray_march(cols, dens, depths, white_back=True)
  total = np.asarray(jnp.sum(w, axis=2))
  np.testing.assert_allclose(np.asarray(rgb_white - rgb_black), 2 * (1 - total) * np.ones((1, 2, 3)),
                             atol=1e-6)


def test_depth_clamp_is_global_and_gradient_finite():
  depths = jnp.stack([jnp.linspace(2.0, 2.5, 6), jnp.linspace(2.5, 3.5, 6)])[None, :, :, None]
  dens = jnp.stack([jnp.full((6,), -300.0), jnp.full((6,), 2.0)])[None, :, :, None]
  cols = jnp.zeros((1, 2, 6, 3))
  _, depth, _ = marcher.ray_march(cols, dens, depths)
  assert float(depth[0, 0, 0]) == 3.5  # the empty ray gets the maximum of *all* depths
  g = jax.grad(lambda s: jnp.sum(marcher.ray_march(cols, s, depths)[1]))(dens)
  assert np.all(np.isfinite(np.asarray(g)))


def test_stratified_and_disparity_depths():
  d = sampling.stratified_depths(1, 2, 2.0, 4.0, 5)
  np.testing.assert_allclose(np.asarray(d)[0, 0, :, 0], [2.25, 2.75, 3.25, 3.75, 4.25], atol=1e-6)
  u = jnp.zeros((1, 2, 5))
  d = sampling.stratified_depths(1, 2, 2.0, 4.0, 5, u, disparity_space_sampling=True)
  t = np.linspace(0, 1, 5)
  np.testing.assert_allclose(np.asarray(d)[0, 0, :, 0], 1 / ((1 - t) / 2.0 + t / 4.0), rtol=1e-6)


def test_sample_pdf_follows_the_pdf():
  # All weight in one bin: every sample must land inside that bin.
  bins = jnp.broadcast_to(jnp.linspace(0.0, 1.0, 12), (3, 12))
  weights = jnp.zeros((3, 10)).at[:, 4].set(1.0)
  u = jax.random.uniform(jax.random.PRNGKey(0), (3, 64))
  s = np.asarray(sampling.sample_pdf(bins, weights, u))
  lo, hi = float(bins[0, 4]), float(bins[0, 5])
  inside = (s >= lo - 1e-4) & (s <= hi + 1e-4)
  assert inside.mean() > 0.99


def test_ray_box_limits_hit_the_cube():
  c = camera.Camera.look_at(0.3, -0.2).label
  o, d = rays.rays_from_label(c, 8)
  start, end = sampling.ray_box_limits(o, d, 1.0)
  p_in = o + d * (start + 1e-4)
  p_out = o + d * (end - 1e-4)
  assert np.all(np.asarray(end > start))
  assert np.all(np.abs(np.asarray(p_in)) <= 0.5 + 1e-3) and np.all(np.abs(np.asarray(p_out)) <= 0.5 + 1e-3)


def test_render_shapes_jit_equals_eager_and_chunking_is_exact_to_ulps():
  planes, params = _scene()
  c = camera.Camera.look_at([0.2, -0.3], [0.1, 0.0]).label
  planes = jnp.concatenate([planes, planes[:, ::-1]], axis=0)
  eager = _render(planes, params, c, ray_chunk=None)
  assert [x.shape for x in eager] == [(2, R * R, 4), (2, R * R, 1), (2, R * R, 1)]
  jitted = _jit_render()(planes, params, c, ray_chunk=None)
  chunked = _jit_render()(planes, params, c, ray_chunk=16)
  # jit may fuse (FMA) differently from op-by-op eager; the dense test scene amplifies 1-ulp
  # differences in sample positions to ~1e-5.
  # Chunking runs the same ops on fewer rays at a time; only XLA's tiling differs, so compiled
  # chunked == compiled unchunked to a few float32 ulps (measured 4.8e-7 on values up to 3.3).
  for a, b, cc in zip(eager, jitted, chunked):
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=1e-4)
    np.testing.assert_allclose(np.asarray(b), np.asarray(cc), rtol=1e-6, atol=2e-6)
  wsum = np.asarray(eager[2])
  assert wsum.min() < 0.5 < wsum.max() <= 1 + 1e-6  # the scene has empty and opaque rays


def test_key_draws_and_deterministic_mode():
  planes, params = _scene()
  c = camera.Camera.look_at(0.1, 0.0).label
  m = R * R
  det = _render(planes, params, c)
  half = dict(u_stratified=jnp.full((1, m, 8), 0.5),
              u_importance=jnp.broadcast_to(jnp.linspace(0.0, 1.0, 8), (1, m, 8)))
  explicit = _render(planes, params, c, draws=half)
  np.testing.assert_allclose(np.asarray(det[0]), np.asarray(explicit[0]), atol=0)
  k = jax.random.PRNGKey(5)
  r1, r2 = _render(planes, params, c, key=k), _render(planes, params, c, key=k)
  np.testing.assert_array_equal(np.asarray(r1[0]), np.asarray(r2[0]))
  assert np.abs(np.asarray(r1[0]) - np.asarray(det[0])).max() > 1e-4
  flat = dict(u_stratified=half["u_stratified"], u_importance=half["u_importance"].reshape(m, 8))
  np.testing.assert_allclose(np.asarray(_render(planes, params, c, draws=flat)[0]),
                             np.asarray(det[0]), atol=0)
  with pytest.raises(ValueError, match="u_importance"):
    _render(planes, params, c, draws=dict(u_importance=jnp.zeros((1, m, 3))))
  with pytest.raises(ValueError, match="u_stratified"):
    _render(planes, params, c, draws=dict(u_stratified=jnp.zeros((1, m, 3))))
  with pytest.raises(ValueError, match="unknown"):
    _render(planes, params, c, draws=dict(u_fine=jnp.zeros((1, m, 8))))


def test_gradients_finite():
  planes, params = _scene()
  c = camera.Camera.look_at(0.1, 0.0).label

  def loss(pl, pa):
    rgb, depth, wsum = _render(pl, pa, c)
    return jnp.sum(rgb ** 2) + jnp.sum(depth) + jnp.sum(wsum)

  gp, gd = jax.grad(loss, argnums=(0, 1))(planes, params)
  assert np.all(np.isfinite(np.asarray(gp))) and float(jnp.abs(gp).max()) > 0
  assert all(np.all(np.isfinite(np.asarray(x))) for x in jax.tree_util.tree_leaves(gd))


def test_mirrored_camera_renders_mirrored_image_of_symmetric_scene():
  planes, params = _scene(symmetric=True)
  cam = camera.Camera.look_at(0.35, -0.1)
  mirrored = cam.mirror()
  # On EG3D's orbit the mirror view of yaw is -yaw.
  np.testing.assert_allclose(np.asarray(mirrored.label),
                             np.asarray(camera.Camera.look_at(-0.35, -0.1).label), atol=1e-6)
  img = np.asarray(_render(planes, params, cam.label)[0]).reshape(R, R, 4)
  img_m = np.asarray(_render(planes, params, mirrored.label)[0]).reshape(R, R, 4)
  np.testing.assert_allclose(img_m, img[:, ::-1], atol=1e-4)
  assert np.abs(img - img[:, ::-1]).max() > 1e-2  # the view itself is not symmetric


def test_mirror_label_flips_principal_point_and_skew():
  k = camera.intrinsics_matrix(4.0, cx=0.45, cy=0.52, skew=0.01)
  c = camera.matrices_to_label(camera.look_at_pose([1.7], [1.5]), k[None])
  m = camera.mirror_label(c)
  _, km = camera.label_to_matrices(m)
  np.testing.assert_allclose(np.asarray(km[0]), [[4.0, -0.01, 0.55], [0, 4.0, 0.52], [0, 0, 1]],
                             atol=1e-6)
  np.testing.assert_allclose(np.asarray(camera.mirror_label(m)), np.asarray(c), atol=1e-6)


def test_validate_label_names_the_problem():
  c = np.asarray(camera.Camera.look_at(0.2, 0.1).label)
  camera.validate_label(c)
  with pytest.raises(ValueError, match=r"\[B, 25\]"):
    camera.validate_label(c[:, :24])
  bad = c.copy()
  bad[:, :16] = bad[:, :16].reshape(-1, 4, 4).transpose(0, 2, 1).reshape(-1, 16)
  with pytest.raises(ValueError, match="transposed"):
    camera.validate_label(bad)
  bad = c.copy()
  bad[0, 0] = np.nan
  with pytest.raises(ValueError, match="NaN"):
    camera.validate_label(bad)
  with pytest.raises(TypeError):
    camera.validate_label(c.astype(np.int32))


def test_fov_to_focal_keeps_official_constants():
  # gen_samples.py's 18.837 degrees gives 4.2634 with the rounded pi and sqrt(2) (the FFHQ labels
  # use 4.2647); the exact formula would give 4.2629.
  assert camera.fov_to_focal(18.837) == pytest.approx(4.26339, abs=1e-5)


def test_render_options_from_official_kwargs():
  from conftest import FIXTURES
  path = FIXTURES / "eg3d" / "tiny" / "config.json"
  if not path.exists():
    pytest.skip(f"{path} is absent")
  rk = json.loads(path.read_text())["rendering_kwargs"]
  opts = RenderOptions.from_rendering_kwargs(rk)
  assert (opts.depth_resolution, opts.depth_resolution_importance, opts.ray_start) == (12, 12, 2.25)
  assert dict(opts.training_kwargs)["density_reg"] == 0.25
  assert hash(opts) == hash(RenderOptions.from_rendering_kwargs(rk))
  back = opts.to_rendering_kwargs()
  assert all(back[k] == rk[k] for k in ("ray_end", "box_warp", "avg_camera_pivot", "density_reg"))
  with pytest.raises(ValueError, match="unknown key.*fancy_mode"):
    RenderOptions.from_rendering_kwargs({**rk, "fancy_mode": 1})
  with pytest.raises(ValueError, match="softplus"):
    RenderOptions(clamp_mode="relu")
  with pytest.raises(ValueError, match="ray_end"):
    RenderOptions(ray_start=3.0, ray_end=2.0)


def _naive_sample_from_planes(planes, coordinates, box_warp):
  """The tri-plane read written the obvious way (autodiff through plain slices), as reference."""
  from jaxinv.render.triplane import grid_sample_bilinear, project_to_planes
  grid = project_to_planes(coordinates, box_warp)
  return jnp.stack([grid_sample_bilinear(planes[:, i], grid[:, i]) for i in range(3)], axis=1)


def test_sample_from_planes_values_and_gradients_match_the_naive_read():
  # The read has a hand-written backward pass (one stack of the per-plane cotangents instead of a
  # zero-padded copy of the whole tri-plane per plane); values and both gradients (planes and
  # points, including points outside the cube) must equal autodiff of the naive read.
  from jaxinv.render.triplane import sample_from_planes
  k1, k2, k3 = jax.random.split(jax.random.PRNGKey(5), 3)
  planes = jax.random.normal(k1, (2, 3, 9, 7, 4))
  coords = jax.random.uniform(k2, (2, 50, 3), minval=-0.7, maxval=0.7)  # some outside +-0.5
  g = jax.random.normal(k3, (2, 3, 50, 4))
  out, vjp = jax.vjp(lambda p, x: sample_from_planes(p, x, 1.0), planes, coords)
  ref, vjp_ref = jax.vjp(lambda p, x: _naive_sample_from_planes(p, x, 1.0), planes, coords)
  np.testing.assert_array_equal(np.asarray(out), np.asarray(ref))
  for got, want in zip(vjp(g), vjp_ref(g)):
    np.testing.assert_allclose(np.asarray(got), np.asarray(want), rtol=1e-5, atol=1e-5)
  # Second order (gradients of gradients) still works through the hand-written pass.
  hv = jax.grad(lambda p: jnp.sum(jnp.square(jax.grad(
      lambda q: jnp.sum(sample_from_planes(q, coords, 1.0) * g))(p))))(planes)
  assert np.isfinite(np.asarray(hv)).all()
