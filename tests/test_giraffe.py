"""The GIRAFFE-style compositional generator (ZIGNeRF's G): composition, masks, turns, files."""
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxinv.data import world
from jaxinv.inversion import zignerf as zi
from jaxinv.models import giraffe as gm

CFG = gm.GiraffeConfig(hidden=16, num_layers=2, skip=1, bg_hidden=8, feature_dim=8, freq_points=3,
                       samples=8, feature_resolution=8, img_resolution=16, renderer_channels=16,
                       renderer_min_channels=8)
CFG2 = CFG.__class__(**{**CFG.__dict__, "n_objects": 2, "object_scale": 0.25})
B = 2


@pytest.fixture(scope="module")
def G():
  v = gm.init(CFG, jax.random.PRNGKey(0))
  # A visible object: the fresh field is nearly transparent, so raise its density a little.
  v["params"]["obj"]["sigma_out"]["bias"] = v["params"]["obj"]["sigma_out"]["bias"] + 3.0
  return gm.Giraffe(CFG, v)


@pytest.fixture(scope="module")
def codes():
  return gm.sample_codes(jax.random.PRNGKey(1), B, CFG)


def _c(pitch=0.1):
  return zi.canonical_label(jnp.full((B,), pitch))


def test_weights_sum_to_one_and_the_object_is_seen(G, codes):
  out = G(codes, _c(), jnp.zeros((B, 1)))
  np.testing.assert_allclose(np.asarray(out["weights_sum"]), 1.0, atol=1e-5)
  m = np.asarray(out["masks"])
  assert m.shape == (B, 8, 8, 1) and 0.05 < m.mean() < 0.95 and m.min() >= 0 and m.max() <= 1
  assert out["image"].shape == (B, 16, 16, 3) and np.abs(np.asarray(out["image"])).max() <= 1
  # Rays end on the scene sphere, so every depth lies between the camera and its far side.
  d = np.asarray(out["depth"])
  assert (d > 2.7 - 0.5 - 0.3).all() and (d < 2.7 + 0.5 + 0.3).all()


def test_a_zero_density_object_leaves_the_background_render_unchanged(G, codes):
  v = jax.tree_util.tree_map(lambda x: x, G.variables)
  v["params"]["obj"]["sigma_out"]["kernel"] = jnp.zeros_like(v["params"]["obj"]["sigma_out"]["kernel"])
  v["params"]["obj"]["sigma_out"]["bias"] = jnp.full_like(v["params"]["obj"]["sigma_out"]["bias"], -1e4)
  empty = gm.Giraffe(CFG, v)
  a = empty(codes, _c(), jnp.zeros((B, 1)))
  # Other object codes and poses change nothing; the masks are zero.
  other = dict(codes, obj_shape=-codes["obj_shape"], obj_app=codes["obj_app"] + 1.0)
  b = empty(other, _c(), jnp.full((B, 1), 1.3), jnp.full((B, 1, 3), 0.1))
  np.testing.assert_array_equal(np.asarray(a["masks"]), 0.0)
  np.testing.assert_allclose(np.asarray(a["image"]), np.asarray(b["image"]), atol=1e-6)
  # And it equals the scene whose (dense) object was moved out of the scene sphere: background only.
  far = G(codes, _c(), jnp.zeros((B, 1)), jnp.full((B, 1, 3), 5.0))
  np.testing.assert_array_equal(np.asarray(far["masks"]), 0.0)
  np.testing.assert_allclose(np.asarray(a["image"]), np.asarray(far["image"]), atol=1e-6)
  # The dense object does change the render (so the equalities above can fail).
  full = G(codes, _c(), jnp.zeros((B, 1)))
  assert float(jnp.abs(full["image"] - a["image"]).max()) > 1e-2


def test_turning_by_two_pi_returns_the_same_image_and_a_turn_changes_it(G, codes):
  a = G(codes, _c(), jnp.full((B, 1), 0.4))
  b = G(codes, _c(), jnp.full((B, 1), 0.4 + 2 * math.pi))
  np.testing.assert_allclose(np.asarray(a["image"]), np.asarray(b["image"]), atol=2e-5)
  np.testing.assert_allclose(np.asarray(a["masks"]), np.asarray(b["masks"]), atol=2e-5)
  c = G(codes, _c(), jnp.full((B, 1), 0.4 + math.pi / 2))
  assert float(jnp.abs(a["image"] - c["image"]).max()) > 1e-3


