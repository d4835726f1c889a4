"""jaxinv.data.synthetic: pose samplers' statistics, flip_yaw geometry, and generate() on tiny EG3D."""
import json
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxinv.data import synthetic as S
from jaxinv.render import camera as cam

from conftest import fixture_dir

N = 20000

# Jitted as the train step runs them (and eager dispatch of many small ops is slower on CPU).
_sample_poses = jax.jit(S.sample_poses, static_argnums=(1, 2))
_mirror = jax.jit(S.mirror, static_argnums=(3,))


def _fixture_labels():
  d = fixture_dir("faces")
  labels = json.loads((d / "dataset.json").read_text())["labels"]
  return np.array([l for _, l in labels], np.float32)


def test_flip_yaw_is_the_official_sign_pattern_and_an_involution():
  c = _fixture_labels()
  f = np.asarray(S.flip_yaw(c))
  m, fm = c[:, :16].reshape(-1, 4, 4), f[:, :16].reshape(-1, 4, 4)
  expect = m.copy()
  for i, j in [(0, 1), (0, 2), (1, 0), (2, 0), (0, 3)]:
    expect[:, i, j] *= -1
  np.testing.assert_array_equal(fm, expect)
  np.testing.assert_array_equal(f[:, 16:], c[:, 16:])
  np.testing.assert_array_equal(np.asarray(S.flip_yaw(f)), c)
  # Centred intrinsics: the same camera as the general mirror of the render module.
  np.testing.assert_allclose(f, np.asarray(cam.mirror_label(c)), atol=1e-7)
  # It negates the yaw and keeps the pitch.
  yaw, pitch = S.pose_angles(c)
  fyaw, fpitch = S.pose_angles(f)
  np.testing.assert_allclose(fyaw, -yaw, atol=1e-5)
  np.testing.assert_allclose(fpitch, pitch, atol=1e-6)


def _project(c, p):
  """Pixel (u, v) in [0, 1] units of world points p [B, 3] seen by cameras c [B, 25]."""
  m, k = c[:, :16].reshape(-1, 4, 4), c[:, 16:].reshape(-1, 3, 3)
  rot, t = m[:, :3, :3], m[:, :3, 3]
  pc = np.einsum("bji,bj->bi", rot, p - t)  # world -> camera: R^T (p - t)
  uvw = np.einsum("bij,bj->bi", k, pc)
  return uvw[:, :2] / uvw[:, 2:]


def test_flip_yaw_sees_the_mirrored_scene_as_the_flipped_image():
  """A point at pixel (u, v) in camera c appears at (1 - u, v) for x-mirrored point and flip_yaw(c)."""
  c = _fixture_labels()
  rng = np.random.default_rng(0)
  p = rng.uniform(-0.4, 0.4, (len(c), 3)).astype(np.float32)
  uv = _project(c, p)
  uv_m = _project(np.asarray(S.flip_yaw(c)), p * np.array([-1, 1, 1], np.float32))
  np.testing.assert_allclose(uv_m[:, 0], 1 - uv[:, 0], atol=1e-5)
  np.testing.assert_allclose(uv_m[:, 1], uv[:, 1], atol=1e-5)


def test_mirror_flips_images_and_cameras_together():
  key = jax.random.PRNGKey(3)
  c = jnp.asarray(_fixture_labels())
  img = jax.random.uniform(key, (len(c), 4, 5, 3))
  (out, raw), c2, flipped = _mirror(jax.random.PRNGKey(1), (img, img[:, :2]), c, 0.5)
  flipped, img, c, cf = map(np.asarray, (flipped, img, c, S.flip_yaw(c)))
  out, raw, c2 = map(np.asarray, (out, raw, c2))
  assert 0 < flipped.sum() < len(c)
  for i in range(len(c)):
    want = img[i, :, ::-1] if flipped[i] else img[i]
    np.testing.assert_array_equal(out[i], want)
    np.testing.assert_array_equal(raw[i], want[:2])
    np.testing.assert_array_equal(c2[i], cf[i] if flipped[i] else c[i])


