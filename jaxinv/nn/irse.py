"""IR-SE building blocks (ArcFace IR-SE-50, the pSp-family encoders, TriPlaneNet's U-Net, GOAE's AFA).

Images and features are NHWC float32. Every module here runs BatchNorm in **inference** mode
(running statistics, eps 1e-5), exactly like the upstream networks in ``eval()``, unless applied
with ``mutable=["batch_stats"]``: then BatchNorm trains (batch statistics, running averages
updated; see ``BatchNormInference``).

Public names
------------
``BatchNormInference(name=...)``
    ``y = (x - mean) / sqrt(var + 1e-5) * scale + bias`` over the last axis.
    Variables: ``params/{scale,bias} [C]``, ``batch_stats/{mean,var} [C]``.
``PReLU()``
    One slope per channel: ``params/alpha [C]`` (torch ``PReLU.weight``).
``SEModule(reduction=16)``
    Squeeze-excitation without biases: ``params/fc1/kernel [C, C/r]``, ``params/fc2/kernel [C/r, C]``
    (the upstream 1x1 convs stored as Dense kernels).
``BottleneckIRSE(depth, stride)``
    One IR-SE unit. The input channel count is read from ``x``; when it equals ``depth`` the shortcut
    is a stride-``stride`` subsampling (``MaxPool2d(1, stride)``), else a 1x1 conv + BN.
    Residual branch: ``bn1 -> conv1 (3x3, s1) -> prelu -> conv2 (3x3, stride s) -> bn2 -> se``.
    Sub-module names: ``shortcut_conv``, ``shortcut_bn`` (only with a conv shortcut), ``bn1``,
    ``conv1``, ``prelu``, ``conv2``, ``bn2``, ``se``. Conv kernels are HWIO (``params/<conv>/kernel``).
``IRSEInputLayer(features=64)``
    ``conv (3x3, s1, pad 1, no bias) -> bn -> prelu`` (names ``conv``, ``bn``, ``prelu``).
``IRSEBody(units)``
    Runs the units ``unit_0 .. unit_{N-1}``. ``body(x)`` returns the last unit's output;
    ``body(x, return_indices=(2, 6, 20, 23))`` returns a tuple with the output of each listed unit
    (negative indices count from the end), and stops after the deepest one requested.
``UnitSpec(in_ch, depth, stride)``, ``irse_units(stages, in_ch=64)``, ``irse50_units()``,
``irse_units_for_depth(num_layers)``
    Unit lists. ``irse50_units()`` = 24 units (3x64, 4x128, 14x256, 3x512), the first of every stage
    with stride 2. GOAE's AFA body is ``irse_units(((64, 3), (128, 3), (256, 3)))``.

Variable tree (``{'params': ..., 'batch_stats': ...}``), for an encoder holding
``IRSEInputLayer(name='input_layer')`` and ``IRSEBody(name='body')``::

  params/input_layer/{conv/kernel [3,3,in,64], bn/{scale,bias}, prelu/alpha}
  params/body/unit_i/{bn1, conv1/kernel, prelu/alpha, conv2/kernel, bn2, se/{fc1,fc2}/kernel,
                      [shortcut_conv/kernel [1,1,in,depth], shortcut_bn]}
  batch_stats/input_layer/bn/{mean,var}
  batch_stats/body/unit_i/{bn1,bn2,[shortcut_bn]}/{mean,var}

``jaxinv.convert.irse`` fills these trees from upstream state dicts (``input_layer.*``,
``body.i.shortcut_layer.*``, ``body.i.res_layer.*`` under any prefix).
"""
from __future__ import annotations

from typing import NamedTuple, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxinv.ops import conv as conv_op

BN_EPS = 1e-5
_HIGHEST = jax.lax.Precision.HIGHEST


class UnitSpec(NamedTuple):
  """One IR-SE unit: input channels, output channels (``depth``) and stride."""
  in_ch: int
  depth: int
  stride: int


def irse_units(stages: Sequence[tuple[int, int]], in_ch: int = 64) -> tuple[UnitSpec, ...]:
  """Unit list for stages ``[(depth, num_units), ...]``; each stage starts with a stride-2 unit.

  This is the upstream ``get_block(in_channel, depth, num_units)`` chaining: the first unit of a
  stage maps the previous depth to the new one with stride 2, the rest keep it with stride 1.
  """
  units = []
  for depth, n in stages:
    units.append(UnitSpec(in_ch, depth, 2))
    units.extend(UnitSpec(depth, depth, 1) for _ in range(n - 1))
    in_ch = depth
  return tuple(units)


