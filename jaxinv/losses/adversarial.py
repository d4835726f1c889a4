"""GAN and latent-regulariser pieces (GOAE's latent discriminator, ZIGNeRF, PREIM3D), pure functions.

Logits are raw discriminator outputs (no sigmoid). Losses are batch means.
"""
from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp

from jaxinv.checks import check_rank


def d_logistic_loss(real_logits: jax.Array, fake_logits: jax.Array) -> jax.Array:
  """Non-saturating discriminator loss ``-log D(real) - log(1 - D(fake))`` = softplus form."""
  return jnp.mean(jax.nn.softplus(-real_logits)) + jnp.mean(jax.nn.softplus(fake_logits))


def g_nonsaturating_loss(fake_logits: jax.Array) -> jax.Array:
  """Non-saturating generator/encoder loss ``-log D(fake)`` (GOAE eq. 3)."""
  return jnp.mean(jax.nn.softplus(-fake_logits))


def r1_penalty(d_fn: Callable[[jax.Array], jax.Array], real: jax.Array) -> jax.Array:
  """R1: ``mean_b ||grad_x D(x_b)||^2`` on real samples (multiply by ``gamma / 2`` outside).

  ``d_fn`` maps a batch to per-sample logits; the gradient of their sum gives every sample's own
  gradient because samples do not interact.
  """
  g = jax.grad(lambda x: jnp.sum(d_fn(x)))(real)
  return jnp.mean(jnp.sum(jnp.square(g).reshape(g.shape[0], -1), axis=1))


def smooth_l1(x: jax.Array, y: jax.Array, beta: float = 1.0) -> jax.Array:
  """``torch.nn.functional.smooth_l1_loss`` (mean): quadratic below ``beta``, linear above."""
  d = jnp.abs(x - y)
  if beta == 0:
    return jnp.mean(d)
  return jnp.mean(jnp.where(d < beta, 0.5 * d * d / beta, d - 0.5 * beta))


def delta_w_plus_reg(ws: jax.Array) -> jax.Array:
  """GOAE's ``||Delta w+||_2`` with ``Delta w+ = (w_1 - w_0, ..., w_{N-1} - w_0)``.

  Read as e4e's delta regulariser (GOAE ships no training code): the per-sample L2 norm of each
  ``w_i - w_0``, averaged over the batch and summed over ``i``. GOAE weights it by 0.001.

  Args:
    ws: ``[B, N, 512]``.
  """
  check_rank(ws, "ws", 3, "[B, N, 512]")
  delta = ws[:, 1:, :] - ws[:, :1, :]
  sq = jnp.sum(delta * delta, axis=-1)
  # sqrt with a zero (not NaN) gradient at delta = 0 (e.g. an encoder that starts from w_0).
  pos = sq > 0
  norms = jnp.where(pos, jnp.sqrt(jnp.where(pos, sq, 1.0)), 0.0)
  return jnp.sum(jnp.mean(norms, axis=0))


def latent_regression_loss(w_pred: jax.Array, w_true: jax.Array, reduction: str = "mean") -> jax.Array:
  """PREIM3D's latent regression ``E_w ||w - E(G(w, c))||_2^2`` (its eq. 4).

  ``reduction='mean'`` (default) is what PREIM3D's code computes (``F.mse_loss``: mean over every
  entry, i.e. eq. 4 divided by the latent size); ``'sum'`` is eq. 4 literally (sum over the
  latent entries, mean over the batch).
  """
  if w_pred.shape != w_true.shape:
    raise ValueError(f"w_pred {w_pred.shape} and w_true {w_true.shape} must have the same shape")
  d = (w_pred - w_true).reshape(w_pred.shape[0], -1)
  if reduction == "mean":
    return jnp.mean(d * d)
  if reduction == "sum":
    return jnp.mean(jnp.sum(d * d, axis=1))
  raise ValueError(f"reduction must be 'mean' or 'sum', got {reduction!r}")


def feature_delta_reg(f_new: jax.Array, f_old: jax.Array) -> jax.Array:
  """GOAE's AFA regulariser ``||Delta F||_2`` with ``Delta F = F* - F`` (per-sample norm, batch mean)."""
  d = (f_new - f_old).reshape(f_new.shape[0], -1)
  sq = jnp.sum(d * d, axis=1)
  pos = sq > 0
  return jnp.mean(jnp.where(pos, jnp.sqrt(jnp.where(pos, sq, 1.0)), 0.0))
