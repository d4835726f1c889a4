"""Camera pose of an aligned face crop from its five landmarks, as EG3D's 25-number label.

The official pipeline regresses the head pose with Deep3DFaceRecon (a 3DMM fit). We fit the five
landmarks, in the crop's normalized coordinates, to the same mean face that the crop alignment
uses, placed in EG3D's world as EG3D's ``3dface2idr_mat.py`` places the 3DMM (world = 0.27 x model
+ (0, 0.006, 0.161)), by a small perspective-n-point least-squares solve with the label's
intrinsics. The fitted camera's position (direction from the world origin, as EG3D's radius normalization
keeps it) gives yaw and pitch, its rotation the roll; the label is the look-at camera at radius 2.7
aimed at (0, 0, 0.2) from that direction, rolled as measured.

Accuracy on ``fixtures/faces`` (13 crops with official labels, ``bench/pose_stability.py``) with
the landmarks ``jaxinv.preprocess`` uses by default (``mtcnn.refine_landmarks``): yaw error mean
2.4 / max 8.1 degrees, pitch mean 2.5 / max 7.6, roll mean 1.1 / max 3.3; re-encoding a crop
(JPEG q95/q75, a 0.9x resize) moves yaw and pitch by at most 0.15 degrees. With the detector's
raw landmarks (``stabilize=False``): yaw 2.6 / 8.9, pitch 4.2 / 9.8, roll 1.1 / 1.9, and up to
5.5 degrees between encodings. Five points against a mean face cannot see individual
nose/mouth proportions, which is what limits the accuracy; ``refine`` is the hook for a
render-based fit.

Conventions (``fixtures/README.md`` section 4): cam2world with OpenCV camera axes (+x right,
+y down, +z forward), world y-up; yaw = atan2(x, z) and pitch = asin(y / r) of the camera
position; roll = rotation of the camera about its viewing axis relative to the un-rolled look-at
frame (positive turns the camera's right axis towards its down axis).

The look-at math is kept here (``lookat_cam2world``); it mirrors EG3D's
``create_cam2world_matrix`` and can move to ``jaxinv.render.camera`` once that lands.
"""
from __future__ import annotations

from typing import Callable, NamedTuple

import numpy as np

from jaxinv.preprocess.align import MEAN_FACE_LM5

FOCAL = 4.2647  # 2985.29 / 700: EG3D's normalized focal length for FFHQ-style crops
RADIUS = 2.7
LOOKAT = (0.0, 0.0, 0.2)
INTRINSICS = np.array([[FOCAL, 0, 0.5], [0, FOCAL, 0.5], [0, 0, 1]], np.float64)

# The mean face in EG3D world units (3dface2idr_mat.py's scale and offsets).
WORLD_LM5 = 0.27 * MEAN_FACE_LM5 + np.array([0.0, 0.006, 0.161])


class Pose(NamedTuple):
  """Angles in radians (see the module docstring for their definition)."""
  yaw: float
  pitch: float
  roll: float


def _rodrigues(v: np.ndarray) -> np.ndarray:
  th = np.linalg.norm(v)
  if th < 1e-12:
    return np.eye(3)
  k = v / th
  kx = np.array([[0, -k[2], k[1]], [k[2], 0, -k[0]], [-k[1], k[0], 0]])
  return np.eye(3) + np.sin(th) * kx + (1 - np.cos(th)) * kx @ kx


def _project(r_w2c: np.ndarray, t: np.ndarray, pts: np.ndarray) -> np.ndarray:
  pc = pts @ r_w2c.T + t
  return FOCAL * pc[:, :2] / pc[:, 2:3] + 0.5


def solve_pnp(points2d: np.ndarray, points3d: np.ndarray = WORLD_LM5, iters: int = 50):
  """Perspective-n-point by damped Gauss-Newton on the reprojection error.

  Args:
    points2d: [N, 2] normalized crop coordinates (x right, y down, [0, 1] across the crop).
    points3d: [N, 3] world points.
  Returns:
    (R [3, 3] world-to-camera, t [3], rms reprojection error in crop units).
  """
  r0 = np.diag([1.0, -1.0, -1.0])  # frontal camera on +z looking at -z (OpenCV axes)
  x = np.array([0, 0, 0, 0, 0, RADIUS], np.float64)  # rotation vector (applied after r0), t

  def residual(x):
    return (_project(_rodrigues(x[:3]) @ r0, x[3:], points3d) - points2d).reshape(-1)

  lam = 1e-3
  f = residual(x)
  for _ in range(iters):
    jac = np.empty((f.size, 6))
    for i in range(6):
      d = np.zeros(6)
      d[i] = 1e-6
      jac[:, i] = (residual(x + d) - residual(x - d)) / 2e-6
    g = jac.T @ f
    step = np.linalg.solve(jac.T @ jac + lam * np.eye(6), -g)
    f_new = residual(x + step)
    if f_new @ f_new < f @ f:
      x, f, lam = x + step, f_new, lam * 0.3
      if np.abs(step).max() < 1e-10:
        break
    else:
      lam *= 10
  return _rodrigues(x[:3]) @ r0, x[3:], float(np.sqrt(np.mean(f ** 2)))