_STAGE_COUNTS = {50: (3, 4, 14, 3), 100: (3, 13, 30, 3), 152: (3, 8, 36, 3)}


def irse_units_for_depth(num_layers: int) -> tuple[UnitSpec, ...]:
  """The IR(-SE)-50/100/152 unit lists (depths 64, 128, 256, 512)."""
  if num_layers not in _STAGE_COUNTS:
    raise ValueError(f"num_layers must be one of {sorted(_STAGE_COUNTS)}, got {num_layers}")
  return irse_units(tuple(zip((64, 128, 256, 512), _STAGE_COUNTS[num_layers])))


def irse50_units() -> tuple[UnitSpec, ...]:
  """The 24 units of IR-SE-50."""
  return irse_units_for_depth(50)


class Conv2d(nn.Module):
  """A PyTorch-equivalent ``Conv2d`` (explicit symmetric padding, true fp32 on every backend).

  Parameters as ``flax.linen.Conv``'s (``kernel [k, k, in, out]``, LeCun-normal init; ``bias``
  zeros), so converted weights and checkpoints are unchanged. The convolution is
  ``jaxinv.ops.conv.conv2d`` (XLA's forward; a kernel gradient that is fast on CPU).
  """
  features: int
  kernel: int
  stride: int = 1
  padding: int = 0
  use_bias: bool = False

  @nn.compact
  def __call__(self, x):
    k = self.param("kernel", nn.initializers.lecun_normal(),
                   (self.kernel, self.kernel, x.shape[-1], self.features), jnp.float32)
    x = jnp.asarray(x, jnp.result_type(x, k))  # flax's dtype promotion
    y = conv_op.conv2d(x, k, self.stride, self.padding)
    if self.use_bias:
      y = y + self.param("bias", nn.initializers.zeros, (self.features,), jnp.float32)
    return y


def conv2d(features: int, kernel: int, stride: int = 1, padding: int = 0, use_bias: bool = False,
           name: str | None = None) -> Conv2d:
  """A PyTorch-equivalent ``Conv2d`` module (see ``Conv2d``)."""
  return Conv2d(features, kernel, stride, padding, use_bias, name=name)


class BatchNormInference(nn.Module):
  """BatchNorm normalising the last axis; inference form unless ``batch_stats`` is mutable.

  ``scale``/``bias`` live in ``params``; ``mean``/``var`` in ``batch_stats``.

  * Inference (``module.apply(variables, x)``, the default everywhere): running statistics,
    exactly upstream ``eval()``.
  * Training (``module.apply(variables, x, mutable=["batch_stats"])``, torch ``train()``):
    normalise with the statistics of this batch (mean and biased variance over every axis but
    the last; under a sharded jit these are global-batch statistics, i.e. synchronised BN) and
    update the running ones as torch does: ``running = (1 - momentum) * running + momentum *
    batch`` with the *unbiased* batch variance, ``momentum = 0.1``.
  """
  epsilon: float = BN_EPS
  momentum: float = 0.1

  @nn.compact
  def __call__(self, x):
    c = x.shape[-1]
    scale = self.param("scale", nn.initializers.ones, (c,), jnp.float32)
    bias = self.param("bias", nn.initializers.zeros, (c,), jnp.float32)
    ra_mean = self.variable("batch_stats", "mean", jnp.zeros, (c,), jnp.float32)
    ra_var = self.variable("batch_stats", "var", jnp.ones, (c,), jnp.float32)
    if self.is_mutable_collection("batch_stats") and not self.is_initializing():
      axes = tuple(range(x.ndim - 1))
      n = max(int(np_prod(x.shape[:-1])), 1)
      mean = jnp.mean(x, axis=axes)
      var = jnp.mean(jnp.square(x - mean), axis=axes)
      m = self.momentum
      ra_mean.value = (1 - m) * ra_mean.value + m * jax.lax.stop_gradient(mean)
      ra_var.value = (1 - m) * ra_var.value + m * jax.lax.stop_gradient(var * n / max(n - 1, 1))
    else:
      mean, var = ra_mean.value, ra_var.value
    # Same operation order as torch's eval BN: normalise, then the affine.
    return (x - mean) * jax.lax.rsqrt(var + self.epsilon) * scale + bias


