"""Bias + activation + gain + clamp, with StyleGAN2's per-activation default alpha and gain."""
from __future__ import annotations

import dataclasses
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np


@dataclasses.dataclass(frozen=True)
class Activation:
  fn: Callable[[jax.Array, float], jax.Array]
  def_alpha: float
  def_gain: float


# The default gains keep the signal's second moment roughly constant through the layer
# (sqrt(2) for the rectifiers), which is what the equalized-learning-rate weights assume.
ACTIVATIONS: dict[str, Activation] = {
    "linear": Activation(lambda x, a: x, 0.0, 1.0),
    "relu": Activation(lambda x, a: jax.nn.relu(x), 0.0, float(np.sqrt(2))),
    "lrelu": Activation(lambda x, a: jnp.where(x >= 0, x, x * jnp.asarray(a, x.dtype)), 0.2,
                        float(np.sqrt(2))),
    "tanh": Activation(lambda x, a: jnp.tanh(x), 0.0, 1.0),
    "sigmoid": Activation(lambda x, a: jax.nn.sigmoid(x), 0.0, 1.0),
    "elu": Activation(lambda x, a: jax.nn.elu(x), 0.0, 1.0),
    "selu": Activation(lambda x, a: jax.nn.selu(x), 0.0, 1.0),
    "softplus": Activation(lambda x, a: jax.nn.softplus(x), 0.0, 1.0),
    "swish": Activation(lambda x, a: jax.nn.sigmoid(x) * x, 0.0, float(np.sqrt(2))),
}


def bias_act(x: jax.Array, b: jax.Array | None = None, act: str = "linear",
             alpha: float | None = None, gain: float | None = None,
             clamp: float | None = None, axis: int = -1) -> jax.Array:
  """``clamp(act(x + b, alpha) * gain, -clamp, clamp)``.

  Args:
    x: any shape; ``b`` is added along ``axis`` (the channel axis: last for NHWC).
    b: [x.shape[axis]] or None.
    act: a key of ``ACTIVATIONS``.
    alpha, gain: None means the activation's default.
    clamp: None (or negative) disables clamping.
  """
  if act not in ACTIVATIONS:
    raise ValueError(f"bias_act: unknown activation {act!r}; known: {sorted(ACTIVATIONS)}")
  spec = ACTIVATIONS[act]
  alpha = spec.def_alpha if alpha is None else float(alpha)
  gain = spec.def_gain if gain is None else float(gain)
  if b is not None:
    shape = [1] * x.ndim
    shape[axis] = -1
    x = x + jnp.reshape(b, shape).astype(x.dtype)
  x = spec.fn(x, alpha)
  if gain != 1:
    x = x * jnp.asarray(gain, x.dtype)
  if clamp is not None and clamp >= 0:
    x = jnp.clip(x, -clamp, clamp)
  return x
