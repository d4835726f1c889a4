"""Cameras as EG3D's 25-number label, and the look-at orbit used by every EG3D script.

Label ``c: [B, 25]`` = the 4x4 **cam2world** matrix flattened row-major, then the 3x3 **normalized**
intrinsics ``[[fx, skew, cx], [0, fy, cy], [0, 0, 1]]`` flattened row-major (units of image size, so
cx = cy = 0.5 is the image centre). Camera axes are OpenCV's: +x right, +y down the image, +z forward;
the world is y-up. The rotation block's columns are [right, down, forward] in world coordinates.
"""
from __future__ import annotations

import dataclasses
import functools
import math

import jax.numpy as jnp
import numpy as np

from jaxinv import checks

# EG3D's FFHQ defaults: focal length 4.2647 (18.837 degree field of view), orbit radius 2.7 around the
# world origin, aiming at (0, 0, 0.2).
DEFAULT_FOCAL = 4.2647
DEFAULT_RADIUS = 2.7
DEFAULT_LOOKAT = (0.0, 0.0, 0.2)

# Reflection of the world through the x = 0 plane (and of the camera's own x axis).
_FLIP_X = np.diag([-1.0, 1.0, 1.0, 1.0]).astype(np.float32)


def _normalize(v):
  # No epsilon, as in the official code: a zero vector is a caller bug and becomes NaN.
  return v / jnp.linalg.norm(v, axis=-1, keepdims=True)


def fov_to_focal(fov_degrees: float) -> float:
  """Normalized focal length of a vertical field of view, with the official rounded constants.

  The official ``FOV_to_intrinsics`` uses 3.14159 and 1.414 instead of pi and sqrt(2); we keep them
  so that e.g. 18.837 degrees gives EG3D's 4.2647.
  """
  return float(1.0 / (math.tan(fov_degrees * 3.14159 / 360.0) * 1.414))


def intrinsics_matrix(focal: float = DEFAULT_FOCAL, cx: float = 0.5, cy: float = 0.5,
                      skew: float = 0.0, focal_y: float | None = None) -> np.ndarray:
  """Normalized intrinsics ``[3, 3]`` float32."""
  fy = focal if focal_y is None else focal_y
  return np.array([[focal, skew, cx], [0.0, fy, cy], [0.0, 0.0, 1.0]], np.float32)


def look_at_cam2world(origin, lookat):
  """cam2world ``[B, 4, 4]`` of cameras at ``origin [B, 3]`` aiming at ``lookat [B, 3]``, no roll.

  Same construction as the official ``create_cam2world_matrix``: world up is +y, right =
  -normalize(up x forward), down-the-image = normalize(forward x right).
  """
  origin = jnp.asarray(origin, jnp.float32)
  forward = _normalize(_normalize(jnp.asarray(lookat, jnp.float32) - origin))
  up = jnp.broadcast_to(jnp.array([0.0, 1.0, 0.0], jnp.float32), forward.shape)
  right = -_normalize(jnp.cross(up, forward))
  down = _normalize(jnp.cross(forward, right))
  rot = jnp.stack([right, down, forward], axis=-1)  # columns
  top = jnp.concatenate([rot, origin[:, :, None]], axis=-1)
  bottom = jnp.broadcast_to(jnp.array([[0.0, 0.0, 0.0, 1.0]], jnp.float32), (origin.shape[0], 1, 4))
  return jnp.concatenate([top, bottom], axis=1)


def orbit_origin(horizontal, vertical, radius=DEFAULT_RADIUS):
  """Camera centres ``[B, 3]`` on a sphere around the world origin (``LookAtPoseSampler`` angles).

  Args:
    horizontal: [B] azimuth h in radians (h = pi/2 looks along -z, i.e. at the face).
    vertical: [B] polar angle v in radians (v = pi/2 is level); clamped to (1e-5, pi - 1e-5).
    radius: distance from the world origin.
  """
  h = jnp.asarray(horizontal, jnp.float32).reshape(-1)
  v = jnp.clip(jnp.asarray(vertical, jnp.float32).reshape(-1), 1e-5, math.pi - 1e-5)
  # The official sampler maps v through arccos(1 - 2v/pi), so v is not the polar angle itself
  # except at pi/2; keep it for parity.
  phi = jnp.arccos(1 - 2 * (v / math.pi))
  radius = jnp.asarray(radius, jnp.float32)
  x = radius * jnp.sin(phi) * jnp.cos(math.pi - h)
  y = radius * jnp.cos(phi)
  z = radius * jnp.sin(phi) * jnp.sin(math.pi - h)
  return jnp.stack([x, y, z], axis=-1)