def test_canonical_camera_is_goae_c_front_and_the_frontal_look_at():
  c = np.asarray(_sample_poses(jax.random.PRNGKey(0), 3, S.PoseDistribution.canonical()))
  np.testing.assert_array_equal(c, np.broadcast_to(S.C_FRONT, (3, 25)))
  np.testing.assert_allclose(np.asarray(S.look_at_labels(0.0, 0.0))[0], S.C_FRONT, atol=1e-6)
  np.testing.assert_allclose(np.asarray(cam.Camera.look_at(0.0, 0.0).label)[0], S.C_FRONT, atol=1e-6)


def test_pose_angles_inverts_the_look_at_orbit():
  yaw = np.linspace(-1.0, 1.0, 7, dtype=np.float32)
  pitch = np.linspace(-0.5, 0.4, 7, dtype=np.float32)
  c = S.look_at_labels(yaw, pitch)
  np.testing.assert_allclose(np.asarray(cam.Camera.look_at(yaw, pitch).label), c, atol=1e-6)
  y2, p2 = S.pose_angles(c)
  np.testing.assert_allclose(y2, yaw, atol=1e-5)
  np.testing.assert_allclose(p2, pitch, atol=1e-5)
  cam.validate_label(np.asarray(c))


@pytest.mark.parametrize("dist", [
    S.PoseDistribution.eg3d_gaussian(),
    S.PoseDistribution.eg3d_gaussian(yaw_std=0.4, pitch_std=0.05, yaw_mean=0.2, pitch_mean=-0.1),
    S.PoseDistribution.preim3d(per_batch=False),
    S.PoseDistribution(kind="uniform", yaw_range=0.3, pitch_range=0.1, yaw_mean=-0.1),
], ids=["gaussian", "gaussian_shifted", "preim3d", "uniform_shifted"])
def test_pose_sampler_statistics_match_parameters(dist):
  c = _sample_poses(jax.random.PRNGKey(0), N, dist)
  yaw, pitch = map(np.asarray, S.pose_angles(c))
  if dist.kind == "gaussian":
    std = (dist.yaw_std, dist.pitch_std)
  else:
    std = (dist.yaw_range / math.sqrt(3), dist.pitch_range / math.sqrt(3))
    assert np.all(np.abs(yaw - dist.yaw_mean) <= dist.yaw_range + 1e-5)
    assert np.all(np.abs(pitch - dist.pitch_mean) <= dist.pitch_range + 1e-5)
  se = 4 / math.sqrt(N)  # four standard errors (in units of the std)
  assert abs(yaw.mean() - dist.yaw_mean) < se * std[0]
  assert abs(pitch.mean() - dist.pitch_mean) < se * std[1]
  assert abs(yaw.std() / std[0] - 1) < 3 * se
  assert abs(pitch.std() / std[1] - 1) < 3 * se
  r = np.linalg.norm(np.asarray(c)[:, [3, 7, 11]], axis=-1)
  np.testing.assert_allclose(r, dist.radius, rtol=1e-5)


def test_pose_sampler_aims_at_the_pivot():
  c = np.asarray(_sample_poses(jax.random.PRNGKey(5), 64, S.PoseDistribution.eg3d_gaussian()))
  m = c[:, :16].reshape(-1, 4, 4)
  to_pivot = np.array(cam.DEFAULT_LOOKAT) - m[:, :3, 3]
  to_pivot /= np.linalg.norm(to_pivot, axis=-1, keepdims=True)
  np.testing.assert_allclose(m[:, :3, 2], to_pivot, atol=1e-5)
  cam.validate_label(c)


def test_per_batch_draws_one_pose_per_batch():
  c = np.asarray(_sample_poses(jax.random.PRNGKey(1), 5, S.PoseDistribution.preim3d()))
  np.testing.assert_array_equal(c, np.broadcast_to(c[:1], c.shape))
  c2 = np.asarray(_sample_poses(jax.random.PRNGKey(2), 5, S.PoseDistribution.preim3d()))
  assert not np.allclose(c, c2)


