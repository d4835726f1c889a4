"""EG3D alignment and camera pose: against the official labels of fixtures/faces, the literal
EG3D crop recipe, and exact synthetic cases.

Measured on the 13 fixture crops (this CPU): yaw error mean 2.6 / max 8.9 deg, pitch error mean
4.2 / max 9.8 deg (bounds from issue 6: mean 5, max 10). Re-aligning an already aligned 512 crop
gives zoom 0.99-1.06 (mean 1.02) and moves the landmarks by 3.4 px (median over crops of the mean
landmark shift; worst crop 8.2 px): our landmarks come from the 512 crop, the official ones from
the original photo.
"""
import functools
import importlib.util
import json

import numpy as np
import pytest
from PIL import Image

from conftest import fixture_dir
from jaxinv.preprocess import align, mtcnn, pose

needs_weights = pytest.mark.skipif(importlib.util.find_spec("mtcnn") is None,
                                   reason='MTCNN weights absent: pip install "jaxinv[faces]"')


@functools.lru_cache(maxsize=None)
def _fixture_faces():
  d = fixture_dir("faces")
  out = []
  for name, c in json.loads((d / "dataset.json").read_text())["labels"]:
    img = np.asarray(Image.open(d / name).convert("RGB"))
    det = mtcnn.detect_faces(img)
    lm = det.landmarks[mtcnn.pick_largest(det)]
    out.append((name, img, lm, np.asarray(c, np.float64)))
  return out


@needs_weights
def test_pose_matches_official_labels():
  errs = []
  for name, img, lm, c in _fixture_faces():
    al = align.alignment_for(lm, img.shape[1], img.shape[0], 512)
    est = pose.estimate_camera(al.to_normalized(lm))
    ref = pose.angles_from_label(c)
    errs.append(np.degrees([est.pose.yaw - ref.yaw, est.pose.pitch - ref.pitch]))
  e = np.abs(np.array(errs))
  print("yaw/pitch error mean", e.mean(0), "max", e.max(0))
  assert np.all(e.mean(0) <= 5.0), e.mean(0)
  assert np.all(e.max(0) <= 10.0), e.max(0)
  # the profile (yaw 60) must come out as a profile on the correct side
  assert errs[[n for n, *_ in _fixture_faces()].index("goae_11.jpg")][0] < 10


@needs_weights
def test_realignment_of_aligned_crop_is_near_identity():
  shifts, zooms = [], []
  for name, img, lm, c in _fixture_faces():
    crop, al = align.align_face(img, lm, 512)
    assert crop.shape == (512, 512, 3) and crop.dtype == np.uint8
    shifts.append(np.linalg.norm(al.to_crop(lm) - lm, axis=-1).mean())
    zooms.append(al.scale[0] * 512 / align.CENTER_CROP_SIZE)
  print("landmark shift px", np.round(shifts, 2), "zoom", np.round(zooms, 3))
  assert np.median(shifts) < 5.0 and max(shifts) < 10.0
  assert 0.95 < min(zooms) and max(zooms) < 1.08 and abs(np.mean(zooms) - 1) < 0.03


def _literal_eg3d_crop(img: np.ndarray, lm: np.ndarray, out: int) -> np.ndarray:
  """The recipe step by step on the whole photo: y-up landmarks, POS fit, bicubic resize of the
  full photo, 1024 window (zero outside), central 700, Lanczos to `out`."""
  h0, w0 = img.shape[:2]
  q = lm.astype(np.float64).copy()
  q[:, 1] = h0 - 1 - q[:, 1]
  t, s = align.pos_fit(q)
  s = 300.0 / s
  w, h = int(w0 * s), int(h0 * s)
  left = int(w / 2 - 512 + (t[0] - w0 / 2) * s)
  up = int(h / 2 - 512 + (h0 / 2 - t[1]) * s)
  big = Image.fromarray(img).resize((w, h), Image.BICUBIC).crop((left, up, left + 1024, up + 1024))
  return np.asarray(big.crop((162, 162, 862, 862)).resize((out, out), Image.LANCZOS))


