"""GOAE ("Make Encoder Great Again in 3D GAN Inversion"): the latent encoder and AFA.

``GOAEncoder``: a Swin-V2 trunk and query/key-value heads that predict ``w+`` (without ``w_avg``)::

    ws_base = mlp_base(max_tokens(x_base) + mlp_spatial(x_base)^T)         repeated to every row
    ws      = ws_base + [0, CA_coarse(q_coarse, kv_coarse), CA_mid(...), CA_fine(...)]

``AFA`` (adaptive feature alignment): from the residual ``rec_img - img`` an IR-SE stack builds
key/values; two cross-attention branches read them with the generator's 32x32 feature map as
queries and give per-location ``gamma``, ``beta``; ``feature_map_adain = gamma * F + beta``.

Both use GOAE's ``CrossAttention`` block (a DETR decoder layer without self-attention, in eval
mode)::

    t = LN(q + MHA(q, kv, kv));  t = t + linear2(relu(linear1(t)))     (LN affine-free, no 2nd LN)

Layouts: images NHWC; token sequences ``[B, L, C]`` in row-major order; the feature map
``[B, 32, 32, C]`` (NHWC, not the NCHW of the PyTorch code).
"""
from __future__ import annotations

import dataclasses
import math
from typing import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxinv.nn.irse import IRSEBody, IRSEInputLayer, UnitSpec, irse_units
from jaxinv.ops import conv as conv_op
from jaxinv.nn.swin import SwinV2, SwinV2Config, apply_flat

HIGHEST = jax.lax.Precision.HIGHEST


def _dense(features: int, name: str, use_bias: bool = True) -> nn.Dense:
  return nn.Dense(features, use_bias=use_bias, precision=HIGHEST, name=name)


def layer_norm_no_affine(x: jnp.ndarray, eps: float = 1e-5) -> jnp.ndarray:
  """``nn.LayerNorm(C, elementwise_affine=False)`` over the last axis (two-pass variance)."""
  mean = jnp.mean(x, axis=-1, keepdims=True)
  var = jnp.mean(jnp.square(x - mean), axis=-1, keepdims=True)
  return (x - mean) * jax.lax.rsqrt(var + eps)


def leaky_relu(x: jnp.ndarray) -> jnp.ndarray:
  """``nn.LeakyReLU()`` with PyTorch's default slope 0.01 (not flax's)."""
  return jnp.where(x >= 0, x, 0.01 * x)


class MultiheadAttention(nn.Module):
  """``torch.nn.MultiheadAttention`` (batch-first, no masks, eval): separate q/k/v projections.

  Scores are ``(q W_q + b_q)(k W_k + b_k)^T / sqrt(d_head)``; ``in_proj_weight`` rows
  ``[W_q; W_k; W_v]`` map to ``q_proj``, ``k_proj``, ``v_proj``.
  """
  dim: int
  num_heads: int

  @nn.compact
  def __call__(self, q: jnp.ndarray, kv: jnp.ndarray) -> jnp.ndarray:
    """q: ``[B, Lq, E]``, kv: ``[B, Lk, E]`` -> ``[B, Lq, E]``."""
    h, e = self.num_heads, self.dim
    d = e // h
    b, lq, _ = q.shape
    qh = apply_flat(_dense(e, "q_proj"), q).reshape(b, lq, h, d)
    kh = apply_flat(_dense(e, "k_proj"), kv).reshape(b, -1, h, d)
    vh = apply_flat(_dense(e, "v_proj"), kv).reshape(b, -1, h, d)
    scores = jnp.einsum("bqhd,bkhd->bhqk", qh / math.sqrt(d), kh, precision=HIGHEST)
    attn = jax.nn.softmax(scores, axis=-1)
    out = jnp.einsum("bhqk,bkhd->bqhd", attn, vh, precision=HIGHEST).reshape(b, lq, e)
    return apply_flat(_dense(e, "out_proj"), out)


class CrossAttention(nn.Module):
  """GOAE's ``CrossAttention(d_model, nhead, dim_feedforward)`` block in eval mode."""
  dim: int = 512
  num_heads: int = 4
  ffn_dim: int = 1024

  @nn.compact
  def __call__(self, q: jnp.ndarray, kv: jnp.ndarray) -> jnp.ndarray:
    """q: ``[B, Lq, dim]``, kv: ``[B, Lk, dim]`` -> ``[B, Lq, dim]``."""
    if self.dim % self.num_heads:
      raise ValueError(f"CrossAttention: dim {self.dim} not divisible by {self.num_heads} heads")
    t = layer_norm_no_affine(q + MultiheadAttention(self.dim, self.num_heads,
                                                    name="multihead_attn")(q, kv))
    f = apply_flat(_dense(self.dim, "linear2"),
                   nn.relu(apply_flat(_dense(self.ffn_dim, "linear1"), t)))
    return t + f


