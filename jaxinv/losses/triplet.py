"""NeRF-3DE's latent terms: the triplet loss on the base code and the L1 pull to the true latent.

NeRF-3DE (its section 3.3) renders one latent ``w_syn`` from several cameras; the base encoder's
codes of two views of the same latent must be closer than codes of different latents:

* eq. 5: ``d_pos = ||w_a - w_p||_2``, ``d_neg = ||w_a - w_n||_2``
* eq. 6: ``L_tri = max(0, m + d_pos - d_neg)`` with a margin ``m > 0`` (the paper gives no value)
* eq. 7: ``L_feat^base = L_tri(w_base) + L1(w_base, w_syn)``; eq. 11: ``L_feat^ref = L1(w_ref+, w_syn+)``

Codes are ``[B, D]`` (one w) or ``[B, N, D]`` (w+); the distance is the Euclidean norm over all
latent entries of one sample. Losses are batch means. ``normalize=True`` L2-normalises the codes
before the distances (RECIPES 4.6's alternative for an unnormalised W, margin ~0.2 then).
"""
from __future__ import annotations

from typing import Literal

import jax
import jax.numpy as jnp

Mining = Literal["hard", "all"]


def _flat(w: jax.Array) -> jax.Array:
  return w.reshape(w.shape[0], -1)


def _safe_norm(d: jax.Array) -> jax.Array:
  """``||d||_2`` over the last axis with a zero (not NaN) gradient at ``d = 0``."""
  sq = jnp.sum(d * d, axis=-1)
  pos = sq > 0
  return jnp.where(pos, jnp.sqrt(jnp.where(pos, sq, 1.0)), 0.0)


def _maybe_normalize(w: jax.Array, normalize: bool) -> jax.Array:
  w = _flat(w)
  if not normalize:
    return w
  return w / jnp.maximum(_safe_norm(w), 1e-12)[:, None]


def triplet_loss(anchor: jax.Array, positive: jax.Array, negative: jax.Array, margin: float,
                 normalize: bool = False) -> jax.Array:
  """NeRF-3DE eq. 6, ``mean_b max(0, m + ||a_b - p_b||_2 - ||a_b - n_b||_2)``.

  Args:
    anchor, positive, negative: codes ``[B, D]`` or ``[B, N, D]`` (same shape).
    margin: ``m`` (> 0 in the paper; 0 is allowed here).
    normalize: L2-normalise each code (over all its entries) first.
  """
  if not (anchor.shape == positive.shape == negative.shape):
    raise ValueError(f"triplet_loss: anchor {anchor.shape}, positive {positive.shape} and "
                     f"negative {negative.shape} must have the same shape")
  if margin < 0:
    raise ValueError(f"triplet_loss: margin must be >= 0, got {margin}")
  a, p, n = (_maybe_normalize(w, normalize) for w in (anchor, positive, negative))
  d_pos = _safe_norm(a - p)
  d_neg = _safe_norm(a - n)
  return jnp.mean(jnp.maximum(0.0, margin + d_pos - d_neg))


def pairwise_distances(w: jax.Array, normalize: bool = False) -> jax.Array:
  """``D[i, j] = ||w_i - w_j||_2`` for codes ``[B, ...]`` -> ``[B, B]`` (zero diagonal)."""
  f = _maybe_normalize(w, normalize)
  return _safe_norm(f[:, None, :] - f[None, :, :])


def batch_triplet_loss(w: jax.Array, identity: jax.Array, margin: float, mining: Mining = "hard",
                       normalize: bool = False) -> jax.Array:
  """Eq. 6 over every anchor of a batch of ``B`` identities x ``V`` views.

  Every sample is an anchor; its positives are the other samples with the same ``identity``
  label, its negatives the samples with another label.

  * ``mining='hard'`` (batch-hard): per anchor, the farthest positive and the closest negative,
    ``mean_a max(0, m + max_p d(a, p) - min_n d(a, n))``.
  * ``mining='all'``: the mean of ``max(0, m + d(a, p) - d(a, n))`` over every valid
    (anchor, positive, negative) triple.

  Args:
    w: codes ``[B, D]`` or ``[B, N, D]``.
    identity: integer labels ``[B]``; every label needs >= 2 samples and >= 2 distinct labels.
    margin: ``m``.
  """
  if identity.shape != (w.shape[0],):
    raise ValueError(f"batch_triplet_loss: identity must be [B] = [{w.shape[0]}], got {identity.shape}")
  if mining not in ("hard", "all"):
    raise ValueError(f"mining must be 'hard' or 'all', got {mining!r}")
  d = pairwise_distances(w, normalize)
  same = identity[:, None] == identity[None, :]
  eye = jnp.eye(w.shape[0], dtype=bool)
  pos_mask = same & ~eye
  neg_mask = ~same
  if mining == "hard":
    hardest_pos = jnp.max(jnp.where(pos_mask, d, -jnp.inf), axis=1)
    hardest_neg = jnp.min(jnp.where(neg_mask, d, jnp.inf), axis=1)
    return jnp.mean(jnp.maximum(0.0, margin + hardest_pos - hardest_neg))
  # all triples (a, p, n): [B, B, B] hinge, masked.
  hinge = jnp.maximum(0.0, margin + d[:, :, None] - d[:, None, :])
  valid = pos_mask[:, :, None] & neg_mask[:, None, :]
  return jnp.sum(jnp.where(valid, hinge, 0.0)) / jnp.maximum(jnp.sum(valid), 1)


def latent_l1(w_pred: jax.Array, w_true: jax.Array) -> jax.Array:
  """NeRF-3DE's ``L1(w, w_syn)`` (eqs. 7 and 11): the mean absolute difference over all entries.

  ``w_pred [B, D]`` may be compared with ``w_true [B, N, D]`` (the one-w base code against the
  w+ target): it is broadcast over the ``N`` rows then.
  """
  if w_pred.ndim == 2 and w_true.ndim == 3:
    w_pred = w_pred[:, None, :]
  if w_pred.shape != w_true.shape and not (w_pred.shape[1] == 1 and w_pred.ndim == 3):
    raise ValueError(f"latent_l1: w_pred {w_pred.shape} and w_true {w_true.shape} do not match")
  return jnp.mean(jnp.abs(w_pred - w_true))
