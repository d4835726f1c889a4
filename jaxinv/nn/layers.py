"""Equalized-learning-rate building blocks shared by the StyleGAN2-family networks.

Parameters are stored *raw*, exactly as the official checkpoints hold them; the runtime gains
(``lr_multiplier / sqrt(fan_in)`` for weights, ``lr_multiplier`` for biases) are applied at call
time, so converted weights need no rescaling and optimisers see the official parametrisation.
"""
from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from jaxinv.ops.bias_act import bias_act

HIGHEST = jax.lax.Precision.HIGHEST


def _normal_init(scale: float):
  def init(key, shape, dtype=jnp.float32):
    return jax.random.normal(key, shape, dtype) * scale
  return init


class FullyConnectedLayer(nn.Module):
  """StyleGAN2 ``FullyConnectedLayer``: ``act(x @ (W * wg) + b * bg)``.

  Params: ``weight [in, out]`` (PyTorch's ``[out, in]`` transposed), ``bias [out]``.

  Attributes:
    in_features, out_features: sizes.
    activation: a ``bias_act`` activation name.
    lr_multiplier: equalized-lr multiplier (0.01 in the mapping network).
    bias_init: initial bias value (1 for style affines, so styles start at 1).
    use_bias: whether there is a bias.
  """
  in_features: int
  out_features: int
  activation: str = "linear"
  lr_multiplier: float = 1.0
  bias_init: float = 0.0
  use_bias: bool = True

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    """x: [..., in_features] -> [..., out_features]."""
    w = self.param("weight", _normal_init(1.0 / self.lr_multiplier),
                   (self.in_features, self.out_features))
    weight_gain = self.lr_multiplier / np.sqrt(self.in_features)
    y = jnp.matmul(x, w * jnp.asarray(weight_gain, x.dtype), precision=HIGHEST)
    b = None
    if self.use_bias:
      b = self.param("bias", nn.initializers.constant(self.bias_init), (self.out_features,))
      if self.lr_multiplier != 1:
        b = b * jnp.asarray(self.lr_multiplier, b.dtype)
    return bias_act(y, b, act=self.activation)


def normalize_2nd_moment(x: jax.Array, axis: int = 1, eps: float = 1e-8) -> jax.Array:
  """``x / sqrt(mean(x^2) + eps)`` along ``axis``."""
  return x * jax.lax.rsqrt(jnp.mean(jnp.square(x), axis=axis, keepdims=True) + eps)