@pytest.mark.parametrize("shift", [(0, 0), (-150, 40)])  # the second runs off the photo's edge
def test_windowed_crop_equals_literal_recipe(shift):
  rng = np.random.RandomState(0)
  img = (rng.rand(300, 400, 3) * 255).astype(np.uint8)
  img = np.asarray(Image.fromarray(img).resize((400, 300), Image.BILINEAR))
  lm = np.array([[170., 130], [230, 131], [200, 165], [175, 195], [226, 196]]) + np.array(shift)
  ours, _ = align.align_face(img, lm, 256)
  ref = _literal_eg3d_crop(img, lm, 256)
  diff = np.abs(ours.astype(int) - ref.astype(int))
  assert diff.max() <= 2 and diff.mean() < 0.05, (diff.max(), diff.mean())


def test_pnp_recovers_synthetic_pose():
  for yaw, pitch, roll in [(0.3, 0.1, 0.05), (-0.6, -0.2, -0.1), (0.0, 0.25, 0.0)]:
    c = pose.label_from_angles(yaw, pitch, roll)
    m = c[:16].astype(np.float64).reshape(4, 4)
    r = m[:3, :3].T
    t = -r @ m[:3, 3]
    lm = pose._project(r, t, pose.WORLD_LM5)
    r_est, t_est, rms = pose.solve_pnp(lm)
    assert rms < 1e-8
    np.testing.assert_allclose(r_est, r, atol=1e-6)
    got = pose.angles_from_label(c)
    np.testing.assert_allclose(got, (yaw, pitch, roll), atol=1e-5)


def test_label_follows_eg3d_lookat_conventions():
  # fixtures/README.md section 4: position r*(sin(phi)cos(pi-h), cos(phi), sin(phi)sin(pi-h))
  # with h = pi/2 + yaw; columns [right, down, forward]; aimed at (0, 0, 0.2).
  yaw, pitch = 0.35, -0.12
  c = pose.label_from_angles(yaw, pitch, 0.0)
  m = c[:16].reshape(4, 4).astype(np.float64)
  h, phi = np.pi / 2 + yaw, np.pi / 2 - pitch
  pos = 2.7 * np.array([np.sin(phi) * np.cos(np.pi - h), np.cos(phi), np.sin(phi) * np.sin(np.pi - h)])
  np.testing.assert_allclose(m[:3, 3], pos, atol=1e-5)
  fwd = (np.array([0, 0, 0.2]) - pos) / np.linalg.norm(np.array([0, 0, 0.2]) - pos)
  np.testing.assert_allclose(m[:3, 2], fwd, atol=1e-5)
  assert m[1, 1] < 0 and m[0, 0] > 0  # down column points down, right column right
  np.testing.assert_allclose(m[:3, :3] @ m[:3, :3].T, np.eye(3), atol=1e-5)
  np.testing.assert_allclose(c[16:], [4.2647, 0, 0.5, 0, 4.2647, 0.5, 0, 0, 1], atol=1e-6)


def test_mirror_label_flips_yaw_and_roll():
  c = pose.label_from_angles(0.4, 0.1, 0.08)
  a = pose.angles_from_label(pose.mirror_label(c))
  np.testing.assert_allclose(a, (-0.4, 0.1, -0.08), atol=1e-5)
  np.testing.assert_allclose(pose.mirror_label(pose.mirror_label(c)), c)
  crop = np.arange(2 * 3 * 3, dtype=np.uint8).reshape(2, 3, 3)
  np.testing.assert_array_equal(align.mirror(align.mirror(crop)), crop)


def test_refine_hook_and_roll_option():
  lm = np.array([[0.39, 0.45], [0.61, 0.45], [0.5, 0.56], [0.41, 0.67], [0.59, 0.67]])
  seen = []

  def refine(c):
    seen.append(c.copy())
    return pose.label_from_angles(0.2, 0.0, 0.0)
  est = pose.estimate_camera(lm, refine=refine)
  assert len(seen) == 1 and seen[0].shape == (25,)
  assert abs(est.pose.yaw - 0.2) < 1e-6
  assert pose.estimate_camera(lm, include_roll=False).pose.roll == 0.0
  with pytest.raises(ValueError, match="25"):
    pose.estimate_camera(lm, refine=lambda c: c[:16])
