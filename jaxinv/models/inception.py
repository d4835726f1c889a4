"""The FID Inception-v3 (TensorFlow's 2015-12-05 graph as pytorch-fid ports it): pool3 features.

FID and KID compare the 2048-d average-pooled features of this network over two image sets. The
network is torchvision's Inception-v3 with the FID variant's differences: average pools inside
the A, C and E_1 blocks exclude the zero padding from their means (TensorFlow's behaviour), and
the last E block pools with a 3x3 max instead of an average. Only the layers up to the final
average pool exist here (no classifier).

The parameters are a flat dict ``{layer_name: {kernel [kh, kw, in, out], scale, bias, mean,
var}}`` with the upstream layer names (``Conv2d_1a_3x3``, ``Mixed_5b.branch1x1``, ...), every
layer a bias-free convolution followed by BatchNorm (eps 1e-3, running statistics) and ReLU.
``jaxinv.convert.inception`` reads pytorch-fid's ``pt_inception-2015-12-05-6726825d.pth`` into it.

Pure and jit-compatible: :func:`features` is ``(params, images) -> [B, 2048]``.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp

from jaxinv import checks
from jaxinv.ops.interpolate import resize_bilinear

BN_EPS = 1e-3
INPUT_SIZE = 299
FEATURES = 2048


def _stem():
  # (name, in, out, kernel, stride, padding)
  return [("Conv2d_1a_3x3", 3, 32, (3, 3), 2, (0, 0)), ("Conv2d_2a_3x3", 32, 32, (3, 3), 1, (0, 0)),
          ("Conv2d_2b_3x3", 32, 64, (3, 3), 1, (1, 1)), ("Conv2d_3b_1x1", 64, 80, (1, 1), 1, (0, 0)),
          ("Conv2d_4a_3x3", 80, 192, (3, 3), 1, (0, 0))]


def _block_a(name, cin, pool):
  return [(f"{name}.branch1x1", cin, 64, (1, 1), 1, (0, 0)),
          (f"{name}.branch5x5_1", cin, 48, (1, 1), 1, (0, 0)),
          (f"{name}.branch5x5_2", 48, 64, (5, 5), 1, (2, 2)),
          (f"{name}.branch3x3dbl_1", cin, 64, (1, 1), 1, (0, 0)),
          (f"{name}.branch3x3dbl_2", 64, 96, (3, 3), 1, (1, 1)),
          (f"{name}.branch3x3dbl_3", 96, 96, (3, 3), 1, (1, 1)),
          (f"{name}.branch_pool", cin, pool, (1, 1), 1, (0, 0))]


def _block_b(name, cin):
  return [(f"{name}.branch3x3", cin, 384, (3, 3), 2, (0, 0)),
          (f"{name}.branch3x3dbl_1", cin, 64, (1, 1), 1, (0, 0)),
          (f"{name}.branch3x3dbl_2", 64, 96, (3, 3), 1, (1, 1)),
          (f"{name}.branch3x3dbl_3", 96, 96, (3, 3), 2, (0, 0))]


def _block_c(name, cin, c7):
  h, v = ((1, 7), (0, 3)), ((7, 1), (3, 0))
  return [(f"{name}.branch1x1", cin, 192, (1, 1), 1, (0, 0)),
          (f"{name}.branch7x7_1", cin, c7, (1, 1), 1, (0, 0)),
          (f"{name}.branch7x7_2", c7, c7, h[0], 1, h[1]),
          (f"{name}.branch7x7_3", c7, 192, v[0], 1, v[1]),
          (f"{name}.branch7x7dbl_1", cin, c7, (1, 1), 1, (0, 0)),
          (f"{name}.branch7x7dbl_2", c7, c7, v[0], 1, v[1]),
          (f"{name}.branch7x7dbl_3", c7, c7, h[0], 1, h[1]),
          (f"{name}.branch7x7dbl_4", c7, c7, v[0], 1, v[1]),
          (f"{name}.branch7x7dbl_5", c7, 192, h[0], 1, h[1]),
          (f"{name}.branch_pool", cin, 192, (1, 1), 1, (0, 0))]


def _block_d(name, cin):
  return [(f"{name}.branch3x3_1", cin, 192, (1, 1), 1, (0, 0)),
          (f"{name}.branch3x3_2", 192, 320, (3, 3), 2, (0, 0)),
          (f"{name}.branch7x7x3_1", cin, 192, (1, 1), 1, (0, 0)),
          (f"{name}.branch7x7x3_2", 192, 192, (1, 7), 1, (0, 3)),
          (f"{name}.branch7x7x3_3", 192, 192, (7, 1), 1, (3, 0)),
          (f"{name}.branch7x7x3_4", 192, 192, (3, 3), 2, (0, 0))]


def _block_e(name, cin):
  return [(f"{name}.branch1x1", cin, 320, (1, 1), 1, (0, 0)),
          (f"{name}.branch3x3_1", cin, 384, (1, 1), 1, (0, 0)),
          (f"{name}.branch3x3_2a", 384, 384, (1, 3), 1, (0, 1)),
          (f"{name}.branch3x3_2b", 384, 384, (3, 1), 1, (1, 0)),
          (f"{name}.branch3x3dbl_1", cin, 448, (1, 1), 1, (0, 0)),
          (f"{name}.branch3x3dbl_2", 448, 384, (3, 3), 1, (1, 1)),
          (f"{name}.branch3x3dbl_3a", 384, 384, (1, 3), 1, (0, 1)),
          (f"{name}.branch3x3dbl_3b", 384, 384, (3, 1), 1, (1, 0)),
          (f"{name}.branch_pool", cin, 192, (1, 1), 1, (0, 0))]


def layers() -> list[tuple]:
  """Every conv layer ``(name, in, out, (kh, kw), stride, (ph, pw))`` in network order."""
  out = _stem()
  out += _block_a("Mixed_5b", 192, 32) + _block_a("Mixed_5c", 256, 64) + _block_a("Mixed_5d", 288, 64)
  out += _block_b("Mixed_6a", 288)
  for name, c7 in (("Mixed_6b", 128), ("Mixed_6c", 160), ("Mixed_6d", 160), ("Mixed_6e", 192)):
    out += _block_c(name, 768, c7)
  out += _block_d("Mixed_7a", 768) + _block_e("Mixed_7b", 1280) + _block_e("Mixed_7c", 2048)
  return out


_SPEC = {l[0]: l for l in layers()}


def param_shapes() -> dict:
  """``{name: {kernel: [kh, kw, in, out], scale|bias|mean|var: [out]}}`` as ``ShapeDtypeStruct``."""
  f = lambda *s: jax.ShapeDtypeStruct(s, jnp.float32)
  return {n: dict(kernel=f(k[0], k[1], i, o), scale=f(o), bias=f(o), mean=f(o), var=f(o))
          for n, i, o, k, _, _ in layers()}


def init_params(key) -> dict:
  """Random parameters of the right shapes (tests; a real FID needs the converted weights)."""
  out = {}
  keys = jax.random.split(key, len(_SPEC))
  for k, (n, i, o, (kh, kw), _, _) in zip(keys, layers()):
    k1, k2, k3, k4 = jax.random.split(k, 4)
    out[n] = dict(kernel=jax.random.normal(k1, (kh, kw, i, o)) * (2.0 / (kh * kw * i)) ** 0.5,
                  scale=1.0 + 0.1 * jax.random.normal(k2, (o,)),
                  bias=0.1 * jax.random.normal(k3, (o,)),
                  mean=0.1 * jax.random.normal(k4, (o,)), var=jnp.ones((o,)))
  return out


def _conv(p, name, x):
  _, _, _, _, stride, (ph, pw) = _SPEC[name]
  q = p[name]
  y = jax.lax.conv_general_dilated(x, q["kernel"].astype(x.dtype), (stride, stride),
                                   ((ph, ph), (pw, pw)), dimension_numbers=("NHWC", "HWIO", "NHWC"),
                                   precision=jax.lax.Precision.HIGHEST)
  inv = q["scale"] * jax.lax.rsqrt(q["var"] + BN_EPS)
  return jax.nn.relu(y * inv + (q["bias"] - q["mean"] * inv))


def _max_pool(x, k, s, pad):
  return jax.lax.reduce_window(x, -jnp.inf, jax.lax.max, (1, k, k, 1), (1, s, s, 1),
                               ((0, 0), (pad, pad), (pad, pad), (0, 0)))


def _avg_pool_exclude_pad(x):
  """3x3 stride-1 average over the in-image pixels only (count_include_pad=False)."""
  pads = ((0, 0), (1, 1), (1, 1), (0, 0))
  total = jax.lax.reduce_window(x, 0.0, jax.lax.add, (1, 3, 3, 1), (1, 1, 1, 1), pads)
  ones = jnp.ones((1,) + x.shape[1:3] + (1,), x.dtype)
  count = jax.lax.reduce_window(ones, 0.0, jax.lax.add, (1, 3, 3, 1), (1, 1, 1, 1), pads)
  return total / count


def _a(p, n, x):
  b1 = _conv(p, f"{n}.branch1x1", x)
  b5 = _conv(p, f"{n}.branch5x5_2", _conv(p, f"{n}.branch5x5_1", x))
  b3 = x
  for s in ("1", "2", "3"):
    b3 = _conv(p, f"{n}.branch3x3dbl_{s}", b3)
  bp = _conv(p, f"{n}.branch_pool", _avg_pool_exclude_pad(x))
  return jnp.concatenate([b1, b5, b3, bp], -1)


def _b(p, n, x):
  b3 = _conv(p, f"{n}.branch3x3", x)
  bd = x
  for s in ("1", "2", "3"):
    bd = _conv(p, f"{n}.branch3x3dbl_{s}", bd)
  return jnp.concatenate([b3, bd, _max_pool(x, 3, 2, 0)], -1)


def _c(p, n, x):
  b1 = _conv(p, f"{n}.branch1x1", x)
  b7 = x
  for s in ("1", "2", "3"):
    b7 = _conv(p, f"{n}.branch7x7_{s}", b7)
  bd = x
  for s in ("1", "2", "3", "4", "5"):
    bd = _conv(p, f"{n}.branch7x7dbl_{s}", bd)
  bp = _conv(p, f"{n}.branch_pool", _avg_pool_exclude_pad(x))
  return jnp.concatenate([b1, b7, bd, bp], -1)


def _d(p, n, x):
  b3 = _conv(p, f"{n}.branch3x3_2", _conv(p, f"{n}.branch3x3_1", x))
  b7 = x
  for s in ("1", "2", "3", "4"):
    b7 = _conv(p, f"{n}.branch7x7x3_{s}", b7)
  return jnp.concatenate([b3, b7, _max_pool(x, 3, 2, 0)], -1)


def _e(p, n, x, max_pool: bool):
  b1 = _conv(p, f"{n}.branch1x1", x)
  t = _conv(p, f"{n}.branch3x3_1", x)
  b3 = jnp.concatenate([_conv(p, f"{n}.branch3x3_2a", t), _conv(p, f"{n}.branch3x3_2b", t)], -1)
  d = _conv(p, f"{n}.branch3x3dbl_2", _conv(p, f"{n}.branch3x3dbl_1", x))
  bd = jnp.concatenate([_conv(p, f"{n}.branch3x3dbl_3a", d), _conv(p, f"{n}.branch3x3dbl_3b", d)], -1)
  pooled = _max_pool(x, 3, 1, 1) if max_pool else _avg_pool_exclude_pad(x)
  return jnp.concatenate([b1, b3, bd, _conv(p, f"{n}.branch_pool", pooled)], -1)


def features(params: dict, images: jax.Array) -> jax.Array:
  """pool3 features of ``images [B, H, W, 3]`` in [-1, 1] (any size): ``[B, 2048]`` float32.

  As pytorch-fid's ``InceptionV3`` with its defaults: a bilinear resize to 299 x 299
  (align_corners=False, no antialiasing), the network, the global average pool.
  """
  checks.check_shape(images, "images", (None, None, None, 3), "[B, H, W, 3]")
  x = jnp.asarray(images, jnp.float32)
  if x.shape[1:3] != (INPUT_SIZE, INPUT_SIZE):
    x = resize_bilinear(x, (INPUT_SIZE, INPUT_SIZE))
  p = params
  for n in ("Conv2d_1a_3x3", "Conv2d_2a_3x3", "Conv2d_2b_3x3"):
    x = _conv(p, n, x)
  x = _max_pool(x, 3, 2, 0)
  x = _conv(p, "Conv2d_4a_3x3", _conv(p, "Conv2d_3b_1x1", x))
  x = _max_pool(x, 3, 2, 0)
  for n in ("Mixed_5b", "Mixed_5c", "Mixed_5d"):
    x = _a(p, n, x)
  x = _b(p, "Mixed_6a", x)
  for n in ("Mixed_6b", "Mixed_6c", "Mixed_6d", "Mixed_6e"):
    x = _c(p, n, x)
  x = _d(p, "Mixed_7a", x)
  x = _e(p, "Mixed_7b", x, max_pool=False)
  x = _e(p, "Mixed_7c", x, max_pool=True)
  return jnp.mean(x, axis=(1, 2))


features_jit = jax.jit(features)