class MLPStack(nn.Module):
  """Linear layers with LeakyReLU(0.01) between them (and after the last if ``final_act``).

  The Dense layers are named ``fc{2*i}`` after their index in the upstream ``nn.Sequential``
  (activations take the odd indices).
  """
  widths: Sequence[int]
  final_act: bool = False

  @nn.compact
  def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
    n = len(self.widths)
    for i, w in enumerate(self.widths):
      x = apply_flat(_dense(w, f"fc{2 * i}"), x)
      if i < n - 1 or self.final_act:
        x = leaky_relu(x)
    return x


def mlp_head(in_dim: int, out_dim: int, mlp_layer: int, name: str) -> MLPStack:
  """Upstream ``get_mlp_layer``: ``mlp_layer - 1`` Linear(in, in) + LReLU, then Linear(in, out)."""
  return MLPStack(tuple([in_dim] * (mlp_layer - 1) + [out_dim]), name=name)


@dataclasses.dataclass(frozen=True)
class GOAEncoderConfig:
  """Shape of a GOAE latent encoder. Defaults: the released FFHQ encoder (``swinv2.yaml``).

  Attributes:
    swin: the trunk. The heads derive every token count and width from it (upstream hard-codes
      the values of the default trunk: 64 query tokens, 1024/512/256/128 channels ...).
    w_dim: latent width (and cross-attention width).
    ws_split: rows of ``ws`` per level: (base-only rows, coarse, mid, fine); ``num_ws`` = sum.
    mlp_layer: Linear layers per query/base head (``--mlp_layer``, 2 for the release).
    ca_heads, ca_ffn: cross-attention heads and feed-forward width.
  """
  swin: SwinV2Config = SwinV2Config()
  w_dim: int = 512
  ws_split: Sequence[int] = (1, 3, 3, 7)
  mlp_layer: int = 2
  ca_heads: int = 4
  ca_ffn: int = 1024

  def __post_init__(self):
    object.__setattr__(self, "ws_split", tuple(self.ws_split))
    if self.swin.num_stages != 4:
      raise ValueError(f"GOAEncoderConfig: the heads tap 4 Swin stages, got {self.swin.num_stages}")
    if len(self.ws_split) != 4:
      raise ValueError(f"GOAEncoderConfig: ws_split needs 4 entries, got {self.ws_split}")
    if self.mlp_layer < 1:
      raise ValueError(f"GOAEncoderConfig: mlp_layer must be >= 1, got {self.mlp_layer}")

  @property
  def num_ws(self) -> int:
    return sum(self.ws_split)

  def tokens(self, stage: int) -> int:
    return self.swin.resolution(stage) ** 2


class GOAEncoder(nn.Module):
  """GOAE's Swin-based latent encoder (``GOAEncoder`` at ``stage = 3``, i.e. inference).

  ``__call__(x)``: x ``[B, img, img, 3]`` in [-1, 1] -> dict
    ``ws`` ``[B, num_ws, w_dim]`` (add ``w_avg`` for the generator),
    ``ws_base`` ``[B, num_ws, w_dim]``,
    and with ``features=True`` also the trunk taps in the upstream layouts:
    ``swin_x_fine [B, L0, C0]``, ``swin_x_mid [B, L1, C1]``, ``swin_x_coarse [B, L2, C2]``,
    ``swin_x_query [B, C3, L3]``, ``swin_x_base [B, C3, L3]`` (the last two channels-first).
  """
  config: GOAEncoderConfig = GOAEncoderConfig()

  @nn.compact
  def __call__(self, x: jnp.ndarray, features: bool = False) -> dict:
    cfg = self.config
    e, w = cfg.swin.embed_dim, cfg.w_dim
    n_fine, n_mid, n_coarse, n_query = (cfg.tokens(i) for i in range(4))
    trunk = SwinV2(cfg.swin, name="swin_model")(x)
    x_fine, x_mid, x_coarse, x_query = trunk["stage_inputs"]
    x_query = x_query.transpose(0, 2, 1)   # [B, 8E, n_query]
    x_base = trunk["out"].transpose(0, 2, 1)
    b = x.shape[0]

    def query(tokens, k, spatial, channel):
      # k learned mixtures of the spatial tokens, each lifted by the token-wise max.
      s = mlp_head(n_query, k, cfg.mlp_layer, spatial)(tokens).transpose(0, 2, 1)
      top = jnp.max(tokens, axis=-1)[:, None, :]
      return mlp_head(8 * e, w, cfg.mlp_layer, channel)(s + top)

    ws_base = query(x_base, 1, "mapper_base_spatial", "mapper_base_channel")
    ws_base = jnp.broadcast_to(ws_base, (b, cfg.num_ws, w))
    _, k_coarse, k_mid, k_fine = cfg.ws_split
    q_coarse = query(x_query, k_coarse, "mapper_query_spatial_coarse",
                     "mapper_query_channel_coarse")
    q_mid = query(x_query, k_mid, "mapper_query_spatial_mid", "mapper_query_channel_mid")
    q_fine = query(x_query, k_fine, "mapper_query_spatial_fine", "mapper_query_channel_fine")

    kv_coarse = MLPStack((w,), True, name="mapper_coarse_channel")(x_coarse)
    # Coarse tokens are also resampled along the token axis to the finer token counts.
    up_mid = MLPStack((2 * n_coarse, n_mid), True, name="mapper_coarse_to_mid_spatial")
    kv_mid = (MLPStack((w,), True, name="mapper_mid_channel")(x_mid)
              + up_mid(kv_coarse.transpose(0, 2, 1)).transpose(0, 2, 1))
    up_fine = MLPStack((2 * n_mid, n_fine), True, name="mapper_mid_to_fine_spatial")
    kv_fine = (MLPStack((2 * e, w), True, name="mapper_fine_channel")(x_fine)
               + up_fine(kv_mid.transpose(0, 2, 1)).transpose(0, 2, 1))

    def ca(name):
      return CrossAttention(w, cfg.ca_heads, cfg.ca_ffn, name=name)

    delta = jnp.concatenate([
        jnp.zeros((b, cfg.ws_split[0], w), x.dtype),
        ca("cross_att_coarse")(q_coarse, kv_coarse),
        ca("cross_att_mid")(q_mid, kv_mid),
        ca("cross_att_fine")(q_fine, kv_fine)], axis=1)
    out = {"ws": ws_base + delta, "ws_base": ws_base}
    if features:
      out.update(swin_x_fine=x_fine, swin_x_mid=x_mid, swin_x_coarse=x_coarse,
                 swin_x_query=x_query, swin_x_base=x_base)
    return out


