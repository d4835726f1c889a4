"""TriPlaneNet's per-branch training loss (Bhattarai et al., WACV 2024, eqs. 11-13 and 15).

Both branches minimise the same construction; only the pixel distance differs::

  L_branch = L_rec(x, y) + lambda_m * L_m(x_m, y_m)                                     (eq. 11)
  L_rec    = l1 * D(x, y) + l2 * LPIPS(x, y) + l3 * L_id(x, y)                          (eq. 12)
  L_m      = l4 * L_symm(x_m, y_m, sigma(x_m)) + l5 * LPIPS(x_m, y_m) + l6 * L_id(x_m, y_m)   (eq. 13)
  L_symm   = mean_uv D_uv(x_m, y_m) / (sigma_uv + eps)                                  (eq. 15)

* branch 1 (pSp, ``y = y_hat``): ``D`` is the squared error (``F.mse_loss``: mean over entries);
* branch 2 (tri-plane offsets, ``y`` = the offset render): ``D`` is smooth-L1 (``F.smooth_l1_loss``,
  ``beta = 1``), also inside ``L_symm`` -- the "smooth-L1 branch loss".

``x_m = flip(x)`` is the mirrored input and ``y_m`` the render at the mirrored camera. ``sigma`` is
the uncertainty map ``[B, H, W, 1]`` (``None``: ones, i.e. plain symmetry). Paper weights:
``l1 = l2 = 1, l3 = 0.1, lambda_m = 0.1, l4 = l5 = 1, l6 = 0.1``; TriPlaneNet's v2 code uses LPIPS
0.8 everywhere and ``eps = 1`` (optionally normalised, see :func:`jaxinv.losses.symmetry.symmetry_loss`).

The perceptual networks are passed in as functions (``lpips_fn(pred, target) -> scalar``,
``id_fn(pred, target) -> scalar``), so this module holds no weights; ``None`` switches a term off.
"""
from __future__ import annotations

import dataclasses
from typing import Callable, Literal, Optional

import jax
import jax.numpy as jnp

from jaxinv.losses.adversarial import smooth_l1
from jaxinv.losses.symmetry import symmetry_loss

Pixel = Literal["l2", "smooth_l1"]
PairLoss = Callable[[jax.Array, jax.Array], jax.Array]


@dataclasses.dataclass(frozen=True)
class BranchWeights:
  """The lambdas of eqs. 11-13 (defaults: the paper's)."""
  pixel: float = 1.0          # lambda_1: L2 (branch 1) / smooth-L1 (branch 2)
  lpips: float = 1.0          # lambda_2 (v2 code: 0.8)
  id: float = 0.1             # lambda_3
  mirror: float = 0.1         # lambda_m (0 switches the whole mirror term off)
  symmetry: float = 1.0       # lambda_4
  lpips_mirror: float = 1.0   # lambda_5 (v2 code: 0.8)
  id_mirror: float = 0.1      # lambda_6


def pixel_loss(x: jax.Array, y: jax.Array, pixel: Pixel) -> jax.Array:
  """``mean((x - y)^2)`` (``'l2'``) or ``smooth_l1(x, y, beta=1)`` (``'smooth_l1'``)."""
  if pixel == "l2":
    return jnp.mean(jnp.square(x - y))
  if pixel == "smooth_l1":
    return smooth_l1(y, x)
  raise ValueError(f"pixel must be 'l2' or 'smooth_l1', got {pixel!r}")


def branch_loss(x: jax.Array, y: jax.Array, x_m: Optional[jax.Array], y_m: Optional[jax.Array],
                sigma: Optional[jax.Array] = None, *, weights: BranchWeights = BranchWeights(),
                pixel: Pixel = "l2", lpips_fn: Optional[PairLoss] = None,
                id_fn: Optional[PairLoss] = None, symmetry_eps: float = 1e-7,
                normalize_symmetry: bool = False) -> tuple[jax.Array, dict]:
  """Eq. 11 for one branch.

  Args:
    x: input images ``[B, H, W, 3]`` (the target), ``y`` the branch's render at the input camera.
    x_m, y_m: mirrored input and the render at the mirrored camera (``None`` with
      ``weights.mirror == 0``).
    sigma: ``[B, H, W, 1]`` uncertainty of ``x_m`` (``None``: ones).
    pixel: ``'l2'`` (branch 1) or ``'smooth_l1'`` (branch 2).
    lpips_fn, id_fn: ``(pred, target) -> scalar`` or ``None`` (term off, not reported).
    symmetry_eps, normalize_symmetry: see ``symmetry_loss`` (paper: tiny eps; code: 1, opt. norm).

  Returns:
    ``(total, terms)`` with the unweighted terms ``pixel``, ``lpips``, ``id`` and, with the mirror
    term on, ``symmetry``, ``lpips_mirror``, ``id_mirror``.
  """
  terms = {"pixel": pixel_loss(x, y, pixel)}
  total = weights.pixel * terms["pixel"]
  if lpips_fn is not None:
    terms["lpips"] = lpips_fn(y, x)
    total = total + weights.lpips * terms["lpips"]
  if id_fn is not None:
    terms["id"] = id_fn(y, x)
    total = total + weights.id * terms["id"]
  if weights.mirror:
    if x_m is None or y_m is None:
      raise ValueError("branch_loss: the mirror term needs x_m and y_m (or weights.mirror = 0)")
    if sigma is None:
      sigma = jnp.ones(x_m.shape[:3] + (1,), x_m.dtype)
    terms["symmetry"] = symmetry_loss(x_m, y_m, sigma, pixel, eps=symmetry_eps,
                                      normalize=normalize_symmetry)
    mirror = weights.symmetry * terms["symmetry"]
    if lpips_fn is not None:
      terms["lpips_mirror"] = lpips_fn(y_m, x_m)
      mirror = mirror + weights.lpips_mirror * terms["lpips_mirror"]
    if id_fn is not None:
      terms["id_mirror"] = id_fn(y_m, x_m)
      mirror = mirror + weights.id_mirror * terms["id_mirror"]
    total = total + weights.mirror * mirror
  return total, terms
