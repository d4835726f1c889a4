"""Identity loss and ID-similarity metric with the ArcFace IR-SE-50 network.

The papers (pSp, e4e, TriPlaneNet, PREIM3D, GOAE) all call pSp's ``IDLoss``:

* **pSp path** (``crop="psp"``): a 256x256 image, crop rows 35:223 and columns 32:220 (a 188x188
  face box), ``AdaptiveAvgPool2d((112, 112))`` -- overlapping averaging windows, not a resize --,
  then the embedding.
* **EG3D-crop path** (``crop="none"``, PREIM3D): EG3D renders are already face-aligned, so the crop
  is skipped and the whole image is adaptively pooled to 112x112.

Loss: ``mean_b (1 - <F(y_hat_b), F(y_b)>)`` with the target embedding held constant
(``stop_gradient``, like pSp's ``detach``). The embeddings are unit-norm, so the dot product is
the cosine similarity.

All functions take the ArcFace ``variables`` as an argument (never closed over) and images NHWC
float32 in [-1, 1].
"""
from __future__ import annotations

from typing import Literal

import jax
import jax.numpy as jnp

from jaxinv.checks import check_image, check_rank
from jaxinv.models.encoders.arcface import ArcFaceBackbone
from jaxinv.ops.pooling import adaptive_avg_pool2d

Crop = Literal["psp", "none"]
_ARCFACE = ArcFaceBackbone(num_layers=50)
ARCFACE_SIZE = 112
PSP_SIZE = 256


def psp_id_preprocess(x: jax.Array) -> jax.Array:
  """pSp ``IDLoss.extract_feats``: ``x [B,256,256,3] -> [B,112,112,3]`` (crop, adaptive pool)."""
  if x.shape[1:3] != (PSP_SIZE, PSP_SIZE):
    raise ValueError(f"the pSp identity crop expects 256x256 images, got {tuple(x.shape[1:3])} "
                     "(resize first, or use crop='none' for EG3D-aligned renders)")
  return adaptive_avg_pool2d(x[:, 35:223, 32:220, :], ARCFACE_SIZE)


def eg3d_id_preprocess(x: jax.Array) -> jax.Array:
  """PREIM3D's variant: no crop, adaptive average pool of the whole image to 112x112."""
  return adaptive_avg_pool2d(x, ARCFACE_SIZE)


def id_preprocess(x: jax.Array, crop: Crop = "psp") -> jax.Array:
  if crop == "psp":
    return psp_id_preprocess(x)
  if crop == "none":
    return eg3d_id_preprocess(x)
  raise ValueError(f"crop must be 'psp' or 'none', got {crop!r}")


def id_embed(variables, images: jax.Array, crop: Crop = "psp") -> jax.Array:
  """Unit-norm ArcFace embeddings ``[B, 512]`` of ``images [B, H, W, 3]`` in [-1, 1]."""
  check_image(images, "images")
  return _ARCFACE.apply(variables, id_preprocess(images, crop))


def id_loss_from_embeddings(emb_pred: jax.Array, emb_target: jax.Array) -> jax.Array:
  """``mean_b (1 - <pred_b, target_b>)``; the target side gets no gradient (pSp ``detach``).

  Args:
    emb_pred, emb_target: ``[B, 512]`` unit-norm embeddings.
  """
  check_rank(emb_pred, "emb_pred", 2, "[B, 512]")
  if emb_pred.shape != emb_target.shape:
    raise ValueError(f"embedding shapes differ: {emb_pred.shape} vs {emb_target.shape}")
  cos = jnp.sum(emb_pred * jax.lax.stop_gradient(emb_target), axis=-1)
  return jnp.mean(1.0 - cos)


def id_loss(variables, y_hat: jax.Array, y: jax.Array, crop: Crop = "psp") -> jax.Array:
  """pSp identity loss between reconstructions ``y_hat`` and targets ``y`` (both ``[B,H,W,3]``).

  Returns a scalar: the batch mean of ``1 - cos(F(y_hat), F(y))``. One ArcFace pass over the
  concatenated batch (same result as two passes: the network is per-sample).
  """
  check_image(y_hat, "y_hat")
  check_image(y, "y")
  if y_hat.shape != y.shape:
    raise ValueError(f"y_hat {y_hat.shape} and y {y.shape} must have the same shape")
  b = y.shape[0]
  emb = id_embed(variables, jnp.concatenate([y_hat, y], axis=0), crop)
  return id_loss_from_embeddings(emb[:b], emb[b:])


def multi_view_id_loss(variables, y: jax.Array, y_hat: jax.Array, y_hat_views: jax.Array,
                       lambda_ori: float = 1.0, lambda_sur: float = 1.0,
                       crop: Crop = "none") -> jax.Array:
  """PREIM3D's multi-view identity loss (its eq. 6).

  ``lambda_ori * L_ID(y, y_hat) + lambda_sur * mean_i L_ID(y, y_hat_views[:, i])``, where each
  ``L_ID`` is the batch-mean ``1 - cos`` of ``id_loss``. PREIM3D samples N = 4 surrounding views
  (yaw in [-20, 20] deg, pitch in [-5, 5] deg) and uses its EG3D-crop path (``crop="none"``);
  its code averages over the flattened ``[B*N]`` views, which equals the mean over ``i`` here.

  Args:
    y: input images ``[B, H, W, 3]`` (target identity; no gradient).
    y_hat: reconstruction at the input camera ``[B, H, W, 3]``.
    y_hat_views: renders at the surrounding cameras ``[B, N, H, W, 3]``.
  """
  check_rank(y_hat_views, "y_hat_views", 5, "[B, N, H, W, 3]")
  b, n = y_hat_views.shape[:2]
  if y_hat_views.shape[2:] != y.shape[1:] or y_hat_views.shape[0] != y.shape[0]:
    raise ValueError(f"y_hat_views {y_hat_views.shape} does not fit y {y.shape} as [B, N, H, W, 3]")
  views = y_hat_views.reshape((b * n,) + y.shape[1:])
  emb = id_embed(variables, jnp.concatenate([y, y_hat, views], axis=0), crop)
  e_y, e_hat, e_views = emb[:b], emb[b:2 * b], emb[2 * b:].reshape(b, n, -1)
  ori = id_loss_from_embeddings(e_hat, e_y)
  sur = jnp.mean(1.0 - jnp.sum(e_views * jax.lax.stop_gradient(e_y)[:, None, :], axis=-1))
  return lambda_ori * ori + lambda_sur * sur


def id_similarity(variables, a: jax.Array, b: jax.Array, crop: Crop = "psp") -> jax.Array:
  """ID metric: per-pair ArcFace cosine similarity ``[B]`` of images ``a`` and ``b``.

  The papers report its mean over a test set (higher is better; 1 = same embedding).
  """
  check_image(a, "a")
  check_image(b, "b")
  if a.shape[0] != b.shape[0]:
    raise ValueError(f"a and b need the same batch size, got {a.shape[0]} and {b.shape[0]}")
  ea = id_embed(variables, a, crop)
  eb = id_embed(variables, b, crop)
  return jnp.sum(ea * eb, axis=-1)
