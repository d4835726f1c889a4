"""Swin-Transformer-V2 backbone (the configuration GOAE uses as its latent encoder trunk).

Swin-V2 differs from V1 in three places that all matter for parity with converted weights:

* **res-post-norm**: each residual branch is normalised *after* the sub-layer,
  ``x = x + LN1(attn(x)); x = x + LN2(mlp(x))``;
* **cosine attention**: ``normalize(q) . normalize(k)^T * exp(min(logit_scale, ln 100))``;
* **continuous relative position bias**: a log-spaced table of window offsets goes through a
  small MLP (2 -> 512 -> heads); the bias is ``16 * sigmoid(mlp(table))`` gathered per token pair.

Tokens are kept as ``[B, H, W, C]`` maps inside a stage; the flattened (row-major) token layout
``[B, H*W, C]`` of the PyTorch code is produced only where features leave the backbone.

The constant buffers of the PyTorch module (``relative_coords_table``, ``relative_position_index``,
``attn_mask``) are computed here in numpy (``relative_coords_table`` etc. below) so converted
checkpoints never need to carry them; the converter checks the shipped copies are equal.
"""
from __future__ import annotations

import dataclasses
import math
from typing import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from jaxinv.nn import irse

HIGHEST = jax.lax.Precision.HIGHEST

# Upstream clamps the learnable attention temperature at 1 / 0.01.
_MAX_LOGIT_SCALE = math.log(1.0 / 0.01)
# Value added to attention logits of token pairs that come from different regions after the
# cyclic shift (the PyTorch code uses -100, not -inf; softmax then gives ~e-44, not exact zeros).
_MASK_VALUE = -100.0


# ----------------------------------------------------------------------------------------------
# Constant buffers (numpy, built once per configuration).


def relative_coords_table(window: int, pretrained_window: int = 0) -> np.ndarray:
  """Log-spaced offsets fed to the continuous position-bias MLP.

  Args:
    window: window side ``w`` actually used.
    pretrained_window: window side ``P`` of pre-training; when > 0 it (not ``w``) normalises the
      offsets, so ``|offset| / (P - 1)`` may exceed 1 for ``w > P``.

  Returns:
    ``[2w-1, 2w-1, 2]`` float32; entry ``[i, j]`` belongs to offset ``(i - w + 1, j - w + 1)``.
  """
  r = np.arange(-(window - 1), window, dtype=np.float32)
  table = np.stack(np.meshgrid(r, r, indexing="ij"), axis=-1)
  denom = (pretrained_window if pretrained_window > 0 else window) - 1
  # A 1x1 window has no offsets but the division would be 0/0; keep the table at 0 then.
  table = table / np.float32(max(denom, 1))
  table = table * np.float32(8.0)
  # log2 correctly rounded (via float64) like PyTorch's float32 kernel, so the table is bit-equal.
  log = np.log2((np.abs(table) + np.float32(1.0)).astype(np.float64)).astype(np.float32)
  return (np.sign(table) * log / np.float32(3.0)).astype(np.float32)  # log2(8) = 3


def relative_position_index(window: int) -> np.ndarray:
  """Row of the coords table for each token pair of a ``window x window`` window.

  Returns:
    ``[w*w, w*w]`` int32 with ``(h_i - h_j + w - 1) * (2w - 1) + (w_i - w_j + w - 1)``.
  """
  hh, ww = np.meshgrid(np.arange(window), np.arange(window), indexing="ij")
  hh, ww = hh.reshape(-1), ww.reshape(-1)
  dh = hh[:, None] - hh[None, :] + window - 1
  dw = ww[:, None] - ww[None, :] + window - 1
  return (dh * (2 * window - 1) + dw).astype(np.int32)


