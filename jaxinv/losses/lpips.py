"""LPIPS v0.1 (Zhang et al. 2018) with AlexNet and VGG16 trunks, as the ``lpips`` package computes it.

For inputs ``in0, in1 [B, H, W, 3]`` in [-1, 1]:

1. Scaling layer ``(x - shift) / scale`` with the package's per-channel constants.
2. Trunk activations after the ReLUs (torchvision ``features`` indices): alex
   ``[0:2] | [2:5] | [5:8] | [8:10] | [10:12]``; vgg16 ``[0:4] | [4:9] | [9:16] | [16:23] | [23:30]``
   (relu1_2 ... relu5_3). Max-pools have no padding and floor their output size.
3. Per tap k: ``f / (sqrt(sum_c f^2) + 1e-10)`` -- epsilon added to the norm, outside the sqrt --,
   squared difference, a 1x1 conv without bias (``lin_k``, the shipped v0.1 weights), spatial mean.
4. ``distance = sum_k layer_distance_k`` ``[B]`` (the package's ``spatial=False`` output).

pSp, TriPlaneNet and PREIM3D train with ``lpips_loss`` = the batch mean of ``distance``.

Variables: ``{'params': {'features_<i>': {'kernel' (HWIO), 'bias'}, 'lin<k>': {'kernel': [C_k]}}}``
with ``i`` the torchvision ``features`` index of every conv (``jaxinv.convert.lpips`` fills it).
"""
from __future__ import annotations

from typing import NamedTuple, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from jaxinv.checks import check_image
from jaxinv.nn import irse

_HIGHEST = jax.lax.Precision.HIGHEST

# The lpips package's ScalingLayer buffers (float32 on its side too).
SHIFT = np.array([-0.030, -0.088, -0.188], np.float32)
SCALE = np.array([0.458, 0.448, 0.450], np.float32)
NORM_EPS = 1e-10


class ConvSpec(NamedTuple):
  index: int  # position in torchvision's ``features`` Sequential
  in_ch: int
  out_ch: int
  kernel: int
  stride: int
  padding: int


# Each trunk: a list of slices; a slice is ops "conv <index>" or "pool"; every conv is followed by
# a ReLU, and the tap is taken at the end of each slice.
_ALEX = (
    (ConvSpec(0, 3, 64, 11, 4, 2),),
    ("pool3", ConvSpec(3, 64, 192, 5, 1, 2)),
    ("pool3", ConvSpec(6, 192, 384, 3, 1, 1)),
    (ConvSpec(8, 384, 256, 3, 1, 1),),
    (ConvSpec(10, 256, 256, 3, 1, 1),),
)


def _vgg16():
  cfg = [(64, 2), (128, 2), (256, 3), (512, 3), (512, 3)]
  slices, idx, cin = [], 0, 3
  for s, (c, n) in enumerate(cfg):
    ops = []
    if s:
      ops.append("pool2")
      idx += 1
    for _ in range(n):
      ops.append(ConvSpec(idx, cin, c, 3, 1, 1))
      cin = c
      idx += 2  # conv, relu
    slices.append(tuple(ops))
  return tuple(slices)


TRUNKS = {"alex": _ALEX, "vgg": _vgg16()}
# Smallest input side for which every tap is non-empty.
MIN_SIZE = {"alex": 32, "vgg": 16}


def trunk_convs(net: str) -> tuple[ConvSpec, ...]:
  """Every conv of the trunk, in order (the converters' name table)."""
  _check_net(net)
  return tuple(op for sl in TRUNKS[net] for op in sl if isinstance(op, ConvSpec))


def tap_channels(net: str) -> tuple[int, ...]:
  _check_net(net)
  return tuple([op for op in sl if isinstance(op, ConvSpec)][-1].out_ch for sl in TRUNKS[net])


def _check_net(net: str) -> None:
  if net not in TRUNKS:
    raise ValueError(f"LPIPS net must be one of {sorted(TRUNKS)}, got {net!r}")


def _max_pool(x, k: int):
  return jax.lax.reduce_window(x, -jnp.inf, jax.lax.max, (1, k, k, 1), (1, 2, 2, 1), "VALID")


def _safe_norm(f):
  """``sqrt(sum_c f^2)`` with a zero (not NaN) gradient where a ReLU vector is all zero."""
  s = jnp.sum(f * f, axis=-1, keepdims=True)
  pos = s > 0
  return jnp.where(pos, jnp.sqrt(jnp.where(pos, s, 1.0)), 0.0)


def normalize_channels(f):
  """The package's ``normalize_tensor``: ``f / (||f||_c + 1e-10)``."""
  return f / (_safe_norm(f) + NORM_EPS)


def scale_input(x):
  return (x - SHIFT) / SCALE


