"""Camera rays through pixel centres, for pinhole cameras with full normalized intrinsics."""
from __future__ import annotations

import jax
import jax.numpy as jnp

from jaxinv import checks

_HIGHEST = jax.lax.Precision.HIGHEST


def pixel_centres(resolution: int):
  """Normalized pixel centres ``(x [R*R], y [R*R])``, ray index m = row * R + col.

  x = (col + 0.5) / R grows to the image right, y = (row + 0.5) / R grows down the image.
  """
  # Same float32 formula as the official sampler: i * (1/R) + 0.5/R.
  t = jnp.arange(resolution, dtype=jnp.float32) * (1.0 / resolution) + (0.5 / resolution)
  y, x = jnp.meshgrid(t, t, indexing="ij")
  return x.reshape(-1), y.reshape(-1)


def ray_sampler(cam2world, intrinsics, resolution: int):
  """One ray per pixel centre (the official ``RaySampler``).

  Args:
    cam2world: [B, 4, 4] camera-to-world (OpenCV axes).
    intrinsics: [B, 3, 3] normalized ``[[fx, skew, cx], [0, fy, cy], [0, 0, 1]]``.
    resolution: R, rays per image side.
  Returns:
    ray_origins: [B, R*R, 3], the camera centre for every ray.
    ray_directions: [B, R*R, 3] unit vectors in world space; ray m = row * R + col.
  """
  checks.check_shape(cam2world, "cam2world", (None, 4, 4), "[B, 4, 4]")
  checks.check_shape(intrinsics, "intrinsics", (cam2world.shape[0], 3, 3), "[B, 3, 3]")
  cam2world = jnp.asarray(cam2world, jnp.float32)
  intrinsics = jnp.asarray(intrinsics, jnp.float32)
  x, y = pixel_centres(resolution)
  fx, fy = intrinsics[:, 0, 0, None], intrinsics[:, 1, 1, None]
  cx, cy = intrinsics[:, 0, 2, None], intrinsics[:, 1, 2, None]
  sk = intrinsics[:, 0, 1, None]
  # Invert u = fx*X + sk*Y + cx, v = fy*Y + cy at depth Z = 1 (the skew couples x to y).
  x_lift = (x[None] - cx + cy * sk / fy - sk * y[None] / fy) / fx
  y_lift = (y[None] - cy) / fy
  ones = jnp.ones_like(x_lift)
  cam_points = jnp.stack([x_lift, y_lift, ones, ones], axis=-1)  # [B, M, 4]
  world = jnp.einsum("bij,bmj->bmi", cam2world, cam_points, precision=_HIGHEST)[..., :3]
  origin = cam2world[:, :3, 3]
  dirs = world - origin[:, None, :]
  dirs = dirs / jnp.maximum(jnp.linalg.norm(dirs, axis=-1, keepdims=True), 1e-12)
  origins = jnp.broadcast_to(origin[:, None, :], dirs.shape)
  return origins, dirs


def rays_from_label(c, resolution: int):
  """``ray_sampler`` for camera labels ``c [B, 25]``."""
  checks.check_shape(c, "c", (None, 25), "camera label [B, 25]")
  c = jnp.asarray(c, jnp.float32)
  return ray_sampler(c[:, :16].reshape(-1, 4, 4), c[:, 16:].reshape(-1, 3, 3), resolution)