def test_label_sampler_draws_rows_and_flips():
  labels = _fixture_labels()
  c = np.asarray(_sample_poses(jax.random.PRNGKey(0), 4000, S.PoseDistribution.labels(), labels))
  rows = (np.abs(c[:, None] - labels[None]).max(-1) == 0)
  assert rows.any(1).all()
  counts = rows.sum(0)
  assert counts.min() > 4000 / len(labels) * 0.7  # uniform over rows
  cf = np.asarray(_sample_poses(jax.random.PRNGKey(0), 4000, S.PoseDistribution.labels(0.5),
                                 labels))
  both = np.concatenate([labels, np.asarray(S.flip_yaw(labels))])
  rows = (np.abs(cf[:, None] - both[None]).max(-1) == 0)
  assert rows.any(1).all()
  assert 0.45 < rows[:, len(labels):].any(1).mean() < 0.55
  with pytest.raises(ValueError, match="labels"):
    S.sample_poses(jax.random.PRNGKey(0), 2, S.PoseDistribution.labels())


def test_latents_are_standard_normal():
  z = np.asarray(S.sample_latents(jax.random.PRNGKey(0), 512, 64))
  assert z.shape == (512, 64) and z.dtype == np.float32
  assert abs(z.mean()) < 0.02 and abs(z.std() - 1) < 0.02


def test_configs_reject_bad_fields():
  with pytest.raises(ValueError, match="kind"):
    S.PoseDistribution(kind="sphere")
  with pytest.raises(ValueError, match="yaw_std"):
    S.PoseDistribution(yaw_std=-1.0)
  with pytest.raises(ValueError, match="conditioning"):
    S.SyntheticConfig(conditioning="front")
  hash(S.SyntheticConfig(poses=S.PoseDistribution.preim3d()))  # usable as a static jit argument


# ------------------------------------------------------------------ generate() wiring (a stand-in G)


class _RecordingG:
  """Duck-typed generator: ws records (z, c, psi, cutoff); images record the render camera."""
  z_dim = 3

  def mapping(self, z, c, truncation_psi=1.0, truncation_cutoff=None):
    cut = -1.0 if truncation_cutoff is None else float(truncation_cutoff)
    extra = jnp.broadcast_to(jnp.array([truncation_psi, cut], jnp.float32), (z.shape[0], 2))
    return jnp.concatenate([z, c, extra], axis=-1)[:, None, :]

  def synthesis(self, ws, c, key=None, neural_rendering_resolution=None):
    b = c.shape[0]
    ramp = jnp.arange(4, dtype=jnp.float32)[None, None, :, None]  # varies along the width
    img = jnp.broadcast_to(c[:, None, None, :3] + ramp, (b, 2, 4, 3))
    return dict(image=img, image_raw=img, image_depth=img[..., :1],
                feature_image=None, weights_sum=None)


@pytest.mark.parametrize("conditioning", ["render", "canonical"])
def test_generate_wires_conditioning_truncation_and_mirroring(conditioning):
  G = _RecordingG()
  cfg = S.SyntheticConfig(poses=S.PoseDistribution.eg3d_gaussian(), truncation_psi=0.7,
                          truncation_cutoff=14, conditioning=conditioning, mirror=True)
  out = jax.jit(lambda k: S.generate(G, k, 64, cfg))(jax.random.PRNGKey(0))
  z, c, c_map, ws, m = (np.asarray(out[k]) for k in ("z", "c", "c_map", "ws", "mirrored"))
  assert z.shape == (64, 3) and 10 < m.sum() < 54
  np.testing.assert_array_equal(ws[:, 0, :3], z)
  np.testing.assert_array_equal(ws[:, 0, 3:28], c_map)
  np.testing.assert_allclose(ws[:, 0, 28:], np.broadcast_to([0.7, 14.0], (64, 2)))
  rendered = np.where(m[:, None], np.asarray(S.flip_yaw(c)), c)  # the camera G rendered
  if conditioning == "render":
    np.testing.assert_array_equal(c_map, rendered)
  else:
    np.testing.assert_array_equal(c_map, np.broadcast_to(S.C_FRONT, (64, 25)))
  img = np.asarray(out["image"])
  ramp = np.arange(4, dtype=np.float32)
  for i in range(64):
    want = rendered[i, None, None, :3] + (ramp[::-1] if m[i] else ramp)[None, :, None]
    np.testing.assert_array_equal(img[i], np.broadcast_to(want, (2, 4, 3)))
  np.testing.assert_array_equal(out["image_raw"], out["image"])


