"""Rendering options of the EG3D importance renderer, as a small frozen dataclass.

The official code passes an untyped ``rendering_kwargs`` dict around. Here every key that changes
what the renderer computes at inference time is a typed field of ``RenderOptions``; keys consumed by
the generator itself (superresolution, pose conditioning) and keys that only matter for training are
split off by ``split_rendering_kwargs`` so nothing is silently dropped.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Mapping

# The three tri-plane coordinate frames of the official code. Row p lists the world axes that land on
# plane p's (grid-x, grid-y) pair: a point (x, y, z) is read from plane 0 at (x, y), plane 1 at (x, z)
# and plane 2 at (z, x). The third plane is *not* the YZ plane one might expect; the published weights
# were trained with this layout, so converted checkpoints must keep it.
PLANE_AXES_EG3D: tuple[tuple[int, int], ...] = ((0, 1), (0, 2), (2, 0))
# The layout the EG3D paper describes (XY, XZ, YZ). Only for models trained with it.
PLANE_AXES_XY_XZ_YZ: tuple[tuple[int, int], ...] = ((0, 1), (0, 2), (1, 2))

# Keys of the official ``rendering_kwargs`` that the generator (not the renderer) honours.
GENERATOR_KEYS = frozenset({
    "image_resolution", "superresolution_module", "c_gen_conditioning_zero", "c_scale",
    "superresolution_noise_mode", "sr_antialias",
})
# Keys that only the official training loop or visualiser reads; kept verbatim, never used here.
TRAINING_KEYS = frozenset({
    "gpc_reg_prob", "density_reg", "density_reg_p_dist", "reg_type", "density_noise",
    "depth_resolution_default", "depth_resolution_importance_default",
})


@dataclasses.dataclass(frozen=True)
class RenderOptions:
  """Everything the importance renderer needs, with the official FFHQ values as defaults.

  Attributes:
    ray_start, ray_end: near/far depth along each (unit-length) ray, world units; both may be the
      string 'auto' (the official option: clip the rays to the ``box_warp`` cube).
    box_warp: side length of the cube spanned by the tri-planes (points are scaled by 2/box_warp).
    depth_resolution: stratified (coarse) samples per ray, D.
    depth_resolution_importance: importance (fine) samples per ray, Ni; 0 skips the fine pass.
    disparity_space_sampling: place the coarse samples uniformly in inverse depth.
    clamp_mode: density activation; only 'softplus' (softplus(sigma - 1)) exists officially.
    white_back: composite onto a white background (ShapeNet cars).
    avg_camera_radius, avg_camera_pivot: the default look-at orbit (visualisation only).
    decoder_lr_mul: learning-rate multiplier of the OSG decoder's equalized layers.
    plane_axes: the tri-plane frames, ``PLANE_AXES_EG3D`` for every official checkpoint.
    training_kwargs: training-only official keys, kept as ((key, value), ...) for round trips.
  """
  ray_start: float | str = 2.25
  ray_end: float | str = 3.3
  box_warp: float = 1.0
  depth_resolution: int = 48
  depth_resolution_importance: int = 48
  disparity_space_sampling: bool = False
  clamp_mode: str = "softplus"
  white_back: bool = False
  avg_camera_radius: float = 2.7
  avg_camera_pivot: tuple[float, float, float] = (0.0, 0.0, 0.2)
  decoder_lr_mul: float = 1.0
  plane_axes: tuple[tuple[int, int], ...] = PLANE_AXES_EG3D
  training_kwargs: tuple[tuple[str, Any], ...] = ()

  def __post_init__(self):
    if self.clamp_mode != "softplus":
      raise ValueError(f"RenderOptions.clamp_mode: only 'softplus' is supported (as in the official "
                       f"MipRayMarcher2), got {self.clamp_mode!r}")
    auto = (self.ray_start == "auto", self.ray_end == "auto")
    if any(isinstance(v, str) for v in (self.ray_start, self.ray_end)) and auto != (True, True):
      raise ValueError("RenderOptions: ray_start and ray_end must both be numbers or both be 'auto', "
                       f"got {self.ray_start!r}, {self.ray_end!r}")
    if auto == (False, False) and not float(self.ray_end) > float(self.ray_start):
      raise ValueError(f"RenderOptions: ray_end ({self.ray_end}) must exceed ray_start ({self.ray_start})")
    if int(self.depth_resolution) < 2:
      raise ValueError(f"RenderOptions.depth_resolution must be >= 2, got {self.depth_resolution}")
    if int(self.depth_resolution_importance) < 0:
      raise ValueError("RenderOptions.depth_resolution_importance must be >= 0, "
                       f"got {self.depth_resolution_importance}")
    if not float(self.box_warp) > 0:
      raise ValueError(f"RenderOptions.box_warp must be positive, got {self.box_warp}")
    if len(self.plane_axes) != 3 or any(len(a) != 2 for a in self.plane_axes):
      raise ValueError(f"RenderOptions.plane_axes: expected 3 (grid-x, grid-y) axis pairs, got "
                       f"{self.plane_axes}")
    # Normalise containers so equal options hash equal (they are static arguments of jit).
    object.__setattr__(self, "avg_camera_pivot", tuple(float(v) for v in self.avg_camera_pivot))
    object.__setattr__(self, "plane_axes", tuple(tuple(int(i) for i in a) for a in self.plane_axes))
    object.__setattr__(self, "training_kwargs", tuple(
        (k, _freeze(v)) for k, v in self.training_kwargs))

  @property
  def auto_range(self) -> bool:
    return self.ray_start == "auto"

  def replace(self, **changes) -> "RenderOptions":
    return dataclasses.replace(self, **changes)

  @classmethod
  def from_rendering_kwargs(cls, rendering_kwargs: Mapping[str, Any]) -> "RenderOptions":
    """Builds options from an official ``rendering_kwargs`` dict.

    Generator-level keys (``GENERATOR_KEYS``) are accepted and left to the generator; training-only
    keys are kept in ``training_kwargs``; any other unknown key raises ``ValueError`` because
    silently ignoring it could change the image.
    """
    render, _, training = split_rendering_kwargs(rendering_kwargs)
    return cls(**render, training_kwargs=tuple(sorted(training.items())))

  def to_rendering_kwargs(self) -> dict[str, Any]:
    """The renderer's part of an official ``rendering_kwargs`` dict (plus the training keys)."""
    out = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)
           if f.name not in ("plane_axes", "training_kwargs")}
    out["avg_camera_pivot"] = list(self.avg_camera_pivot)
    out.update(dict(self.training_kwargs))
    return out


