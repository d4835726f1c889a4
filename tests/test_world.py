"""The procedural world (jaxinv.data.world): exactness properties of its renderer and mesh."""
from __future__ import annotations

import numpy as np
import jax
import jax.numpy as jnp
import pytest

import jaxinv
from jaxinv.data import world
from jaxinv.render.rays import rays_from_label

R = 32


@pytest.fixture(scope="module")
def zs():
  return np.asarray(world.sample_z(jax.random.PRNGKey(3), 4))


def test_shapes_dtypes_ranges(zs):
  c = jaxinv.Camera.look_at(np.array([-0.6, -0.2, 0.2, 0.6]), 0.1).label
  out = world.render(zs, c, resolution=R)
  assert set(out) == {"image", "depth", "mask"}
  assert out["image"].shape == (4, R, R, 3) and out["image"].dtype == jnp.float32
  assert out["depth"].shape == (4, R, R, 1) and out["mask"].shape == (4, R, R, 1)
  img, depth, mask = (np.asarray(out[k]) for k in ("image", "depth", "mask"))
  assert img.min() >= -1 and img.max() <= 1
  assert set(np.unique(mask)) == {0.0, 1.0}
  assert np.all(np.isinf(depth[mask == 0])) and np.all(np.isfinite(depth[mask == 1]))
  # The object sits in EG3D's box, seen from the orbit (radius 2.7): depth within the box's span.
  assert depth[mask == 1].min() > 2.7 - 0.5 and depth[mask == 1].max() < 2.7 + 0.5
  assert 0.15 < mask.mean() < 0.8   # an object, with background around it
  assert world.Z_DIM == len(world.Z_NAMES) == zs.shape[1]


def test_symmetric_scene_renders_mirror_exact_under_mirror_camera(zs):
  z = np.asarray(world.symmetric(zs))
  cam = jaxinv.Camera.look_at(np.array([0.35, -0.5, 0.1, 0.8]), np.array([0.1, -0.05, 0.2, 0.0]))
  a = world.render(z, cam.label, resolution=R)
  b = world.render(z, cam.mirror(), resolution=R)
  for k in ("image", "mask", "depth"):
    x, y = np.asarray(a[k]), np.asarray(b[k])[:, :, ::-1]
    # The mirrored rays equal the original ones up to float32 rounding of the pixel grid, so a
    # pixel grazing a silhouette may flip; everywhere else the renders agree to rounding.
    same_mask = (np.asarray(a["mask"]) == np.asarray(b["mask"])[:, :, ::-1])[..., 0]
    assert same_mask.mean() > 0.998
    diff = np.abs(np.where(np.isinf(x) & np.isinf(y), 0.0, np.nan_to_num(x, posinf=9.0) - y))
    assert diff[same_mask].max() < 2e-3, k


def test_asymmetric_detail_breaks_the_mirror_symmetry(zs):
  z = np.array(world.symmetric(zs))
  z[:, world.Z_INDEX["bump"]] = 3.0
  z[:, world.Z_INDEX["bump_place"]] = [1.0, -1.0, 0.5, -0.5]
  np.testing.assert_array_equal(np.asarray(world.attributes(z)["has_bump"]), 1.0)
  np.testing.assert_array_equal(np.asarray(world.attributes(z)["bump_side"]), [1, -1, 1, -1])
  cam = jaxinv.Camera.look_at(np.zeros(4), 0.0)
  a = np.asarray(world.render(z, cam, resolution=R)["image"])
  b = np.asarray(world.render(z, cam.mirror(), resolution=R)["image"])[:, :, ::-1]
  assert np.all(np.abs(a - b).max(axis=(1, 2, 3)) > 0.1)


def _ray_ellipsoid(o, d, c, r):
  q = (o - c) / r
  e = d / r
  a, b, cc = (e * e).sum(-1), 2 * (q * e).sum(-1), (q * q).sum(-1) - 1
  disc = b * b - 4 * a * cc
  t = (-b - np.sqrt(np.maximum(disc, 0))) / (2 * a)
  return t, disc


def test_depth_agrees_with_the_analytic_surface(zs):
  s = world.scene(zs)
  c = jaxinv.Camera.look_at(np.array([0.0, 0.7, -0.4, 0.2]), np.array([0.0, 0.2, -0.1, 0.0])).label
  o, d = rays_from_label(c, R)
  t_near, t_far, _ = world._sphere_interval(o, d, world.BOUND_RADIUS)
  dist = lambda p: world._ellipsoid(p, s["head_c"], s["head_r"])
  t, hit = world.trace(dist, o, d, jnp.maximum(t_near, 0), t_far)
  t_ref, disc = _ray_ellipsoid(np.asarray(o, np.float64), np.asarray(d, np.float64),
                               np.asarray(s["head_c"], np.float64)[:, None],
                               np.asarray(s["head_r"], np.float64)[:, None])
  clear = np.abs(disc) > 1e-2     # away from the silhouette's grazing rays
  hit, t = np.asarray(hit), np.asarray(t)
  np.testing.assert_array_equal(hit[clear], disc[clear] > 0)
  both = clear & hit
  assert both.sum() > 100
  np.testing.assert_allclose(t[both], t_ref[both], atol=1e-4)
  # The full scene: every hit lies on the zero set of the scene's SDF.
  out = world.render(zs, c, resolution=R)
  m = np.asarray(out["mask"][..., 0]).reshape(4, -1) > 0
  p = o + jnp.asarray(np.where(m, np.asarray(out["depth"]).reshape(4, -1), 0.0))[..., None] * d
  assert np.abs(np.asarray(world.sdf(p, s)))[m].max() < 1e-4


