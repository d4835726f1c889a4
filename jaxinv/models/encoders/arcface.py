"""ArcFace IR-SE Backbone (``Backbone(112, 50, 'ir_se')`` of TreB1eN / pSp ``model_irse.py``).

``ArcFaceBackbone(num_layers=50)``: ``x [B, 112, 112, 3]`` in [-1, 1] -> unit-norm ``[B, 512]``.
Variables (besides ``input_layer``/``body``, see ``jaxinv.nn.irse``): ``output_bn2d`` (BN 512),
``output_dense`` (Dense 25088 -> 512 over a **C,H,W** flatten, as upstream), ``output_bn1d``
(affine BN 512). Dropout (p 0.6) is inactive in the eval-mode network the papers use.
"""
from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxinv.nn.irse import BatchNormInference, IRSEBody, IRSEInputLayer, irse_units_for_depth


def l2_normalize(x: jax.Array, axis: int = -1) -> jax.Array:
  """``x / ||x||`` without an epsilon, like upstream ``l2_norm`` (the embedding is never zero)."""
  return x / jnp.sqrt(jnp.sum(x * x, axis=axis, keepdims=True))


class ArcFaceBackbone(nn.Module):
  """IR-SE ArcFace embedding network (eval mode)."""
  num_layers: int = 50

  @nn.compact
  def __call__(self, x, return_prenorm: bool = False):
    """Args: ``x [B, 112, 112, 3]``. Returns the embedding ``[B, 512]`` (and the pre-norm one)."""
    x = IRSEInputLayer(name="input_layer")(x)
    x = IRSEBody(irse_units_for_depth(self.num_layers), name="body")(x)
    x = BatchNormInference(name="output_bn2d")(x)
    # The published Linear expects torch's C,H,W flatten order.
    x = jnp.transpose(x, (0, 3, 1, 2)).reshape(x.shape[0], -1)
    x = nn.Dense(512, precision=jax.lax.Precision.HIGHEST, name="output_dense")(x)
    pre = BatchNormInference(name="output_bn1d")(x)
    emb = l2_normalize(pre)
    return (emb, pre) if return_prenorm else emb