_RENDER_FIELDS = frozenset(f.name for f in dataclasses.fields(RenderOptions)) - {
    "plane_axes", "training_kwargs"}


def split_rendering_kwargs(rendering_kwargs: Mapping[str, Any]):
  """Splits an official ``rendering_kwargs`` dict into (renderer, generator, training) dicts.

  Raises:
    ValueError: naming every key that belongs to none of the three groups.
  """
  unknown = sorted(set(rendering_kwargs) - _RENDER_FIELDS - GENERATOR_KEYS - TRAINING_KEYS)
  if unknown:
    raise ValueError(f"rendering_kwargs: unknown key(s) {unknown}; jaxinv cannot honour them. Known "
                     f"renderer keys: {sorted(_RENDER_FIELDS)}; generator keys: "
                     f"{sorted(GENERATOR_KEYS)}; training-only keys: {sorted(TRAINING_KEYS)}")
  render = {k: v for k, v in rendering_kwargs.items() if k in _RENDER_FIELDS}
  for k in ("depth_resolution", "depth_resolution_importance"):
    if k in render:
      render[k] = int(render[k])
  for k in ("box_warp", "decoder_lr_mul", "avg_camera_radius"):
    if k in render:
      render[k] = float(render[k])
  for k in ("ray_start", "ray_end"):
    if k in render and not isinstance(render[k], str):
      render[k] = float(render[k])
  generator = {k: v for k, v in rendering_kwargs.items() if k in GENERATOR_KEYS}
  training = {k: v for k, v in rendering_kwargs.items() if k in TRAINING_KEYS}
  return render, generator, training


def _freeze(v):
  if isinstance(v, list):
    return tuple(_freeze(x) for x in v)
  if isinstance(v, dict):
    return tuple(sorted((k, _freeze(x)) for k, x in v.items()))
  return v
