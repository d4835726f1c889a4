"""GOAE's training losses (paper §4.1, §4.5), pure functions of arrays and a discriminator function.

Notation: ``w+ = [w_0, ..., w_{N-1}]`` (``ws [B, N, w_dim]``), ``w_c = mapping(z, c_front)`` the
"real" canonical codes, ``D`` the canonical latent discriminator (a function of one code,
``[M, w_dim] -> [M]`` raw logits), ``D_avg`` the average canonical background depth.

============================  ====================================================  =========
term                          equation                                              weight
============================  ====================================================  =========
latent D (eq. 2)              ``softplus(-D(w_c)) + softplus(D(w_i)) + g/2 |dD/dw_c|^2``  1, g=10
encoder adversarial (eq. 3)   ``softplus(-D(w_i))``  (``-log sigmoid = softplus(-x)``)   0.05
background depth (eq. 4)      ``|| D (.) M - D_avg (.) M ||_2``                      5.0
w+ delta (§4.5)               ``sum_i || w_i - w_0 ||_2``                            0.001
feature delta (stage 2)       ``|| F* - F ||_2``                                     1e-4
============================  ====================================================  =========

Means run over the batch (and, for ``w_i``, over the entries ``i``). Eq. 2 prints the R1 term as a
plain gradient norm; here it is the standard squared norm ``||grad||^2`` (R1 of Mescheder et
al., which the paper cites), as ``RECIPES.md`` 1.8.2 decides.
"""
from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp

from jaxinv.checks import check_rank
from jaxinv.losses.adversarial import (d_logistic_loss, delta_w_plus_reg, feature_delta_reg,
                                       g_nonsaturating_loss, r1_penalty)

LatentD = Callable[[jax.Array], jax.Array]   # [M, w_dim] -> [M] logits

R1_GAMMA = 10.0

__all__ = [
    "R1_GAMMA", "latent_entries", "latent_d_loss", "latent_d_r1", "latent_d_loss_with_r1",
    "encoder_adv_loss", "background_mask", "background_depth_loss",
    "background_depth_sums", "w_plus_delta_loss", "feature_delta_loss",
]


def latent_entries(ws: jax.Array) -> jax.Array:
  """Every entry ``w_i`` of ``ws [B, N, w_dim]`` as its own sample: ``[B * N, w_dim]``."""
  check_rank(ws, "ws", 3, "[B, N, w_dim]")
  return ws.reshape(-1, ws.shape[-1])


def latent_d_loss(d_fn: LatentD, real_w: jax.Array, fake_ws: jax.Array) -> jax.Array:
  """Eq. 2 without R1: ``E[softplus(-D(w_c))] + E_{b,i}[softplus(D(w_i))]``.

  ``-log D`` with ``D = sigmoid(logit)`` is ``softplus(-logit)``; ``-log(1 - D)`` is
  ``softplus(logit)``.

  Args:
    d_fn: the latent discriminator, ``[M, w_dim] -> [M]``.
    real_w: ``[B, w_dim]`` canonical codes ``w_c`` (one row of ``mapping(z, c_front)``; all its
      rows are equal without truncation cutoff).
    fake_ws: ``[B, N, w_dim]`` the encoder's ``w+``; each entry ``w_i`` is a fake sample.
  """
  check_rank(real_w, "real_w", 2, "[B, w_dim]")
  return d_logistic_loss(d_fn(real_w), d_fn(latent_entries(fake_ws)))


def latent_d_r1(d_fn: LatentD, real_w: jax.Array, gamma: float = R1_GAMMA) -> jax.Array:
  """Eq. 2's R1 term, squared: ``gamma / 2 * E_b ||grad_w D(w_c,b)||_2^2``."""
  check_rank(real_w, "real_w", 2, "[B, w_dim]")
  return 0.5 * gamma * r1_penalty(d_fn, real_w)


