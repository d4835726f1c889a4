"""GOAE inversion on an EG3D generator: encoder -> w+, AFA-refined 32x32 features, mixed tri-plane.

The pipeline (``invert``), as GOAE's ``Net.forward``:

1. ``ws = E(x) + w_avg`` (``x`` at the encoder's resolution, 256 for the release).
2. The synthesis network runs up to its 32x32 block, giving the feature map ``F`` (``x`` of
   block ``b32``) and the partial tri-plane image; the rest of the network and the renderer give
   the w-only reconstruction ``planes_w`` / ``image_w`` from the input camera ``c``.
3. ``AFA(x_hr, image_w, F) -> F*`` (FiLM with per-location gamma, beta computed from the
   residual ``image_w - x_hr``); the synthesis continues from ``F*`` to give ``planes_f`` and the
   refined rendering.
4. **Occlusion-aware mixed tri-plane** (``mix_triplanes``): the surface points of the refined
   rendering (``ray_origin + depth * ray_direction`` from the input view) are splatted onto the
   texels of the XY plane (plane 0) they project to; the hit map is Gaussian-blurred (9 taps),
   thresholded at 0.35 and blurred again, giving a soft mask ``m``. Plane 0 becomes
   ``m * planes_f + (1 - m) * planes_w``; planes 1 and 2 (XZ, ZX) are taken from ``planes_f``.
   So refined features are used where the input view saw the surface (in the XY-plane
   footprint), and the generator's own features elsewhere (regions the input image never
   showed, where ``F*`` was not constrained). The mask carries no gradient.
5. ``render`` draws a mixed tri-plane from any camera; ``edit`` applies GOAE's rule
   ``F*_edit = F* + F(w_edit) - F(w)`` (the refinement computed for ``w`` transfers to the edit).

Blur sigmas: upstream uses ``torchvision.transforms.GaussianBlur(9, sigma=(1, 2))``, which draws
each sigma uniformly from [1, 2] on every call. Here ``key`` reproduces that draw; without a key
both sigmas are 1.5 (the middle of the range), so results are deterministic.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from jaxinv import checks

# GOAE's mask constants (``Net.mix_fusion``).
BLUR_TAPS = 9
BLUR_SIGMA_RANGE = (1.0, 2.0)
MASK_THRESHOLD = 0.35


def gaussian_kernel1d(sigma, taps: int = BLUR_TAPS) -> jnp.ndarray:
  """torchvision's kernel: ``exp(-x^2 / (2 sigma^2))`` on ``x = -(taps-1)/2 .. (taps-1)/2``, normalised."""
  half = (taps - 1) * 0.5
  x = jnp.linspace(-half, half, taps, dtype=jnp.float32)
  pdf = jnp.exp(-0.5 * jnp.square(x / jnp.asarray(sigma, jnp.float32)))
  return pdf / jnp.sum(pdf)


def gaussian_blur(mask: jnp.ndarray, sigma, taps: int = BLUR_TAPS) -> jnp.ndarray:
  """Separable Gaussian blur with reflect padding (``torchvision`` ``gaussian_blur``).

  Args:
    mask: ``[B, H, W]``.
    sigma: scalar or ``[B]`` (one sigma per sample).
  Returns:
    ``[B, H, W]``.
  """
  b = mask.shape[0]
  sigma = jnp.broadcast_to(jnp.asarray(sigma, jnp.float32), (b,))
  k = jax.vmap(lambda s: gaussian_kernel1d(s, taps))(sigma)  # [B, taps]
  p = taps // 2
  x = jnp.pad(mask, ((0, 0), (p, p), (p, p)), mode="reflect")
  h, w = mask.shape[1:]
  # Rows, then columns: the outer-product kernel of torchvision factorises exactly.
  rows = sum(k[:, i, None, None] * x[:, i:i + h, :] for i in range(taps))
  return sum(k[:, i, None, None] * rows[:, :, i:i + w] for i in range(taps))