def test_mesh_matches_the_render_silhouette(zs):
  z = zs[1]
  verts, faces, colors = world.mesh(z, resolution=80)
  assert verts.dtype == np.float32 and faces.dtype == np.int32 and colors.shape == verts.shape
  assert faces.max() < len(verts) and np.all((colors >= 0) & (colors <= 1))
  assert np.abs(verts).max() < world.BOUND_RADIUS
  cam = jaxinv.Camera.look_at(0.4, 0.1)
  mask = np.asarray(world.render(zs[[1, 1, 1, 1]], jaxinv.Camera.look_at(np.full(4, 0.4), 0.1),
                                 resolution=R)["mask"])[0, ..., 0] > 0
  # Project the (dense) vertices through the camera: the pixels they land on are the silhouette.
  m, k = np.asarray(cam.cam2world[0], np.float64), np.asarray(cam.intrinsics[0], np.float64)
  x = (np.linalg.inv(m) @ np.c_[verts, np.ones(len(verts))].T)[:3]
  uv = (k @ (x / x[2]))[:2] * R - 0.5
  col, row = np.round(uv).astype(int)
  covered = np.zeros((R, R), bool)
  covered[row.clip(0, R - 1), col.clip(0, R - 1)] = True
  assert (covered & mask).sum() / mask.sum() > 0.97
  grown = mask.copy()
  for ax in (0, 1):
    for sh in (1, -1):
      grown |= np.roll(mask, sh, axis=ax)
  assert (covered & ~grown).sum() == 0


def test_attributes_are_true_values_the_render_shows(zs):
  z = np.array(world.symmetric(zs[[0, 0, 0, 0]]))
  z[:, world.Z_INDEX["head_width"]] = [-2.0, 2.0, -2.0, 2.0]
  z[:, world.Z_INDEX["hat"]] = [-3.0, 3.0, 3.0, -3.0]
  a = world.attributes(z)
  assert set(a) >= {"head_width", "nose_length", "skin_hue", "has_hat", "has_bump"}
  assert all(v.shape == (4,) for v in a.values())
  np.testing.assert_array_equal(np.asarray(a["has_hat"]), [0.0, 1.0, 1.0, 0.0])
  assert float(a["head_width"][1] - a["head_width"][0]) > 0.08
  out = world.render(z, jaxinv.Camera.look_at(np.zeros(4), 0.0), resolution=R)
  widths = np.asarray(out["mask"])[:, 20, :, 0].sum(-1)  # a row below the eyes, above the jaw
  assert widths[1] >= widths[0] + 2 and widths[3] >= widths[2] + 2


def test_bad_inputs_are_refused_by_name(zs):
  c = jaxinv.Camera.look_at(np.zeros(4), 0.0).label
  with pytest.raises(ValueError, match="z"):
    world.render(zs[:, :10], c)
  with pytest.raises(ValueError, match="z"):
    world.render(np.where(np.arange(world.Z_DIM) == 0, np.nan, zs), c)
  with pytest.raises(ValueError, match="c"):
    world.render(zs, c[:, :16])
  with pytest.raises(ValueError, match="batch"):
    world.render(zs, c[:2])
  with pytest.raises(ValueError, match="resolution"):
    world.render(zs, c, resolution=0)
  with pytest.raises(TypeError, match="z"):
    world.render(zs.astype(np.int32), c)


def test_latent_parts_control_what_their_names_say(zs):
  # z = [shape | appearance | background]: a new appearance keeps the geometry, a new background
  # keeps the whole object.
  assert (world.Z_SHAPE.stop, world.Z_APPEARANCE.stop, world.Z_BACKGROUND.stop) == (
      world.Z_APPEARANCE.start, world.Z_BACKGROUND.start, world.Z_DIM)
  other = np.asarray(world.sample_z(jax.random.PRNGKey(11), 4))
  new_look, new_bg = zs.copy(), zs.copy()
  new_look[:, world.Z_APPEARANCE] = other[:, world.Z_APPEARANCE]
  new_bg[:, world.Z_BACKGROUND] = other[:, world.Z_BACKGROUND]
  c = world.orbit_label(np.array([-0.5, 0.0, 0.3, 0.7]), 0.1)
  base, look, bg = (world.render(z, c, resolution=R) for z in (zs, new_look, new_bg))
  m = np.asarray(base["mask"])[..., 0] > 0
  for k in ("mask", "depth"):
    np.testing.assert_array_equal(np.asarray(look[k]), np.asarray(base[k]))
    np.testing.assert_array_equal(np.asarray(bg[k]), np.asarray(base[k]))
  img0, img_look, img_bg = (np.asarray(o["image"]) for o in (base, look, bg))
  np.testing.assert_array_equal(img_bg[m], img0[m])
  assert np.abs(img_bg[~m] - img0[~m]).max() > 0.05
  np.testing.assert_array_equal(img_look[~m], img0[~m])
  assert np.abs(img_look[m] - img0[m]).max() > 0.05


def test_orbit_label_is_the_look_at_camera():
  yaw, pitch = np.array([-0.8, 0.0, 0.5]), np.array([0.2, 0.0, -0.1])
  np.testing.assert_allclose(np.asarray(world.orbit_label(yaw, pitch)),
                             np.asarray(jaxinv.Camera.look_at(yaw, pitch).label), atol=1e-6)