def window_partition(x: jnp.ndarray, window: int) -> jnp.ndarray:
  """``[B, H, W, C]`` -> ``[B, nW, w*w, C]`` with windows and tokens in row-major order."""
  b, h, w, c = x.shape
  x = x.reshape(b, h // window, window, w // window, window, c)
  x = x.transpose(0, 1, 3, 2, 4, 5)
  return x.reshape(b, (h // window) * (w // window), window * window, c)


def window_reverse(x: jnp.ndarray, window: int, h: int, w: int) -> jnp.ndarray:
  """Inverse of ``window_partition``: ``[B, nW, w*w, C]`` -> ``[B, H, W, C]``."""
  b, _, _, c = x.shape
  x = x.reshape(b, h // window, w // window, window, window, c)
  x = x.transpose(0, 1, 3, 2, 4, 5)
  return x.reshape(b, h, w, c)


def shifted_window_mask(resolution: int, window: int, shift: int) -> np.ndarray:
  """Attention mask of a shifted-window block: ``[nW, w*w, w*w]`` float32 of 0 / -100.

  After the cyclic shift by ``-shift`` the windows along the bottom/right border hold tokens
  from up to 4 regions that are not neighbours in the image; pairs from different regions are
  masked. The map is split into 3 x 3 regions ``[0, H-w) | [H-w, H-s) | [H-s, H)`` per axis.
  """
  labels = np.zeros((resolution, resolution), np.float32)
  cuts = (slice(0, resolution - window), slice(resolution - window, resolution - shift),
          slice(resolution - shift, resolution))
  count = 0
  for hs in cuts:
    for ws in cuts:
      labels[hs, ws] = count
      count += 1
  win = np.asarray(window_partition(labels[None, :, :, None], window))[0, :, :, 0]  # [nW, N]
  diff = win[:, None, :] - win[:, :, None]
  return np.where(diff != 0, np.float32(_MASK_VALUE), np.float32(0.0)).astype(np.float32)


def block_geometry(resolution: int, window: int, block_index: int) -> tuple[int, int]:
  """(window, shift) a block really uses: the window shrinks to the map, shifts only if smaller.

  Odd blocks shift by half a window, but only where the map is larger than the window
  (otherwise one window covers everything and a shift would merely roll the tokens).
  """
  if resolution <= window:
    return resolution, 0
  return window, (window // 2 if block_index % 2 == 1 else 0)


# ----------------------------------------------------------------------------------------------
# Modules.


def _layer_norm(name: str | None = None, zero_init: bool = False) -> nn.LayerNorm:
  # PyTorch's LayerNorm: eps 1e-5 and the two-pass variance (flax's fast variance E[x^2]-E[x]^2
  # loses digits on the un-normalised residual stream).
  scale_init = nn.initializers.zeros if zero_init else nn.initializers.ones
  return nn.LayerNorm(epsilon=1e-5, use_fast_variance=False, scale_init=scale_init, name=name)


def _dense(features: int, name: str, use_bias: bool = True) -> nn.Dense:
  return nn.Dense(features, use_bias=use_bias, precision=HIGHEST, name=name,
                  kernel_init=nn.initializers.truncated_normal(0.02))


def apply_flat(layer, x: jnp.ndarray) -> jnp.ndarray:
  """Applies a Dense layer to ``x [..., C]`` as one ``[N, C]`` matrix.

  The kernel gradient then contracts a single axis; with several leading axes XLA:CPU takes a
  path about 2x slower in the backward pass.
  """
  y = layer(x.reshape(-1, x.shape[-1]))
  return y.reshape(*x.shape[:-1], y.shape[-1])


class WindowAttention(nn.Module):
  """Cosine window self-attention with the continuous relative position bias.

  Attributes:
    dim: channels ``C``.
    num_heads: heads ``H`` (``C % H == 0``).
    window: window side ``w`` actually used.
    pretrained_window: window side of pre-training (normalises the coords table).
    cpb_hidden: width of the position-bias MLP (512 upstream).
  """
  dim: int
  num_heads: int
  window: int
  pretrained_window: int = 0
  cpb_hidden: int = 512

  @nn.compact
  def __call__(self, x: jnp.ndarray, mask: np.ndarray | None = None) -> jnp.ndarray:
    """x: ``[B, nW, N, C]`` windows (N = w*w); mask: ``[nW, N, N]`` or None -> ``[B, nW, N, C]``."""
    b, nw, n, c = x.shape
    h = self.num_heads
    q_bias = self.param("q_bias", nn.initializers.zeros, (c,))
    v_bias = self.param("v_bias", nn.initializers.zeros, (c,))
    logit_scale = self.param("logit_scale", nn.initializers.constant(math.log(10.0)), (h,))
    # Keys get no bias: the PyTorch module concatenates (q_bias, 0, v_bias).
    qkv = apply_flat(_dense(3 * c, "qkv", use_bias=False), x)
    qkv = qkv + jnp.concatenate([q_bias, jnp.zeros_like(q_bias), v_bias])
    # Heads before tokens ([B, nW, H, N, d]) so both products below are plain batched matmuls
    # over leading axes (the fast XLA:CPU path, forward and backward).
    qkv = qkv.reshape(b, nw, n, 3, h, c // h).transpose(3, 0, 1, 4, 2, 5)
    q, k, v = qkv[0], qkv[1], qkv[2]

    def normalize(t):  # torch.nn.functional.normalize: t / max(||t||, 1e-12)
      return t / jnp.maximum(jnp.linalg.norm(t, axis=-1, keepdims=True), 1e-12)

    attn = jnp.matmul(normalize(q), jnp.swapaxes(normalize(k), -1, -2), precision=HIGHEST)
    attn = attn * jnp.exp(jnp.minimum(logit_scale, _MAX_LOGIT_SCALE))[:, None, None]

    table = jnp.asarray(relative_coords_table(self.window, self.pretrained_window))
    bias = _dense(self.cpb_hidden, "cpb_fc1")(table.reshape(-1, 2))
    bias = _dense(h, "cpb_fc2", use_bias=False)(nn.relu(bias))  # [(2w-1)^2, H]
    index = relative_position_index(self.window).reshape(-1)
    bias = bias[index].reshape(n, n, h).transpose(2, 0, 1)
    attn = attn + 16.0 * jax.nn.sigmoid(bias)
    if mask is not None:
      attn = attn + jnp.asarray(mask)[None, :, None]
    attn = jax.nn.softmax(attn, axis=-1)
    out = jnp.matmul(attn, v, precision=HIGHEST)  # [B, nW, H, N, d]
    out = out.transpose(0, 1, 3, 2, 4).reshape(b, nw, n, c)
    return apply_flat(_dense(c, "proj"), out)


class SwinBlock(nn.Module):
  """Res-post-norm Swin-V2 block on a ``[B, H, W, C]`` map.

  Attributes:
    dim, num_heads: channels and heads.
    resolution: map side ``H == W`` (fixes window and shift via ``block_geometry``).
    window, pretrained_window: configured window sides.
    block_index: position in the stage (odd blocks shift).
    mlp_ratio: MLP hidden width / dim.
  """
  dim: int
  num_heads: int
  resolution: int
  window: int
  pretrained_window: int
  block_index: int
  mlp_ratio: float = 4.0

  @nn.compact
  def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
    """x: ``[B, H, W, C]`` -> ``[B, H, W, C]``."""
    b, hh, ww, c = x.shape
    window, shift = block_geometry(self.resolution, self.window, self.block_index)
    y = jnp.roll(x, (-shift, -shift), axis=(1, 2)) if shift else x
    y = window_partition(y, window)
    mask = shifted_window_mask(self.resolution, window, shift) if shift else None
    y = WindowAttention(self.dim, self.num_heads, window, self.pretrained_window, name="attn")(
        y, mask)
    y = window_reverse(y, window, hh, ww)
    if shift:
      y = jnp.roll(y, (shift, shift), axis=(1, 2))
    # Post-norm scales start at zero upstream, so a fresh block is the identity.
    x = x + _layer_norm("norm1", zero_init=True)(y)
    y = apply_flat(_dense(int(c * self.mlp_ratio), "fc1"), x)
    y = apply_flat(_dense(c, "fc2"), nn.gelu(y, approximate=False))
    return x + _layer_norm("norm2", zero_init=True)(y)


class PatchMerging(nn.Module):
  """2x2 neighbourhood -> channels (``[x00, x10, x01, x11]``, row offset first) -> Linear -> LN."""
  dim: int

  @nn.compact
  def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
    """x: ``[B, H, W, C]`` -> ``[B, H/2, W/2, 2C]``."""
    x = jnp.concatenate(
        [x[:, 0::2, 0::2], x[:, 1::2, 0::2], x[:, 0::2, 1::2], x[:, 1::2, 1::2]], axis=-1)
    x = apply_flat(_dense(2 * self.dim, "reduction", use_bias=False), x)
    return _layer_norm("norm")(x)


@dataclasses.dataclass(frozen=True)
class SwinV2Config:
  """Shape of a Swin-V2 trunk. Defaults are GOAE's ``configs/swinv2.yaml``."""
  img_size: int = 256
  patch_size: int = 4
  in_chans: int = 3
  embed_dim: int = 128
  depths: Sequence[int] = (2, 2, 18, 2)
  num_heads: Sequence[int] = (4, 8, 16, 32)
  window_size: int = 16
  pretrained_window_sizes: Sequence[int] = (12, 12, 12, 6)
  mlp_ratio: float = 4.0

  def __post_init__(self):
    object.__setattr__(self, "depths", tuple(self.depths))
    object.__setattr__(self, "num_heads", tuple(self.num_heads))
    object.__setattr__(self, "pretrained_window_sizes", tuple(self.pretrained_window_sizes))
    n = len(self.depths)
    if len(self.num_heads) != n or len(self.pretrained_window_sizes) != n:
      raise ValueError(f"SwinV2Config: depths {self.depths}, num_heads {self.num_heads} and "
                       f"pretrained_window_sizes {self.pretrained_window_sizes} differ in length")
    if self.img_size % (self.patch_size * 2 ** (n - 1)):
      raise ValueError(f"SwinV2Config: img_size {self.img_size} must be divisible by "
                       f"patch_size * 2^(stages-1) = {self.patch_size * 2 ** (n - 1)}")
    for i, hd in enumerate(self.num_heads):
      if (self.embed_dim * 2 ** i) % hd:
        raise ValueError(f"SwinV2Config: stage {i} width {self.embed_dim * 2 ** i} is not "
                         f"divisible by {hd} heads")
    for i in range(n):
      r = self.resolution(i)
      w, _ = block_geometry(r, self.window_size, 0)
      if r % w:
        raise ValueError(f"SwinV2Config: stage {i} map {r}x{r} is not a multiple of window {w}")

  @property
  def num_stages(self) -> int:
    return len(self.depths)

  def resolution(self, stage: int) -> int:
    return self.img_size // self.patch_size // 2 ** stage

  def width(self, stage: int) -> int:
    return self.embed_dim * 2 ** stage


class SwinV2(nn.Module):
  """Swin-V2 trunk returning the token maps GOAE taps.

  Returns a dict of row-major token sequences:
    ``stage_inputs``: tuple, entry ``i`` = input of stage ``i`` ``[B, R_i^2, C_i]`` (entry 0 is the
      patch-embedding output);
    ``out``: final LayerNorm of the last stage ``[B, R_last^2, C_last]``.
  """
  config: SwinV2Config = SwinV2Config()

  @nn.compact
  def __call__(self, x: jnp.ndarray) -> dict:
    """x: ``[B, img, img, in_chans]`` NHWC."""
    cfg = self.config
    p = cfg.patch_size
    x = irse.conv2d(cfg.embed_dim, p, p, 0, use_bias=True, name="patch_embed_proj")(x)
    x = _layer_norm("patch_embed_norm")(x)
    stage_inputs = []
    for i in range(cfg.num_stages):
      b, r, _, c = x.shape
      stage_inputs.append(x.reshape(b, r * r, c))
      for j in range(cfg.depths[i]):
        x = SwinBlock(cfg.width(i), cfg.num_heads[i], cfg.resolution(i), cfg.window_size,
                      cfg.pretrained_window_sizes[i], j, cfg.mlp_ratio,
                      name=f"layers_{i}_blocks_{j}")(x)
      if i < cfg.num_stages - 1:
        x = PatchMerging(cfg.width(i), name=f"layers_{i}_downsample")(x)
    x = _layer_norm("norm")(x)
    b, r, _, c = x.shape
    return {"stage_inputs": tuple(stage_inputs), "out": x.reshape(b, r * r, c)}
