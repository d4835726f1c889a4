"""Bilinear reads of tri-plane features at 3-D points."""
from __future__ import annotations

import jax
import jax.numpy as jnp

from jaxinv import checks
from jaxinv.render.options import PLANE_AXES_EG3D


def project_to_planes(coordinates, box_warp: float, plane_axes=PLANE_AXES_EG3D):
  """Grid positions ``[B, 3, N, 2]`` (grid-x, grid-y) in [-1, 1] of world points ``[B, N, 3]``.

  Points are scaled by 2/box_warp so the cube of side ``box_warp`` maps onto the planes; plane p reads
  the world axes ``plane_axes[p]`` (``PLANE_AXES_EG3D``: XY, XZ, ZX).
  """
  scaled = (2.0 / box_warp) * coordinates
  return jnp.stack([scaled[..., list(axes)] for axes in plane_axes], axis=1)


def grid_sample_bilinear(features, grid):
  """``grid_sample`` (bilinear, zero padding, align_corners=False) of channels-last maps.

  Args:
    features: [P, H, W, C] maps.
    grid: [P, N, 2] positions (x indexes W, y indexes H), -1/+1 are the outer pixel edges.
  Returns:
    [P, N, C] samples; corners outside the map contribute zero.
  """
  p, h, w, c = features.shape
  # Pixel coordinates of the sample, as PyTorch computes them for align_corners=False.
  ix = ((grid[..., 0] + 1) * w - 1) / 2
  iy = ((grid[..., 1] + 1) * h - 1) / 2
  ix0 = jnp.floor(ix)
  iy0 = jnp.floor(iy)
  fx = ix - ix0
  fy = iy - iy0
  # A one-pixel zero border lets every out-of-range corner read a zero instead of being masked:
  # corner indices are clipped into [-1, W] (resp. [-1, H]), which is the border after the shift.
  padded = jnp.pad(features, ((0, 0), (1, 1), (1, 1), (0, 0)))
  table = padded.reshape(p, (h + 2) * (w + 2), c)

  def corner(yy, xx):
    xi = jnp.clip(xx, -1, w).astype(jnp.int32) + 1
    yi = jnp.clip(yy, -1, h).astype(jnp.int32) + 1
    idx = yi * (w + 2) + xi
    return jnp.take_along_axis(table, idx[..., None], axis=1, mode="clip")

  # Weight order and products as in PyTorch's kernel: nw, ne, sw, se.
  out = corner(iy0, ix0) * ((1 - fx) * (1 - fy))[..., None]
  out = out + corner(iy0, ix0 + 1) * (fx * (1 - fy))[..., None]
  out = out + corner(iy0 + 1, ix0) * ((1 - fx) * fy)[..., None]
  out = out + corner(iy0 + 1, ix0 + 1) * (fx * fy)[..., None]
  return out


@jax.custom_vjp
def _unstack_planes(planes):
  """``planes[:, 0], planes[:, 1], ...`` whose cotangent is ONE stack of the per-plane cotangents.

  Autodiff transposes each slice into a zero-padded copy of the whole tri-plane tensor and adds
  those copies up (on CPU, for the renderer's coarse and fine reads of a 256^2 x 96 tri-plane,
  six full-size tensors summed and re-derived by every consumer of the gradient).
  """
  return tuple(planes[:, i] for i in range(planes.shape[1]))


def _unstack_planes_fwd(planes):
  return _unstack_planes(planes), None


def _unstack_planes_bwd(_, cotangents):
  return (jnp.stack(cotangents, axis=1),)


_unstack_planes.defvjp(_unstack_planes_fwd, _unstack_planes_bwd)


def sample_from_planes(planes, coordinates, box_warp: float, plane_axes=PLANE_AXES_EG3D):
  """Tri-plane features at world points (the official ``sample_from_planes``).

  Args:
    planes: [B, 3, H, W, C] tri-plane features.
    coordinates: [B, N, 3] world points.
    box_warp: side length of the cube spanned by the planes.
    plane_axes: world axes read by each plane (default: the official XY, XZ, ZX quirk).
  Returns:
    [B, 3, N, C] bilinear samples per plane (zero outside the cube).
  """
  checks.check_rank(planes, "planes", 5, "[B, 3, H, W, C]")
  checks.check_shape(coordinates, "coordinates", (planes.shape[0], None, 3), "[B, N, 3]")
  b, n_planes, h, w, c = planes.shape
  if n_planes != len(plane_axes):
    raise ValueError(f"planes: expected {len(plane_axes)} planes [B, 3, H, W, C], got {planes.shape}")
  grid = project_to_planes(coordinates, box_warp, plane_axes)  # [B, 3, N, 2]
  # One read per plane, stacked afterwards. Same numbers as one batched read of all B*3 maps, but
  # XLA:CPU turns the decoder's mean over the stacked axis into plain adds of the three reads; over
  # a single batched read it emits a reduction that re-derives every bilinear read inside it (about
  # 3x slower for the whole renderer).
  maps = _unstack_planes(planes)
  return jnp.stack([grid_sample_bilinear(maps[i], grid[:, i]) for i in range(n_planes)], axis=1)
