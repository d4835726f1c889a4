"""EG3D's superresolution modules (``SuperresolutionHybrid{2X,4X,8X,8XDC}``, ``HybridDeepfp32``).

Each takes the neural rendering (``rgb [B, R, R, 3]`` and the 32-channel ``x [B, R, R, 32]``),
resizes both to the module's input resolution (antialiased bilinear) when needed, and runs two
StyleGAN2 synthesis blocks styled by the backbone's last w.

The official in-place quirk (``inplace_image_raw``): in the modules whose first block does not
upsample (2X, 4X, Deepfp32), that block adds its ToRGB output *in place* to its ``rgb`` input.
When no resize happened, that input is a view of the renderer's feature image, so the official
``image_raw`` comes back with the ToRGB output added. ``Superresolution.__call__`` returns that
modified rgb so the generator can reproduce (or, switched off, avoid) the behaviour.
"""
from __future__ import annotations

import dataclasses
from typing import Optional

import flax.linen as nn
import jax.numpy as jnp

from jaxinv.nn.synthesis import SynthesisBlock
from jaxinv.ops.interpolate import resize_bilinear


@dataclasses.dataclass(frozen=True)
class SRSpec:
  input_resolution: int
  img_resolution: int
  block0_upsample: bool            # False = SynthesisBlockNoUp
  channels: tuple[int, int]        # out channels of block0, block1
  resolutions: tuple[int, int]     # resolutions of block0, block1
  resize_only_if_smaller: bool     # 4X/Deepfp32 compare with '<' instead of '!='
  has_filter_buffer: bool          # the module registers its own resample_filter buffer


# Official class name (last component) -> architecture. Values read off training/superresolution.py.
SR_MODULES: dict[str, SRSpec] = {
    "SuperresolutionHybrid2X": SRSpec(64, 128, False, (128, 64), (64, 128), False, True),
    "SuperresolutionHybrid4X": SRSpec(128, 256, False, (128, 64), (128, 256), True, True),
    "SuperresolutionHybrid8X": SRSpec(128, 512, True, (128, 64), (256, 512), False, True),
    "SuperresolutionHybrid8XDC": SRSpec(128, 512, True, (256, 128), (256, 512), False, False),
    "SuperresolutionHybridDeepfp32": SRSpec(128, 256, False, (128, 64), (128, 256), True, True),
}


def sr_spec(module: str) -> SRSpec:
  """Looks up an SR module by its official (possibly dotted) class name."""
  name = module.rsplit(".", 1)[-1]
  if name not in SR_MODULES:
    raise ValueError(f"unknown superresolution module {module!r}; supported: "
                     f"{', '.join(sorted(SR_MODULES))}")
  return SR_MODULES[name]


class Superresolution(nn.Module):
  """Two-block superresolution head.

  Attributes:
    module: official class name, e.g. ``'training.superresolution.SuperresolutionHybrid8XDC'``.
    channels: channels of the feature image (32).
    img_resolution: final image size; must match the module (the official code asserts it).
    sr_num_fp16_res: > 0 turns on conv_clamp=256 (fp16 itself is never used: the official code
      also runs these blocks in float32 off-GPU).
    sr_antialias: antialias of the bilinear resize.
    w_dim: style size (hard-coded 512 officially).
    fused_modconv: see ``modulated_conv2d``.
    conv_dtype: None (float32) or 'bfloat16' for the blocks' convolutions (``modulated_conv2d``).
  """
  module: str
  channels: int = 32
  img_resolution: int = 512
  sr_num_fp16_res: int = 0
  sr_antialias: bool = True
  w_dim: int = 512
  fused_modconv: bool = False
  conv_dtype: Optional[str] = None

  @property
  def spec(self) -> SRSpec:
    return sr_spec(self.module)

  @nn.compact
  def __call__(self, rgb, x, ws, noise_mode: str = "none"):
    """rgb: [B, R, R, 3], x: [B, R, R, C], ws: [B, num_ws, w_dim].

    Returns:
      (image [B, img_resolution, img_resolution, 3], rgb_after_block0 or None). The second value
      is the first block's in-place-updated ``rgb`` when the official quirk applies (no resize and
      a non-upsampling first block), else None.
    """
    spec = self.spec
    if self.img_resolution != spec.img_resolution:
      raise ValueError(f"{self.module} produces {spec.img_resolution}px images, but "
                       f"img_resolution={self.img_resolution}")
    conv_clamp = 256.0 if self.sr_num_fp16_res > 0 else None
    w = jnp.broadcast_to(ws[:, -1:, :], (ws.shape[0], 3, ws.shape[2]))
    r = x.shape[2]
    need = r < spec.input_resolution if spec.resize_only_if_smaller else r != spec.input_resolution
    if need:
      size = (spec.input_resolution, spec.input_resolution)
      x = resize_bilinear(x, size, antialias=self.sr_antialias)
      rgb = resize_bilinear(rgb, size, antialias=self.sr_antialias)
    common = dict(w_dim=self.w_dim, img_channels=3, conv_clamp=conv_clamp,
                  fused_modconv=self.fused_modconv, conv_dtype=self.conv_dtype)
    x, rgb = SynthesisBlock(self.channels, spec.channels[0], resolution=spec.resolutions[0],
                            is_last=False, upsample=spec.block0_upsample, name="block0",
                            **common)(x, rgb, w, noise_mode)
    rgb_inplace = rgb if (not need and not spec.block0_upsample) else None
    x, img = SynthesisBlock(spec.channels[0], spec.channels[1], resolution=spec.resolutions[1],
                            is_last=True, name="block1", **common)(x, rgb, w, noise_mode)
    return img, rgb_inplace