def test_swapping_two_objects_codes_and_poses_swaps_their_masks():
  v = gm.init(CFG2, jax.random.PRNGKey(3))
  v["params"]["obj"]["sigma_out"]["bias"] = v["params"]["obj"]["sigma_out"]["bias"] + 4.0
  G2 = gm.Giraffe(CFG2, v)
  codes = gm.sample_codes(jax.random.PRNGKey(4), B, CFG2)
  t = jnp.broadcast_to(jnp.array([[-0.22, 0.0, 0.0], [0.22, 0.0, 0.0]]), (B, 2, 3))
  rot = jnp.broadcast_to(jnp.array([0.3, -1.0]), (B, 2))
  a = G2(codes, _c(0.0), rot, t)
  flip = lambda x: x[:, ::-1]  # noqa: E731
  swapped = dict(codes, obj_shape=flip(codes["obj_shape"]), obj_app=flip(codes["obj_app"]))
  b = G2(swapped, _c(0.0), flip(rot), flip(t))
  ma, mb = np.asarray(a["masks"]), np.asarray(b["masks"])
  np.testing.assert_allclose(mb, ma[..., ::-1], atol=1e-5)
  np.testing.assert_allclose(np.asarray(b["image"]), np.asarray(a["image"]), atol=1e-5)
  # Each object's mask sits on its own side of the image (the two are told apart).
  left, right = ma[..., :4, 0].sum(), ma[..., 4:, 0].sum()
  assert ma[..., 0].sum() > 0.05 and ma[..., 1].sum() > 0.05 and left != right


def test_gradients_are_finite_and_jit_equals_eager(G, codes):
  def loss(params):
    out, _ = gm.generate(CFG, dict(G.variables, params=params), codes, _c(), jnp.zeros((B, 1)),
                         update_stats=True)
    return jnp.mean(out["image"] ** 2)
  g = jax.grad(loss)(G.variables["params"])
  leaves = jax.tree_util.tree_leaves(g)
  assert all(bool(jnp.isfinite(x).all()) for x in leaves)
  assert sum(float(jnp.abs(x).sum()) for x in leaves) > 0
  eager = gm.generate(CFG, G.variables, codes, _c(), jnp.zeros((B, 1)))[0]["image"]
  np.testing.assert_allclose(np.asarray(eager), np.asarray(G(codes, _c(), jnp.zeros((B, 1)))["image"]),
                             atol=1e-5)


def test_turned_cameras_match_the_orbit_and_are_read_back():
  # The camera that sees a turn theta of the scene has its centre where the orbit camera at yaw
  # -theta has it, and pose_from_label reads (theta, pitch) back.
  theta, pitch = jnp.array([0.5, -1.2]), jnp.array([0.1, -0.2])
  c = gm.rotate_label(zi.canonical_label(pitch), theta)
  orbit = world.orbit_label(-theta, pitch)
  np.testing.assert_allclose(np.asarray(c[:, [3, 7, 11]]), np.asarray(orbit[:, [3, 7, 11]]), atol=1e-5)
  th, p = zi.pose_from_label(c)
  np.testing.assert_allclose(np.asarray(th), np.asarray(theta), atol=1e-5)
  np.testing.assert_allclose(np.asarray(p), np.asarray(pitch), atol=1e-5)
  # The world's backdrop depends only on height: a full turn of the camera renders the same image.
  z = world.sample_z(jax.random.PRNGKey(5), 2)
  a = world.render(z, gm.rotate_label(zi.canonical_label(pitch), theta), 16)["image"]
  b = world.render(z, gm.rotate_label(zi.canonical_label(pitch), theta + 2 * math.pi), 16)["image"]
  np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=1e-4)


def test_files_round_trip_and_bad_files_are_clear_errors(G, tmp_path):
  path = str(tmp_path / "g.npz")
  gm.save(G, path, discriminator={"params": {"w": np.ones(3, np.float32)}})
  G2, d = gm.load_with_discriminator(path)
  assert G2.config == CFG and d["params"]["w"].shape == (3,)
  codes = gm.sample_codes(jax.random.PRNGKey(1), 1, CFG)
  c = zi.canonical_label(jnp.zeros(1))
  np.testing.assert_array_equal(np.asarray(G(codes, c)["image"]), np.asarray(G2(codes, c)["image"]))
  with pytest.raises(FileNotFoundError, match="no such file"):
    gm.load(str(tmp_path / "missing.npz"))
  bad = tmp_path / "bad.npz"
  bad.write_bytes(b"not a zip")
  with pytest.raises(ValueError, match="not a readable .npz"):
    gm.load(str(bad))
  other = tmp_path / "other.npz"
  np.savez(other, x=np.zeros(2))
  with pytest.raises(ValueError, match="no __meta__"):
    gm.load(str(other))
  # A file with one leaf of the wrong shape names it.
  data = dict(np.load(path))
  key = next(k for k in data if k.endswith("fc_in::kernel"))
  data[key] = np.zeros((1, 1), np.float32)
  np.savez(tmp_path / "shape.npz", **data)
  with pytest.raises(ValueError, match="fc_in.*shape"):
    gm.load(str(tmp_path / "shape.npz"))
  with pytest.raises(ValueError, match="expected 'zignerf_inverter'"):
    zi.load_inverter(path)


def test_config_checks():
  with pytest.raises(ValueError, match="power of two"):
    gm.GiraffeConfig(feature_resolution=16, img_resolution=48)
  z = jnp.zeros((3, CFG.code_size))
  parts = gm.split_codes(z, CFG)
  assert parts["obj_shape"].shape == (3, 1, 14) and parts["bg_app"].shape == (3, 4)
  np.testing.assert_array_equal(np.asarray(gm.join_codes(parts)), np.asarray(z))