def surface_texels(ray_origins, ray_directions, depth, resolution: int, box_warp: float = 1.0):
  """Hard hit map of the XY plane: 1 on every texel that a rendered surface point falls in.

  Args:
    ray_origins, ray_directions: ``[B, M, 3]`` rays of the input view.
    depth: ``[B, M, 1]`` (or ``[B, M]``) rendered depth along each ray.
    resolution: tri-plane side ``R``.
    box_warp: side of the cube the planes span.
  Returns:
    ``[B, R, R]`` float32 in {0, 1}; row = y texel, column = x texel (the plane-0 layout of
    ``jaxinv.render.triplane``: grid-x reads world x, grid-y world y).

  Texel of a point: ``floor(clip((v / box_warp + 1/2) * R, 0, R - 1))``, the upstream formula
  (``(v + 0.5) * 256`` for box_warp 1, R 256); points outside the cube land on the border texels,
  as upstream.
  """
  b, m, _ = ray_origins.shape
  depth = jnp.reshape(depth, (b, m, 1))
  xyz = ray_origins + depth * ray_directions
  idx = jnp.clip((xyz[..., :2] / box_warp + 0.5) * resolution, 0, resolution - 1)
  idx = jnp.floor(idx).astype(jnp.int32)
  col, row = idx[..., 0], idx[..., 1]
  bidx = jnp.broadcast_to(jnp.arange(b)[:, None], (b, m))
  return jnp.zeros((b, resolution, resolution), jnp.float32).at[bidx, row, col].set(1.0)


def blur_sigmas(key, batch: int) -> jnp.ndarray:
  """Per-sample sigmas of the two blurs, ``[2, B]``: uniform in [1, 2] (key) like upstream."""
  return jax.random.uniform(key, (2, batch), minval=BLUR_SIGMA_RANGE[0],
                            maxval=BLUR_SIGMA_RANGE[1])


def visibility_mask(ray_origins, ray_directions, depth, resolution: int, box_warp: float = 1.0,
                    *, key=None, sigmas=None) -> jnp.ndarray:
  """GOAE's soft visibility mask on the XY plane, ``[B, R, R]`` in [0, 1] (no gradient).

  Args:
    ray_origins, ray_directions, depth: the input view's rays and rendered depth (see
      ``surface_texels``).
    resolution, box_warp: tri-plane side and cube size.
    key: draws the two blur sigmas uniformly in [1, 2] per sample, as upstream.
    sigmas: explicit ``(sigma_1, sigma_2)`` (scalars or ``[B]``); default 1.5 each.
  """
  b = ray_origins.shape[0]
  if sigmas is None:
    sigmas = blur_sigmas(key, b) if key is not None else (1.5, 1.5)
  hit = surface_texels(ray_origins, ray_directions, jax.lax.stop_gradient(depth), resolution,
                       box_warp)
  soft = gaussian_blur(hit, sigmas[0])
  solid = (soft > MASK_THRESHOLD).astype(jnp.float32)
  return jax.lax.stop_gradient(gaussian_blur(solid, sigmas[1]))


def mix_triplanes(planes_f, planes_w, mask):
  """Occlusion-aware mix: plane 0 blended by ``mask``, planes 1-2 from ``planes_f``.

  Args:
    planes_f: ``[B, 3, R, R, C]`` refined (AFA) tri-plane.
    planes_w: ``[B, 3, R, R, C]`` w-only tri-plane.
    mask: ``[B, R, R]`` visibility of the XY-plane texels.
  Returns:
    ``[B, 3, R, R, C]``.
  """
  checks.check_rank(planes_f, "planes_f", 5, "[B, 3, H, W, C]")
  checks.check_shape(planes_w, "planes_w", planes_f.shape, "[B, 3, H, W, C]")
  checks.check_shape(mask, "mask", planes_f.shape[:1] + planes_f.shape[2:4], "[B, H, W]")
  m = mask[..., None]
  plane0 = m * planes_f[:, 0] + (1.0 - m) * planes_w[:, 0]
  return jnp.concatenate([plane0[:, None], planes_f[:, 1:]], axis=1)
