"""EG3D's OSG decoder: a two-layer MLP from averaged tri-plane features to density and colour features.

Parameters (``{'params': ...}``), converted from the official state dict:

  ``net_0/weight [C_in, 64]``  <- ``decoder.net.0.weight [64, C_in]`` transposed
  ``net_0/bias   [64]``        <- ``decoder.net.0.bias``
  ``net_2/weight [64, 1+F]``   <- ``decoder.net.2.weight [1+F, 64]`` transposed
  ``net_2/bias   [1+F]``       <- ``decoder.net.2.bias``

Weights are stored raw (equalized learning rate): the gain ``lr_mul / sqrt(fan_in)`` on the weight
and ``lr_mul`` on the bias are applied at call time, as in the official ``FullyConnectedLayer``.
(The index 1 of ``net`` is the Softplus, which has no parameters.)
"""
from __future__ import annotations

from typing import Mapping

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from jaxinv.ops.pallas.raymarch import MLPDecoder

_HIGHEST = jax.lax.Precision.HIGHEST


class EqualizedDense(nn.Module):
  """``x @ (weight * lr_mul / sqrt(fan_in)) + bias * lr_mul`` with raw weights ``[in, out]``."""
  features: int
  lr_mul: float = 1.0
  bias_init: float = 0.0

  @nn.compact
  def __call__(self, x):
    fan_in = x.shape[-1]
    w = self.param("weight", lambda k, s: jax.random.normal(k, s) / self.lr_mul,
                   (fan_in, self.features))
    b = self.param("bias", lambda k, s: jnp.full(s, self.bias_init / self.lr_mul, jnp.float32),
                   (self.features,))
    gain = self.lr_mul / np.sqrt(fan_in)
    return jnp.matmul(x, w * gain, precision=_HIGHEST) + b * self.lr_mul


class OSGDecoder(nn.Module):
  """The official ``OSGDecoder`` (hidden width 64, softplus, MipNeRF-style sigmoid).

  Call with ``sampled_features [B, P, N, C]`` (per-plane samples; averaged over P here) and
  ``ray_directions [B, N, 3]`` (part of the official signature, unused). Returns a dict with
  ``rgb [B, N, F]`` = sigmoid(x) * (1 + 2e-3) - 1e-3 (all F feature channels, not only RGB) and
  ``sigma [B, N, 1]`` (raw density, activated later by the ray marcher).
  """
  output_dim: int = 32
  hidden_dim: int = 64
  lr_mul: float = 1.0

  @nn.compact
  def __call__(self, sampled_features, ray_directions=None):
    del ray_directions
    x = jnp.mean(sampled_features, axis=1)
    x = EqualizedDense(self.hidden_dim, self.lr_mul, name="net_0")(x)
    x = jax.nn.softplus(x)
    x = EqualizedDense(1 + self.output_dim, self.lr_mul, name="net_2")(x)
    # Slightly widened sigmoid (MipNeRF) so that features can reach exactly 0 and 1.
    rgb = jax.nn.sigmoid(x[..., 1:]) * (1 + 2 * 0.001) - 0.001
    sigma = x[..., 0:1]
    return {"rgb": rgb, "sigma": sigma}


def fused_weights(params, lr_mul: float = 1.0) -> MLPDecoder:
  """The decoder's weights with the equalized-lr gains applied, for the fused ray-marching kernel.

  ``params``: the ``OSGDecoder`` variables (``{'params': {'net_0': ..., 'net_2': ...}}`` or the inner
  dict). Computes exactly what ``EqualizedDense`` multiplies at call time, so the kernel (and
  ``render`` with these weights on XLA) decodes the same numbers; differentiable in ``params``.
  """
  p = params.get("params", params)
  l0, l2 = p["net_0"], p["net_2"]
  return MLPDecoder(
      w_hidden=l0["weight"] * (lr_mul / np.sqrt(l0["weight"].shape[0])), b_hidden=l0["bias"] * lr_mul,
      w_out=l2["weight"] * (lr_mul / np.sqrt(l2["weight"].shape[0])), b_out=l2["bias"] * lr_mul)


def decoder_params_from_state_dict(sd: Mapping[str, np.ndarray], prefix: str = "decoder."):
  """``{'params': ...}`` of ``OSGDecoder`` from official tensors ``<prefix>net.{0,2}.{weight,bias}``."""
  out = {}
  for i in (0, 2):
    w = np.asarray(sd[f"{prefix}net.{i}.weight"], np.float32)
    b = np.asarray(sd[f"{prefix}net.{i}.bias"], np.float32)
    if w.ndim != 2 or b.shape != (w.shape[0],):
      raise ValueError(f"{prefix}net.{i}: expected weight [out, in] and bias [out], got "
                       f"{w.shape} and {b.shape}")
    out[f"net_{i}"] = {"weight": jnp.asarray(w.T), "bias": jnp.asarray(b)}
  return {"params": out}