def np_prod(shape) -> int:
  out = 1
  for d in shape:
    out *= int(d)
  return out


class PReLU(nn.Module):
  """Per-channel PReLU: ``x`` if ``x >= 0`` else ``alpha[c] * x`` (torch init 0.25)."""

  @nn.compact
  def __call__(self, x):
    alpha = self.param("alpha", nn.initializers.constant(0.25), (x.shape[-1],), jnp.float32)
    return jnp.where(x >= 0, x, alpha * x)


class SEModule(nn.Module):
  """Squeeze-excitation: global mean -> fc1 -> ReLU -> fc2 -> sigmoid gate (no biases)."""
  reduction: int = 16

  @nn.compact
  def __call__(self, x):
    c = x.shape[-1]
    s = jnp.mean(x, axis=(1, 2))  # [B, C]
    s = nn.relu(nn.Dense(c // self.reduction, use_bias=False, precision=_HIGHEST, name="fc1")(s))
    s = jax.nn.sigmoid(nn.Dense(c, use_bias=False, precision=_HIGHEST, name="fc2")(s))
    return x * s[:, None, None, :]


class BottleneckIRSE(nn.Module):
  """IR-SE unit ``bottleneck_IR_SE(in_ch, depth, stride)``; ``in_ch`` comes from ``x``.

  Args of ``__call__``: ``x [B, H, W, in_ch]`` -> ``[B, ceil(H/s), ceil(W/s), depth]``.
  """
  depth: int
  stride: int = 1

  @nn.compact
  def __call__(self, x):
    s = self.stride
    if x.shape[-1] == self.depth:
      shortcut = x[:, ::s, ::s, :]  # MaxPool2d(kernel 1, stride s) is a plain subsampling.
    else:
      shortcut = conv2d(self.depth, 1, s, 0, name="shortcut_conv")(x)
      shortcut = BatchNormInference(name="shortcut_bn")(shortcut)
    r = BatchNormInference(name="bn1")(x)
    r = conv2d(self.depth, 3, 1, 1, name="conv1")(r)
    r = PReLU(name="prelu")(r)
    r = conv2d(self.depth, 3, s, 1, name="conv2")(r)
    r = BatchNormInference(name="bn2")(r)
    r = SEModule(name="se")(r)
    return r + shortcut


class IRSEInputLayer(nn.Module):
  """``conv 3x3 (no bias) -> BN -> PReLU``: ``x [B, H, W, in] -> [B, H, W, features]``."""
  features: int = 64

  @nn.compact
  def __call__(self, x):
    x = conv2d(self.features, 3, 1, 1, name="conv")(x)
    x = BatchNormInference(name="bn")(x)
    return PReLU(name="prelu")(x)


class IRSEBody(nn.Module):
  """A chain of ``BottleneckIRSE`` units ``unit_0 .. unit_{N-1}``.

  Attributes:
    units: ``UnitSpec`` list (``irse50_units()``, ``irse_units(...)``). Only ``depth`` and
      ``stride`` shape the modules; ``in_ch`` documents (and lets converters check) the wiring.
  """
  units: Sequence[UnitSpec]

  @nn.compact
  def __call__(self, x, return_indices: Sequence[int] | None = None):
    """Args: ``x [B, H, W, units[0].in_ch]``.

    Returns:
      The last unit's output, or (with ``return_indices``) a tuple with the output of each listed
      unit in the order given.
    """
    n = len(self.units)
    if x.shape[-1] != self.units[0].in_ch:
      raise ValueError(f"IRSEBody: input has {x.shape[-1]} channels, the first unit expects "
                       f"{self.units[0].in_ch}")
    want = None
    if return_indices is not None:
      want = [i + n if i < 0 else i for i in return_indices]
      bad = [i for i, j in zip(return_indices, want) if not 0 <= j < n]
      if bad:
        raise ValueError(f"IRSEBody: return_indices {bad} out of range for {n} units")
    last = n - 1 if want is None else max(want, default=-1)
    feats = {}
    for i, u in enumerate(self.units[: last + 1]):
      x = BottleneckIRSE(u.depth, u.stride, name=f"unit_{i}")(x)
      feats[i] = x
    if want is None:
      return x
    return tuple(feats[i] for i in want)
