"""Discriminators used by the training tasks.

``LatentDiscriminator`` is e4e's ``LatentCodesDiscriminator``: an MLP on single latent codes
``w [B, 512] -> logits [B]``, ``num_layers`` x (Linear(512, 512) + LeakyReLU(0.2)) then
Linear(512, 1). e4e uses ``num_layers=4``; the e4e, PREIM3D (code) and GOAE tasks train it with
the non-saturating loss and lazy R1 (``jaxinv.losses.adversarial``). Linear layers are plain
(PyTorch-default init: U(+-1/sqrt(fan_in)) for weights and biases).
"""
from __future__ import annotations

import math

import flax.linen as nn
import jax
import jax.numpy as jnp


def _torch_uniform(fan_in: int):
  bound = 1.0 / math.sqrt(fan_in)
  return lambda key, shape, dtype=jnp.float32: jax.random.uniform(key, shape, dtype, -bound, bound)


class LatentDiscriminator(nn.Module):
  """``w [B, style_dim] -> logits [B]`` (e4e ``LatentCodesDiscriminator(style_dim, n_mlp)``).

  Params: ``linear_{i}/{kernel [in, out], bias [out]}`` for ``i < num_layers`` and ``out``.
  """
  style_dim: int = 512
  num_layers: int = 4

  @nn.compact
  def __call__(self, w):
    if w.ndim != 2:
      raise ValueError(f"LatentDiscriminator: expected w [B, {self.style_dim}], got {w.shape}")
    x = w
    for i in range(self.num_layers):
      d = x.shape[-1]
      x = nn.Dense(self.style_dim, kernel_init=_torch_uniform(d), bias_init=_torch_uniform(d),
                   precision=jax.lax.Precision.HIGHEST, name=f"linear_{i}")(x)
      x = nn.leaky_relu(x, 0.2)
    d = x.shape[-1]
    x = nn.Dense(1, kernel_init=_torch_uniform(d), bias_init=_torch_uniform(d),
                 precision=jax.lax.Precision.HIGHEST, name="out")(x)
    return x[:, 0]