class LPIPSTrunk(nn.Module):
  """The AlexNet / VGG16 feature taps: ``x [B,H,W,3]`` (already scaled) -> 5 activations."""
  net: str = "alex"

  @nn.compact
  def __call__(self, x) -> list:
    _check_net(self.net)
    taps = []
    for sl in TRUNKS[self.net]:
      for op in sl:
        if op == "pool3":
          x = _max_pool(x, 3)
        elif op == "pool2":
          x = _max_pool(x, 2)
        else:
          # flax Conv's parameters; jaxinv's convolution (gradients fast inside CPU loops).
          x = irse.conv2d(op.out_ch, op.kernel, op.stride, op.padding, use_bias=True,
                          name=f"features_{op.index}")(x)
          x = nn.relu(x)
      taps.append(x)
    return taps


class LPIPS(nn.Module):
  """LPIPS v0.1 distance network.

  ``__call__(in0, in1, return_per_layer=False)``: ``in0, in1 [B, H, W, 3]`` in [-1, 1] ->
  ``distance [B]``, or ``(distance, {'layer_distance': [B, 5], 'lin_map': [[B, H_k, W_k]] * 5})``.
  """
  net: str = "alex"

  def setup(self):
    _check_net(self.net)
    self.trunk = LPIPSTrunk(self.net, name="trunk")
    self.lins = [self.param(f"lin{k}", nn.initializers.constant(1.0 / c), (c,), jnp.float32)
                 for k, c in enumerate(tap_channels(self.net))]

  def features(self, x):
    """Raw trunk activations of ``x`` in [-1, 1] (before channel normalisation)."""
    return self.trunk(scale_input(x))

  def diffs(self, in0, in1):
    """The lin inputs ``(norm(f0) - norm(f1))^2`` for every tap (one trunk pass for both)."""
    b = in0.shape[0]
    feats = self.features(jnp.concatenate([in0, in1], axis=0))
    return [(normalize_channels(f[:b]) - normalize_channels(f[b:])) ** 2 for f in feats]

  def normalized_features(self, x):
    """The channel-normalised taps of ``x`` in [-1, 1]: computed once for a fixed reference."""
    return [normalize_channels(f) for f in self.features(x)]

  def distance_between(self, n0, n1):
    """``distance [B]`` from two lists of ``normalized_features`` (same value as ``__call__``)."""
    layer = jnp.stack([jnp.mean(jnp.einsum("bhwc,c->bhw", (a - b) ** 2, w, precision=_HIGHEST),
                                axis=(1, 2)) for a, b, w in zip(n0, n1, self.lins)], axis=1)
    return jnp.sum(layer, axis=1)

  def __call__(self, in0, in1, return_per_layer: bool = False):
    maps = [jnp.einsum("bhwc,c->bhw", d, w, precision=_HIGHEST)
            for d, w in zip(self.diffs(in0, in1), self.lins)]
    layer = jnp.stack([jnp.mean(m, axis=(1, 2)) for m in maps], axis=1)  # [B, 5]
    dist = jnp.sum(layer, axis=1)
    if return_per_layer:
      return dist, {"layer_distance": layer, "lin_map": maps}
    return dist


def _check_pair(in0, in1, net: str) -> None:
  check_image(in0, "in0")
  check_image(in1, "in1")
  if in0.shape != in1.shape:
    raise ValueError(f"in0 {in0.shape} and in1 {in1.shape} must have the same shape")
  if min(in0.shape[1:3]) < MIN_SIZE[net]:
    raise ValueError(f"LPIPS-{net} needs images of at least {MIN_SIZE[net]}x{MIN_SIZE[net]}, "
                     f"got {tuple(in0.shape[1:3])}")


def lpips_distance(params, in0: jax.Array, in1: jax.Array, net: str = "alex",
                   return_per_layer: bool = False):
  """Per-sample LPIPS ``[B]`` (the package's ``LPIPS(net)(in0, in1)`` flattened).

  Args:
    params: ``{'params': ...}`` from ``jaxinv.convert.lpips``.
    in0, in1: ``[B, H, W, 3]`` in [-1, 1]; NaN/inf and values outside [-1, 1] are refused when
      the values are available (not under jit unless ``jaxinv.checks.checked``).
  """
  _check_net(net)
  _check_pair(in0, in1, net)
  return LPIPS(net).apply(params, in0, in1, return_per_layer)


def lpips_loss(params, y_hat: jax.Array, y: jax.Array, net: str = "alex") -> jax.Array:
  """pSp/TriPlaneNet/PREIM3D ``criteria.lpips``: the batch mean of the LPIPS distance (scalar)."""
  return jnp.mean(lpips_distance(params, y_hat, y, net))


def lpips_init_template(net: str, size: int = 64):
  """Shapes of the variables (for converters' tree checks)."""
  x = jnp.zeros((1, size, size, 3), jnp.float32)
  return jax.eval_shape(LPIPS(net).init, jax.random.PRNGKey(0), x, x)


def per_layer_names(net: str) -> Sequence[str]:
  return {"alex": ("relu1", "relu2", "relu3", "relu4", "relu5"),
          "vgg": ("relu1_2", "relu2_2", "relu3_3", "relu4_3", "relu5_3")}[net]