def look_at_pose(horizontal, vertical, lookat=DEFAULT_LOOKAT, radius=DEFAULT_RADIUS):
  """``LookAtPoseSampler.sample(h, v, lookat, radius)`` with zero spread: cam2world ``[B, 4, 4]``."""
  origin = orbit_origin(horizontal, vertical, radius)
  lookat = jnp.broadcast_to(jnp.asarray(lookat, jnp.float32), origin.shape)
  return look_at_cam2world(origin, lookat)


def matrices_to_label(cam2world, intrinsics):
  """``(cam2world [B, 4, 4], intrinsics [B, 3, 3] or [3, 3]) -> c [B, 25]``."""
  cam2world = jnp.asarray(cam2world, jnp.float32)
  checks.check_shape(cam2world, "cam2world", (None, 4, 4), "[B, 4, 4]")
  intrinsics = jnp.asarray(intrinsics, jnp.float32)
  if intrinsics.ndim == 2:
    intrinsics = jnp.broadcast_to(intrinsics, (cam2world.shape[0], 3, 3))
  checks.check_shape(intrinsics, "intrinsics", (cam2world.shape[0], 3, 3), "[B, 3, 3]")
  b = cam2world.shape[0]
  return jnp.concatenate([cam2world.reshape(b, 16), intrinsics.reshape(b, 9)], axis=-1)


def label_to_matrices(c):
  """``c [B, 25] -> (cam2world [B, 4, 4], intrinsics [B, 3, 3])``."""
  c = jnp.asarray(c)
  checks.check_shape(c, "c", (None, 25), "camera label [B, 25]")
  return c[:, :16].reshape(-1, 4, 4), c[:, 16:].reshape(-1, 3, 3)


def mirror_label(c):
  """The camera label seeing the world reflected through the x = 0 plane.

  For a scene symmetric under x -> -x the mirrored camera renders the horizontally flipped image
  (TriPlaneNet's mirror view). The pose becomes S P S with S = diag(-1, 1, 1, 1) (the world is
  reflected and the camera's x axis flipped so the rotation stays proper); a pixel at u then looks
  where u' = 1 - u looked, so cx -> 1 - cx and the skew changes sign.

  Args:
    c: [B, 25] camera labels.
  Returns:
    [B, 25] mirrored labels.
  """
  cam2world, k = label_to_matrices(c)
  s = jnp.asarray(_FLIP_X, cam2world.dtype)
  cam2world = s @ cam2world @ s
  k = k.at[:, 0, 1].multiply(-1).at[:, 0, 2].set(1 - k[:, 0, 2])
  return matrices_to_label(cam2world, k)


def _label_flags(xp, c, atol: float, rotation: bool):
  """[4] booleans: last cam2world row, intrinsics form, positive focals, proper rotation."""
  m, k = c[:, :16].reshape(-1, 4, 4), c[:, 16:].reshape(-1, 3, 3)
  row = xp.all(xp.abs(m[:, 3] - xp.asarray([0.0, 0.0, 0.0, 1.0], c.dtype)) <= atol)
  intr = (xp.all(xp.abs(k[:, 2] - xp.asarray([0.0, 0.0, 1.0], c.dtype)) <= atol)
          & xp.all(xp.abs(k[:, 1, 0]) <= atol))
  focal = xp.all(k[:, 0, 0] > 0) & xp.all(k[:, 1, 1] > 0)
  if rotation:
    r = m[:, :3, :3]
    err = xp.abs(xp.swapaxes(r, 1, 2) @ r - xp.eye(3, dtype=c.dtype))
    rot = xp.all(err <= atol) & xp.all(xp.linalg.det(r) > 0)
  else:
    rot = xp.asarray(True)
  return xp.stack([row, intr, focal, rot])


@functools.lru_cache(maxsize=None)
def _device_label_flags():
  import jax
  return jax.jit(lambda c, atol, rotation: _label_flags(jnp, c, atol, rotation),
                 static_argnums=(1, 2))