# ------------------------------------------------------------------------------------------ AFA


def scaled_leaky_relu(x: jnp.ndarray, slope: float = 0.2) -> jnp.ndarray:
  """StyleGAN2's ``ScaledLeakyReLU``: leaky ReLU times sqrt(2) (keeps the activation variance)."""
  return jnp.where(x >= 0, x, slope * x) * math.sqrt(2.0)


class EqualConv2d(nn.Module):
  """Conv with the He constant applied at run time: ``conv(x, W / sqrt(fan_in)) + b``.

  ``weight`` is stored unscaled, HWIO ``[k, k, in, out]`` (init N(0, 1), as upstream).
  """
  features: int
  kernel: int = 3
  padding: int = 1

  @nn.compact
  def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
    cin = x.shape[-1]
    weight = self.param("weight", nn.initializers.normal(1.0),
                        (self.kernel, self.kernel, cin, self.features))
    bias = self.param("bias", nn.initializers.zeros, (self.features,))
    scale = 1.0 / math.sqrt(cin * self.kernel ** 2)
    p = self.padding
    y = conv_op.conv2d(x, weight * scale, 1, p)
    return y + bias


@dataclasses.dataclass(frozen=True)
class AFAConfig:
  """Shape of an AFA module. Defaults: the released one (``models/afa.py``).

  Attributes:
    units: the IR-SE body (9 units: 64x3, 128x3, 256x3, each stage starting with stride 2).
    stem: channels of the input conv.
    feat_dim: channels of the generator feature map (and of the attention).
    num_heads, ffn_dim: cross-attention heads and feed-forward width.
  """
  units: Sequence[UnitSpec] = irse_units(((64, 3), (128, 3), (256, 3)))
  stem: int = 64
  feat_dim: int = 512
  num_heads: int = 4
  ffn_dim: int = 1024

  def __post_init__(self):
    object.__setattr__(self, "units", tuple(UnitSpec(*u) for u in self.units))
    if self.units[0].in_ch != self.stem:
      raise ValueError(f"AFAConfig: first unit takes {self.units[0].in_ch} channels, the stem "
                       f"gives {self.stem}")


class AFA(nn.Module):
  """GOAE's adaptive feature alignment module.

  ``__call__(img, rec_img, feature_map)``: ``img``, ``rec_img`` ``[B, H, W, 3]`` (H = W, a
  multiple of 8), ``feature_map`` ``[B, h, w, feat_dim]`` -> dict ``feature_map_adain``,
  ``gamma``, ``beta`` (each like ``feature_map``) and with ``features=True`` ``feat_body``
  (the IR-SE body output ``[B, H/8, W/8, C]``).
  """
  config: AFAConfig = AFAConfig()

  @nn.compact
  def __call__(self, img, rec_img, feature_map, features: bool = False) -> dict:
    cfg = self.config
    x = IRSEInputLayer(cfg.stem, name="input_layer")(rec_img - img)  # residual, this order
    body = IRSEBody(cfg.units, name="body")(x)
    x = EqualConv2d(cfg.feat_dim, name="output_conv0")(body)
    x = EqualConv2d(cfg.feat_dim, name="output_conv2")(scaled_leaky_relu(x))
    b, h, w, c = feature_map.shape
    kv = layer_norm_no_affine(x.reshape(b, -1, cfg.feat_dim))
    q = layer_norm_no_affine(feature_map.reshape(b, h * w, c))
    gamma = CrossAttention(c, cfg.num_heads, cfg.ffn_dim, name="cross_att_gamma")(q, kv)
    beta = CrossAttention(c, cfg.num_heads, cfg.ffn_dim, name="cross_att_beta")(q, kv)
    gamma = gamma.reshape(b, h, w, c)
    beta = beta.reshape(b, h, w, c)
    out = {"feature_map_adain": gamma * feature_map + beta, "gamma": gamma, "beta": beta}
    if features:
      out["feat_body"] = body
    return out