# ------------------------------------------------------------------ generate() on tiny EG3D


@pytest.fixture(scope="module")
def tiny_G():
  from jaxinv.models.eg3d import tiny_eg3d
  return tiny_eg3d(neural_rendering_resolution=16)


_generate = S.generate_jit


def test_generate_is_jittable_with_the_documented_shapes(tiny_G):
  G = tiny_G
  cfg = S.SyntheticConfig(poses=S.PoseDistribution.preim3d(), truncation_psi=0.5,
                          conditioning="canonical", mirror=True, mirror_prob=1.0)
  b = 2
  out = _generate(G, jax.random.PRNGKey(0), b, cfg)
  img = G.config.img_resolution
  assert out["image"].shape == (b, img, img, 3)
  assert out["image_raw"].shape == (b, 16, 16, 3)
  assert out["image_depth"].shape == (b, 16, 16, 1)
  assert out["ws"].shape == (b, G.num_ws, G.config.w_dim)
  assert out["z"].shape == (b, G.z_dim)
  assert out["c"].shape == out["c_map"].shape == (b, 25)
  assert all(np.isfinite(np.asarray(v)).all() for v in out.values())
  np.testing.assert_array_equal(out["c_map"], np.broadcast_to(S.C_FRONT, (b, 25)))
  assert np.asarray(out["mirrored"]).all()
  # ws is exactly the truncated mapping of z at the conditioning camera.
  ws = G.mapping(out["z"], out["c_map"], truncation_psi=0.5)
  np.testing.assert_allclose(out["ws"], ws, rtol=1e-5, atol=1e-6)
  # The shown camera is the mirror of a PREIM3D pose (one per batch): inside its range.
  yaw, pitch = map(np.asarray, S.pose_angles(out["c"]))
  assert np.all(np.abs(yaw) <= math.radians(30) + 1e-5)
  assert np.all(np.abs(pitch) <= math.radians(20) + 1e-5)
  # Pure: same key, same batch; another key, another batch.
  again = _generate(G, jax.random.PRNGKey(0), b, cfg)
  np.testing.assert_array_equal(out["image"], again["image"])
  other = _generate(G, jax.random.PRNGKey(1), b, cfg)
  assert not np.allclose(out["z"], other["z"])


def test_write_generated_is_an_eg3d_dataset_of_the_generated_batch(tiny_G, tmp_path):
  from jaxinv.data import eg3d_dataset as E
  cfg = S.SyntheticConfig(poses=S.PoseDistribution.preim3d(), truncation_psi=0.5,
                          conditioning="canonical", mirror=True, mirror_prob=1.0)
  key = jax.random.PRNGKey(0)
  path = E.write_generated(tiny_G, tmp_path / "gen", 3, key, cfg, batch_size=2)  # 2 batches
  ds = E.EG3DDataset(path)
  assert len(ds) == 3
  want = _generate(tiny_G, jax.random.fold_in(key, 0), 2, cfg)  # the same compiled call
  rec = ds[1]
  np.testing.assert_array_equal(rec["c"], np.asarray(want["c"][1]))
  img = np.asarray(want["image"][1])
  assert np.abs(E.normalize_images(rec["image"]) - np.clip(img, -1, 1)).max() <= 1 / 255 + 1e-6
  with np.load(f"{path}/latents.npz") as z:
    assert z["ws"].shape == (3, tiny_G.num_ws, tiny_G.config.w_dim)
    np.testing.assert_array_equal(z["z"][1], np.asarray(want["z"][1]))
