"""NeRF-3DE's two encoders (Li et al., "3D-Aware Encoding for Style-based Neural Radiance Fields"),
mapped onto EG3D (no upstream code exists; RECIPES 4.6).

* **Base encoder** ``E_base`` (its section 3.3): image -> one code ``w_base [B, 512]`` in W (relative
  to ``w_avg``; the pipeline adds it and repeats the row ``num_ws`` times). Architecture not given
  in the paper; here pSp's W encoder (``BackboneEncoderUsingLastLayerIntoW``): the IR-SE trunk,
  a global average pool and one ``EqualLinear``.
* **Refining encoder** ``E_ref`` (section 3.4, eq. 9): ``(x, x_hat) -> Delta w+ [B, num_ws, 512]``,
  a 6-channel input (the target and the current render concatenated on channels), "similar to
  ReStyle": ReStyle-pSp's ``GradualStyleEncoder(in_ch=6)``.

Both come in two sizes (:class:`NeRF3DEConfig.backbone`): ``"irse50"`` (the pSp trunk at 256 px,
for real training) and ``"small"`` (a few narrow IR-SE units at any input size that is a multiple of
``2 ** len(small_widths)``, for tiny CPU runs and tests), where the refiner also pools globally
into one ``EqualLinear`` head for all rows.

Images: NHWC in [-1, 1], ``[B, input_size, input_size, C]``.
"""
from __future__ import annotations

import dataclasses
from typing import Sequence

import flax.linen as nn
import jax.numpy as jnp

from jaxinv.models.encoders.psp import EqualLinear, GradualStyleEncoder
from jaxinv.nn.irse import IRSEBody, IRSEInputLayer, irse50_units, irse_units

BACKBONES = ("irse50", "small")


class PooledEncoder(nn.Module):
  """IR-SE trunk -> global mean pool -> ``EqualLinear(rows * w_dim)``.

  ``x [B, H, W, in_ch] -> [B, w_dim]`` (``rows=None``) or ``[B, rows, w_dim]``.
  With the IR-SE-50 trunk and ``rows=None`` this is pSp's ``BackboneEncoderUsingLastLayerIntoW``.
  """
  units: Sequence = ()
  stem_features: int = 64
  rows: int | None = None
  w_dim: int = 512
  in_ch: int = 3

  @nn.compact
  def __call__(self, x):
    if x.ndim != 4 or x.shape[-1] != self.in_ch:
      raise ValueError(f"{type(self).__name__}: expected images [B, H, W, {self.in_ch}], got {x.shape}")
    h = IRSEInputLayer(self.stem_features, name="input_layer")(x)
    h = IRSEBody(tuple(self.units), name="body")(h)
    h = jnp.mean(h, axis=(1, 2))
    n = 1 if self.rows is None else self.rows
    out = EqualLinear(n * self.w_dim, name="linear")(h)
    return out if self.rows is None else out.reshape(x.shape[0], n, self.w_dim)


@dataclasses.dataclass(frozen=True)
class NeRF3DEConfig:
  """Sizes of the two encoders.

  num_ws: rows of w+ (14 for EG3D). w_dim: 512.
  input_size: encoder input resolution (256 for ``irse50``; renders are average-pooled to it).
  backbone: ``"irse50"`` | ``"small"``.
  small_widths: channel widths (>= 16) of the small trunk's stages (one stride-2 unit each).
  small_stem: channels of the small trunk's input layer.
  """
  num_ws: int = 14
  w_dim: int = 512
  input_size: int = 256
  backbone: str = "irse50"
  small_widths: tuple = (16, 32, 64)
  small_stem: int = 16

  def __post_init__(self):
    if self.backbone not in BACKBONES:
      raise ValueError(f"backbone must be one of {BACKBONES}, got {self.backbone!r}")
    if self.backbone == "irse50" and self.input_size != 256:
      raise ValueError(f"the irse50 backbone's style heads need input_size 256, got {self.input_size}")
    if min(self.small_widths) < 16 or self.small_stem < 16:
      raise ValueError("small_widths and small_stem must be >= 16 (the SE blocks reduce by 16), "
                       f"got {self.small_widths}, {self.small_stem}")
    if self.input_size % (2 ** len(self.small_widths)):
      raise ValueError(f"input_size {self.input_size} must be a multiple of "
                       f"{2 ** len(self.small_widths)}")

  def _small_units(self):
    return irse_units(tuple((w, 1) for w in self.small_widths), in_ch=self.small_stem)


def base_encoder(cfg: NeRF3DEConfig) -> nn.Module:
  """``E_base``: ``x [B, S, S, 3] -> w [B, w_dim]`` (relative to ``w_avg``)."""
  if cfg.backbone == "irse50":
    return PooledEncoder(irse50_units(), 64, None, cfg.w_dim, 3)
  return PooledEncoder(cfg._small_units(), cfg.small_stem, None, cfg.w_dim, 3)


def refining_encoder(cfg: NeRF3DEConfig) -> nn.Module:
  """``E_ref``: ``[x, x_hat] [B, S, S, 6] -> Delta w+ [B, num_ws, w_dim]``."""
  if cfg.backbone == "irse50":
    return GradualStyleEncoder(n_styles=cfg.num_ws, in_ch=6)
  return PooledEncoder(cfg._small_units(), cfg.small_stem, cfg.num_ws, cfg.w_dim, 6)