def latent_d_loss_with_r1(d_fn: LatentD, real_w: jax.Array, fake_ws: jax.Array,
                          gamma: float = R1_GAMMA) -> jax.Array:
  """Eq. 2 in full (R1 squared): :func:`latent_d_loss` + :func:`latent_d_r1`."""
  return latent_d_loss(d_fn, real_w, fake_ws) + latent_d_r1(d_fn, real_w, gamma)


def encoder_adv_loss(d_fn: LatentD, ws: jax.Array) -> jax.Array:
  """Eq. 3: ``E_{b,i}[-log D(w_i)] = E_{b,i}[softplus(-D(w_i))]`` over every entry of ``w+``."""
  return g_nonsaturating_loss(d_fn(latent_entries(ws)))


def background_mask(weights_sum: jax.Array, threshold: float = 0.5) -> jax.Array:
  """The background mask ``M`` from the generator's own opacity (no gradient).

  GOAE takes ``M`` from a face parser run on the front-view render. Without a parser, the
  generator itself says where its volume is (nearly) empty: ``M = 1[weights_sum < threshold]``,
  ``weights_sum`` being the accumulated opacity ``sum_i T_i alpha_i`` of each ray. It is binary
  like the parser's mask and, like it, carries no gradient (the term moves the depth, not the
  mask).

  Args:
    weights_sum: ``[B, R, R, 1]`` the render's accumulated opacity.
  Returns:
    ``[B, R, R, 1]`` float32 in {0, 1}.
  """
  return jax.lax.stop_gradient((weights_sum < threshold).astype(jnp.float32))


def _safe_norm(x: jax.Array) -> jax.Array:
  """Per-sample L2 norm of ``x [B, ...]`` with a zero (not NaN) gradient at 0."""
  sq = jnp.sum(jnp.square(x.reshape(x.shape[0], -1)), axis=1)
  pos = sq > 0
  return jnp.where(pos, jnp.sqrt(jnp.where(pos, sq, 1.0)), 0.0)


def background_depth_loss(depth: jax.Array, mask: jax.Array, d_avg, squared: bool = False
                          ) -> jax.Array:
  """Eq. 4: ``L_BG = || D (.) M - D_avg (.) M ||_2`` (per sample; batch mean).

  Args:
    depth: ``[B, R, R, 1]`` depth of the inverted code rendered from the canonical (front) view.
    mask: ``[B, R, R, 1]`` background mask ``M`` (1 = background), see :func:`background_mask`.
    d_avg: scalar (or broadcastable to ``depth``) average canonical background depth.
    squared: ``|| . ||_2^2 / #pixels`` (an MSE over the masked pixels' map) instead of the paper's
      plain norm; the norm is what eq. 4 prints.
  Returns:
    scalar.
  """
  check_rank(depth, "depth", 4, "[B, R, R, 1]")
  r = (depth - d_avg) * mask
  if squared:
    return jnp.mean(jnp.square(r))
  return jnp.mean(_safe_norm(r))


def background_depth_sums(depth: jax.Array, mask: jax.Array) -> tuple[jax.Array, jax.Array]:
  """``(sum D (.) M, sum M)`` of a batch: ``D_avg`` = total of the first / total of the second.

  Accumulated over many canonical samples these give the paper's ``D_avg``, the mean depth of
  all background pixels (a pixel-weighted mean, not a mean of per-image means).
  """
  return jnp.sum(depth * mask), jnp.sum(mask)


def w_plus_delta_loss(ws: jax.Array) -> jax.Array:
  """``L_w+ = sum_{i>=1} E_b || w_i - w_0 ||_2`` (§4.5); see ``delta_w_plus_reg``."""
  return delta_w_plus_reg(ws)


def feature_delta_loss(f_new: jax.Array, f_old: jax.Array) -> jax.Array:
  """Stage 2: ``L_dF = || F* - F ||_2`` per sample, batch mean; see ``feature_delta_reg``."""
  return feature_delta_reg(f_new, f_old)