def lookat_cam2world(position, lookat=LOOKAT) -> np.ndarray:
  """4x4 cam2world at ``position`` looking at ``lookat``, world up +y, no roll (EG3D's rule)."""
  position = np.asarray(position, np.float64)
  forward = np.asarray(lookat, np.float64) - position
  forward /= np.linalg.norm(forward)
  right = -np.cross([0.0, 1.0, 0.0], forward)
  right /= np.linalg.norm(right)
  down = np.cross(forward, right)
  down /= np.linalg.norm(down)
  m = np.eye(4)
  m[:3, :3] = np.stack([right, down, forward], axis=-1)
  m[:3, 3] = position
  return m


def label_from_angles(yaw: float, pitch: float, roll: float = 0.0, radius: float = RADIUS,
                      lookat=LOOKAT) -> np.ndarray:
  """The 25-number label: camera at ``radius`` in direction (yaw, pitch), aimed at ``lookat``,
  rolled by ``roll`` about its viewing axis; intrinsics fx = fy = 4.2647, cx = cy = 0.5."""
  pos = radius * np.array([np.cos(pitch) * np.sin(yaw), np.sin(pitch), np.cos(pitch) * np.cos(yaw)])
  m = lookat_cam2world(pos, lookat)
  r, d, f = m[:3, 0], m[:3, 1], m[:3, 2]
  c, s = np.cos(roll), np.sin(roll)
  m[:3, 0] = c * r + s * d
  m[:3, 1] = np.cross(f, m[:3, 0])
  return np.concatenate([m.reshape(-1), INTRINSICS.reshape(-1)]).astype(np.float32)


def angles_from_label(c) -> Pose:
  """(yaw, pitch, roll) of a label's camera: position angles as in ``fixtures/faces/README.md``
  and the roll of its rotation relative to the un-rolled look-at frame along the same axis."""
  m = np.asarray(c, np.float64)[:16].reshape(4, 4)
  return _angles(m[:3, :3], m[:3, 3])


def _angles(r_c2w: np.ndarray, position: np.ndarray | None = None) -> Pose:
  f = r_c2w[:, 2]
  d = -f if position is None else position / np.linalg.norm(position)
  yaw = float(np.arctan2(d[0], d[2]))
  pitch = float(np.arcsin(np.clip(d[1], -1, 1)))
  right0 = -np.cross([0.0, 1.0, 0.0], f)
  right0 /= np.linalg.norm(right0)
  right = r_c2w[:, 0]
  roll = float(np.arctan2(np.cross(right0, right) @ f, right0 @ right))
  return Pose(yaw, pitch, roll)


def mirror_label(c) -> np.ndarray:
  """Label of the left-right mirrored crop (EG3D's ``flip_yaw``)."""
  c = np.array(c, np.float32).copy()
  m = c[:16].reshape(4, 4)
  m[0, 1] *= -1
  m[0, 2] *= -1
  m[1, 0] *= -1
  m[2, 0] *= -1
  m[0, 3] *= -1
  c[:16] = m.reshape(-1)
  return c


class CameraEstimate(NamedTuple):
  """c: [25] float32 label; pose: angles (radians); rms: landmark reprojection error of the fit in
  crop units (a fraction of the crop side; large values mean an unusual face or bad landmarks)."""
  c: np.ndarray
  pose: Pose
  rms: float


def estimate_camera(landmarks_normalized: np.ndarray, *, include_roll: bool = True,
                    refine: Callable[[np.ndarray], np.ndarray] | None = None) -> CameraEstimate:
  """Camera label of an aligned crop from its five landmarks.

  Args:
    landmarks_normalized: [5, 2] landmark positions in the crop, normalized to [0, 1] (x right,
      y down), ordered left eye, right eye, nose, mouth left, mouth right.
    include_roll: keep the measured roll in the label (the official labels have it; EG3D's
      generated look-at cameras have none).
    refine: optional hook ``c [25] -> c [25]`` run on the landmark estimate (e.g. a fit that
      renders the generator); the angles are re-read from its result.
  Returns:
    :class:`CameraEstimate`.
  """
  lm = np.asarray(landmarks_normalized, np.float64)
  if lm.shape != (5, 2):
    raise ValueError(f"landmarks_normalized: expected shape [5, 2], got {lm.shape}")
  r_w2c, t, rms = solve_pnp(lm)
  # As the official pipeline: the camera's direction is that of its position -R^T t from the
  # world origin (the face sits at about (0, 0.006, 0.161), so this is not exactly -forward).
  pose = _angles(r_w2c.T, -r_w2c.T @ t)
  if not include_roll:
    pose = pose._replace(roll=0.0)
  c = label_from_angles(*pose)
  if refine is not None:
    c = np.asarray(refine(c), np.float32)
    if c.shape != (25,):
      raise ValueError(f"refine: must return a [25] label, got shape {c.shape}")
    pose = angles_from_label(c)
  return CameraEstimate(c, pose, rms)