def validate_label(c, name: str = "c", atol: float = 1e-3, rotation: bool = True) -> None:
  """Refuses anything that is not a batch of valid camera labels ``[B, 25]``.

  Checks the shape and dtype always; when the values are available (see ``jaxinv.checks``: numpy
  on the host, jax arrays on their device with one small fetch, under jit only inside
  ``checks.checked``) also finiteness, the homogeneous rows ([0, 0, 0, 1] and [0, 0, 1]), a positive
  focal length and (``rotation=True``) an orthonormal proper rotation, so that e.g. a world2cam
  matrix or a transposed pose is caught by name.
  """
  checks.check_shape(c, name, (None, 25), "camera label [B, 25] = cam2world (16) + intrinsics (9)")
  checks.check_floating(c, name)
  checks.check_finite(c, name)
  if checks.is_tracer(c):
    checks.require(c, name, lambda xp, a: _label_flags(xp, a, atol, rotation),
                   "not a valid camera label (cam2world last row [0, 0, 0, 1], intrinsics "
                   "[[fx, s, cx], [0, fy, cy], [0, 0, 1]], proper rotation)")
    return
  if checks._is_device_array(c):
    import jax
    with jax.ensure_compile_time_eval():  # a concrete label inside someone's jit trace
      flags = jax.device_get(_device_label_flags()(c, float(atol), bool(rotation)))
    if bool(np.all(flags)):
      return
    a = np.asarray(jax.device_get(c), np.float64)  # explicit, and only to word the error
  else:
    a = np.asarray(c, np.float64)
    if bool(np.all(_label_flags(np, a, atol, rotation))):
      return
  m, k = a[:, :16].reshape(-1, 4, 4), a[:, 16:].reshape(-1, 3, 3)
  if not np.allclose(m[:, 3], [0, 0, 0, 1], atol=atol):
    raise ValueError(f"{name}: cam2world's last row must be [0, 0, 0, 1], got {m[:, 3].tolist()} "
                     "(is the matrix transposed?)")
  if not np.allclose(k[:, 2], [0, 0, 1], atol=atol) or not np.allclose(k[:, 1, 0], 0, atol=atol):
    raise ValueError(f"{name}: intrinsics must look like [[fx, skew, cx], [0, fy, cy], [0, 0, 1]], "
                     f"got {k.tolist()}")
  if np.any(k[:, 0, 0] <= 0) or np.any(k[:, 1, 1] <= 0):
    raise ValueError(f"{name}: focal lengths fx, fy must be positive, got {k[:, 0, 0]}, {k[:, 1, 1]}")
  r = m[:, :3, :3]
  err = np.abs(r.transpose(0, 2, 1) @ r - np.eye(3)).max()
  raise ValueError(f"{name}: cam2world's rotation block is not a proper rotation (|R^T R - I| = "
                   f"{err:.3g}, det {np.linalg.det(r)})")


@dataclasses.dataclass(frozen=True)
class Camera:
  """A batch of pinhole cameras; ``.label`` is EG3D's ``[B, 25]`` conditioning/rendering label.

  Attributes:
    cam2world: [B, 4, 4] float32 (OpenCV camera axes, world y-up).
    intrinsics: [B, 3, 3] float32 normalized intrinsics.
  """
  cam2world: np.ndarray
  intrinsics: np.ndarray

  @classmethod
  def look_at(cls, yaw=0.0, pitch=0.0, *, radius: float = DEFAULT_RADIUS,
              lookat=DEFAULT_LOOKAT, focal: float | None = None,
              fov: float | None = None) -> "Camera":
    """Cameras on EG3D's orbit, as ``gen_samples.py`` places them.

    Args:
      yaw: scalar or [B] radians; positive turns the camera towards the subject's left
        (h = pi/2 + yaw).
      pitch: scalar or [B] radians (v = pi/2 + pitch; positive looks from below).
      radius: orbit radius around the world origin.
      lookat: the point the camera aims at.
      focal: normalized focal length (default 4.2647); or give ``fov`` in degrees instead.
    """
    if focal is not None and fov is not None:
      raise ValueError("Camera.look_at: give focal or fov, not both")
    if fov is not None:
      focal = fov_to_focal(fov)
    focal = DEFAULT_FOCAL if focal is None else float(focal)
    for what, v in (("yaw", yaw), ("pitch", pitch), ("radius", radius), ("lookat", lookat),
                    ("focal", focal)):
      checks.check_finite(np.asarray(v, np.float64), f"Camera.look_at: {what}")
    if np.any(np.asarray(radius) <= 0) or not focal > 0:
      raise ValueError(f"Camera.look_at: radius and focal must be positive, got {radius}, {focal}")
    yaw, pitch = np.broadcast_arrays(np.asarray(yaw, np.float64).reshape(-1),
                                     np.asarray(pitch, np.float64).reshape(-1))
    cam2world = look_at_pose(math.pi / 2 + yaw, math.pi / 2 + pitch, lookat, radius)
    k = np.broadcast_to(intrinsics_matrix(focal), (cam2world.shape[0], 3, 3))
    return cls(np.asarray(cam2world), np.array(k))

  @classmethod
  def from_label(cls, c) -> "Camera":
    validate_label(c)
    m, k = label_to_matrices(c)
    return cls(np.asarray(m), np.asarray(k))

  @property
  def label(self):
    """[B, 25] float32."""
    return matrices_to_label(self.cam2world, self.intrinsics)

  def mirror(self) -> "Camera":
    return Camera.from_label(mirror_label(self.label))

  def __len__(self) -> int:
    return int(self.cam2world.shape[0])
