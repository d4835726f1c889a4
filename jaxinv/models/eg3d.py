"""The EG3D generator as an immutable value: ``G = EG3DGenerator(config, params)``.

``G.mapping``, ``G.planes``, ``G.synthesis`` and ``G(z, c)`` are pure; each is one ``jax.jit`` per
entry point, compiled once per (config, static options) and shared by every ``G`` with the same
config. Parameters are passed in (never closed over), so ``G`` is also a pytree: ``jax.jit``,
``jax.grad`` and sharding see ``G.params`` as leaves and ``G.config`` as static data.

Layouts: images NHWC float32 in about [-1, 1]; ``c [B, 25]`` camera labels (flattened 4x4
cam2world, then flattened 3x3 normalized intrinsics); planes ``[B, 3, H, W, C]`` with the official
XY, XZ, ZX plane frames (``render.options.PLANE_AXES_EG3D``).
"""
from __future__ import annotations

import dataclasses
import functools
from typing import Any, Mapping, Optional

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from jaxinv import checks
from jaxinv.render import camera as camera_lib
from jaxinv.nn.decoder import OSGDecoder, fused_weights
from jaxinv.nn.mapping import MappingNetwork
from jaxinv.nn.superresolution import Superresolution, sr_spec
from jaxinv.nn.synthesis import NOISE_MODES, SynthesisNetwork
from jaxinv.render.options import RenderOptions, split_rendering_kwargs
from jaxinv.render.rays import rays_from_label
from jaxinv.render.renderer import RENDER_KERNELS, render, resolve_kernel

PLANE_RESOLUTION = 256   # the backbone's output size (fixed in the official TriPlaneGenerator)
PLANE_CHANNELS = 32      # features per plane
BF16_CONVS = ("none", "superresolution")

_MAPPING_KEYS = {"num_layers", "embed_features", "layer_features", "activation", "lr_multiplier"}
_MAPPING_TRAINING_KEYS = {"w_avg_beta"}
_SYNTHESIS_KEYS = {"channel_base", "channel_max", "num_fp16_res", "conv_clamp",
                   "fused_modconv_default"}
_SR_KEYS = {"channel_base", "channel_max", "fused_modconv_default", "num_fp16_res", "conv_clamp"}


def _freeze(x):
  if isinstance(x, Mapping):
    return tuple(sorted((str(k), _freeze(v)) for k, v in x.items()))
  if isinstance(x, (list, tuple)):
    return tuple(_freeze(v) for v in x)
  return x


def _thaw(x):
  return {k: _thaw_v(v) for k, v in x}


def _thaw_v(v):
  if isinstance(v, tuple) and v and all(isinstance(e, tuple) and len(e) == 2 and isinstance(e[0], str)
                                        for e in v):
    return _thaw(v)
  if isinstance(v, tuple):
    return [_thaw_v(e) for e in v]
  return v


@dataclasses.dataclass(frozen=True)
class EG3DConfig:
  """Architecture and rendering configuration of an EG3D ``TriPlaneGenerator``.

  Built from the official constructor kwargs with :meth:`from_init_kwargs`; hashable, so it is a
  static jit argument and the key of the compiled-function cache.

  Attributes:
    z_dim, w_dim, c_dim, img_resolution, img_channels: as in the official constructor.
    mapping_num_layers, mapping_lr_multiplier, mapping_embed_features, mapping_layer_features,
      mapping_activation: the mapping network (``mapping_kwargs``).
    channel_base, channel_max, conv_clamp: the tri-plane backbone (``num_fp16_res`` is kept for
      round trips; computation is float32 throughout, as the official code is off-GPU).
    superresolution_module: official SR class name.
    sr_num_fp16_res: > 0 enables conv_clamp=256 inside the SR blocks (the released models use 4).
    sr_antialias, superresolution_noise_mode, c_gen_conditioning_zero, c_scale: rendering kwargs
      read by the generator itself.
    neural_rendering_resolution: default R (the pickles store the value used in training).
    render_options: everything the importance renderer reads.
    inplace_image_raw: reproduce the official 2X/4X in-place ``image_raw`` quirk (default True).
    fused_modconv: evaluate modulated convolutions in the per-sample-kernel (official eval-mode)
      form; False (default) uses the equal and faster activation-scaling form.
    render_kernel: the renderer's implementation, 'xla', 'pallas' (the fused tri-plane
      ray-marching kernel; interpret mode off-GPU) or 'auto' (default: Pallas on GPU, XLA
      elsewhere). Same numbers and gradients; a runtime switch, not stored by ``to_json``.
    bf16_convs: where convolutions run in bfloat16 (inputs and kernels cast, float32 outside each
      convolution): 'none' (default) or 'superresolution'. The tri-plane backbone, mapping,
      decoder, rendering, losses and optimizer state stay float32: bf16 backbone convolutions move
      the planes by ~2% of their range, which the density amplifies into ~0.07 on image_raw
      (tests/test_bf16_policy.py has the measurements and the parity bound of the SR policy).
      A runtime switch, not stored by ``to_json``.
    num_fp16_res, sr_fused_modconv_default, fused_modconv_default, extra: stored for round trips.
  """
  z_dim: int = 512
  w_dim: int = 512
  c_dim: int = 25
  img_resolution: int = 512
  img_channels: int = 3
  mapping_num_layers: int = 2
  mapping_lr_multiplier: float = 0.01
  mapping_embed_features: Optional[int] = None
  mapping_layer_features: Optional[int] = None
  mapping_activation: str = "lrelu"
  channel_base: int = 32768
  channel_max: int = 512
  num_fp16_res: int = 0
  conv_clamp: Optional[float] = None
  fused_modconv_default: Any = "inference_only"
  superresolution_module: str = "training.superresolution.SuperresolutionHybrid8XDC"
  sr_num_fp16_res: int = 0
  sr_antialias: bool = True
  sr_kwargs: tuple = ()
  superresolution_noise_mode: str = "none"
  c_gen_conditioning_zero: bool = False
  c_scale: float = 1.0
  neural_rendering_resolution: int = 64
  render_options: RenderOptions = RenderOptions()
  inplace_image_raw: bool = True
  fused_modconv: bool = False
  render_kernel: str = "auto"
  bf16_convs: str = "none"

  def __post_init__(self):
    if self.bf16_convs not in BF16_CONVS:
      raise ValueError(f"bf16_convs must be one of {BF16_CONVS}, got {self.bf16_convs!r}")
    if self.render_kernel not in RENDER_KERNELS:
      raise ValueError(f"render_kernel must be one of {RENDER_KERNELS}, got {self.render_kernel!r}")
    sr_spec(self.superresolution_module)  # refuses unknown modules by name
    if self.superresolution_noise_mode not in NOISE_MODES:
      raise ValueError(f"superresolution_noise_mode must be one of {NOISE_MODES}, got "
                       f"{self.superresolution_noise_mode!r}")
    if self.w_dim != 512:
      raise ValueError(f"w_dim must be 512: every EG3D superresolution module hard-codes 512-d "
                       f"styles, got {self.w_dim}")
    if sr_spec(self.superresolution_module).img_resolution != self.img_resolution:
      raise ValueError(f"{self.superresolution_module} produces "
                       f"{sr_spec(self.superresolution_module).img_resolution}px images, but "
                       f"img_resolution={self.img_resolution}")

  @property
  def num_ws(self) -> int:
    return self.synthesis_module().num_ws

  def replace(self, **changes) -> "EG3DConfig":
    return dataclasses.replace(self, **changes)

  def synthesis_module(self) -> SynthesisNetwork:
    return SynthesisNetwork(w_dim=self.w_dim, img_resolution=PLANE_RESOLUTION,
                            img_channels=3 * PLANE_CHANNELS, channel_base=self.channel_base,
                            channel_max=self.channel_max, conv_clamp=self.conv_clamp,
                            fused_modconv=self.fused_modconv)

  @classmethod
  def from_init_kwargs(cls, init_kwargs: Mapping[str, Any], **overrides) -> "EG3DConfig":
    """Config from the official ``TriPlaneGenerator`` constructor kwargs.

    ``init_kwargs`` may also carry ``neural_rendering_resolution`` (the pickled attribute).
    Unknown keys raise ``ValueError`` naming them (ignoring one could change the image).
    """
    kw = dict(init_kwargs)
    known = {"z_dim", "w_dim", "c_dim", "img_resolution", "img_channels", "sr_num_fp16_res",
             "mapping_kwargs", "rendering_kwargs", "sr_kwargs", "neural_rendering_resolution",
             "class_name"} | _SYNTHESIS_KEYS
    unknown = sorted(set(kw) - known)
    if unknown:
      raise ValueError(f"EG3D init kwargs: unknown key(s) {unknown}")
    for k in ("z_dim", "w_dim", "img_resolution"):
      if k not in kw:
        raise ValueError(f"EG3D init kwargs: missing {k!r}")
    mk = dict(kw.get("mapping_kwargs") or {})
    bad = sorted(set(mk) - _MAPPING_KEYS - _MAPPING_TRAINING_KEYS)
    if bad:
      raise ValueError(f"EG3D mapping_kwargs: unknown key(s) {bad}")
    srk = dict(kw.get("sr_kwargs") or {})
    bad = sorted(set(srk) - _SR_KEYS)
    if bad:
      raise ValueError(f"EG3D sr_kwargs: unknown key(s) {bad}")
    rk = dict(kw.get("rendering_kwargs") or {})
    if "superresolution_module" not in rk:
      raise ValueError("EG3D rendering_kwargs: missing 'superresolution_module'")
    render_kw, gen_kw, _ = split_rendering_kwargs(rk)
    options = RenderOptions.from_rendering_kwargs(rk)
    if "image_resolution" in gen_kw and int(gen_kw["image_resolution"]) != int(kw["img_resolution"]):
      raise ValueError(f"rendering_kwargs.image_resolution ({gen_kw['image_resolution']}) != "
                       f"img_resolution ({kw['img_resolution']})")
    del render_kw
    cfg = dict(
        z_dim=int(kw["z_dim"]), w_dim=int(kw["w_dim"]), c_dim=int(kw.get("c_dim", 25)),
        img_resolution=int(kw["img_resolution"]), img_channels=int(kw.get("img_channels", 3)),
        mapping_num_layers=int(mk.get("num_layers", 8)),
        mapping_lr_multiplier=float(mk.get("lr_multiplier", 0.01)),
        mapping_embed_features=mk.get("embed_features"),
        mapping_layer_features=mk.get("layer_features"),
        mapping_activation=str(mk.get("activation", "lrelu")),
        channel_base=int(kw.get("channel_base", 32768)),
        channel_max=int(kw.get("channel_max", 512)),
        num_fp16_res=int(kw.get("num_fp16_res", 4)),
        conv_clamp=None if kw.get("conv_clamp") is None else float(kw["conv_clamp"]),
        fused_modconv_default=kw.get("fused_modconv_default", "inference_only"),
        superresolution_module=str(gen_kw["superresolution_module"]),
        sr_num_fp16_res=int(kw.get("sr_num_fp16_res", 0)),
        sr_antialias=bool(gen_kw.get("sr_antialias", True)),
        sr_kwargs=_freeze(srk),
        superresolution_noise_mode=str(gen_kw.get("superresolution_noise_mode", "none")),
        c_gen_conditioning_zero=bool(gen_kw.get("c_gen_conditioning_zero", False)),
        # The official code multiplies c by rendering_kwargs.get('c_scale', 0).
        c_scale=float(gen_kw.get("c_scale", 0.0)),
        neural_rendering_resolution=int(kw.get("neural_rendering_resolution", 64)),
        render_options=options,
    )
    cfg.update(overrides)
    return cls(**cfg)

  def to_init_kwargs(self) -> dict[str, Any]:
    """The official constructor kwargs (plus ``neural_rendering_resolution``), JSON-friendly."""
    rk = self.render_options.to_rendering_kwargs()
    rk.update(image_resolution=self.img_resolution,
              superresolution_module=self.superresolution_module,
              c_gen_conditioning_zero=self.c_gen_conditioning_zero, c_scale=self.c_scale,
              superresolution_noise_mode=self.superresolution_noise_mode,
              sr_antialias=self.sr_antialias)
    mk = {"num_layers": self.mapping_num_layers, "lr_multiplier": self.mapping_lr_multiplier,
          "activation": self.mapping_activation}
    if self.mapping_embed_features is not None:
      mk["embed_features"] = self.mapping_embed_features
    if self.mapping_layer_features is not None:
      mk["layer_features"] = self.mapping_layer_features
    return dict(z_dim=self.z_dim, w_dim=self.w_dim, c_dim=self.c_dim,
                img_resolution=self.img_resolution, img_channels=self.img_channels,
                mapping_kwargs=mk, rendering_kwargs=rk, sr_kwargs=_thaw(self.sr_kwargs),
                sr_num_fp16_res=self.sr_num_fp16_res, channel_base=self.channel_base,
                channel_max=self.channel_max, num_fp16_res=self.num_fp16_res,
                conv_clamp=self.conv_clamp, fused_modconv_default=self.fused_modconv_default,
                neural_rendering_resolution=self.neural_rendering_resolution)

  def to_json(self) -> dict[str, Any]:
    """Round-trippable description: official kwargs + the jaxinv-only switches."""
    return {"init_kwargs": self.to_init_kwargs(),
            "jaxinv": {"inplace_image_raw": self.inplace_image_raw,
                       "fused_modconv": self.fused_modconv,
                       "plane_axes": [list(a) for a in self.render_options.plane_axes]}}

  @classmethod
  def from_json(cls, d: Mapping[str, Any]) -> "EG3DConfig":
    extra = dict(d.get("jaxinv", {}))
    cfg = cls.from_init_kwargs(d["init_kwargs"])
    plane_axes = extra.pop("plane_axes", None)
    if plane_axes is not None:
      cfg = cfg.replace(render_options=cfg.render_options.replace(
          plane_axes=tuple(tuple(a) for a in plane_axes)))
    return cfg.replace(**extra)


class _Backbone(nn.Module):
  config: EG3DConfig

  def setup(self):
    cfg = self.config
    self.synthesis = cfg.synthesis_module()
    self.mapping = MappingNetwork(
        z_dim=cfg.z_dim, c_dim=cfg.c_dim, w_dim=cfg.w_dim, num_ws=cfg.num_ws,
        num_layers=cfg.mapping_num_layers, embed_features=cfg.mapping_embed_features,
        layer_features=cfg.mapping_layer_features, activation=cfg.mapping_activation,
        lr_multiplier=cfg.mapping_lr_multiplier)

  def __call__(self, z, c, ws, noise_mode="const"):
    return self.mapping(z, c), self.synthesis(ws, noise_mode)


class TriPlaneGenerator(nn.Module):
  """Flax module holding every EG3D parameter; use it through :class:`EG3DGenerator`.

  Params: ``backbone/{mapping,synthesis}``, ``superresolution``, ``decoder`` (names follow the
  official state dict; see ``jaxinv.convert.eg3d``).
  """
  config: EG3DConfig

  def setup(self):
    cfg = self.config
    self.backbone = _Backbone(cfg)
    self.superresolution = Superresolution(
        module=cfg.superresolution_module, channels=PLANE_CHANNELS,
        img_resolution=cfg.img_resolution, sr_num_fp16_res=cfg.sr_num_fp16_res,
        sr_antialias=cfg.sr_antialias, w_dim=cfg.w_dim, fused_modconv=cfg.fused_modconv,
        conv_dtype=None if cfg.bf16_convs == "none" else "bfloat16")
    self.decoder = OSGDecoder(output_dim=PLANE_CHANNELS, lr_mul=cfg.render_options.decoder_lr_mul)

  def init_all(self, z, c, ws, feats):
    """Touches every submodule once (for ``init``)."""
    self.backbone(z, c, ws)
    r = sr_spec(self.config.superresolution_module).input_resolution
    x = jnp.zeros((z.shape[0], r, r, PLANE_CHANNELS))
    self.superresolution(x[..., :3], x, ws)
    self.decoder(feats)

  def mapping(self, z, c, truncation_psi, truncation_cutoff):
    cfg = self.config
    if cfg.c_gen_conditioning_zero:
      c = jnp.zeros_like(c)
    return self.backbone.mapping(z, c * cfg.c_scale, truncation_psi, truncation_cutoff)

  def planes(self, ws, noise_mode="const"):
    x = self.backbone.synthesis(ws, noise_mode)  # [B, 256, 256, 96]
    b, h, w, _ = x.shape
    # Official: planes.view(B, 3, 32, H, W): plane p holds channels 32p .. 32p+31.
    return jnp.transpose(x.reshape(b, h, w, 3, PLANE_CHANNELS), (0, 3, 1, 2, 4))

  def synthesis(self, ws, c, resolution: int, noise_mode="const", draws=None, key=None):
    return self.render_planes(self.planes(ws, noise_mode), ws, c, resolution, draws, key)

  def render_planes(self, planes, ws, c, resolution: int, draws=None, key=None):
    """Neural rendering of ``planes`` + superresolution styled by ``ws[:, -1]``."""
    cfg = self.config
    b = ws.shape[0]
    origins, dirs = rays_from_label(c, resolution)
    kernel = resolve_kernel(cfg.render_kernel)
    if kernel == "pallas":
      decoder = fused_weights(self.decoder.variables["params"], cfg.render_options.decoder_lr_mul)
    else:
      decoder = lambda f, d: self.decoder(f, d)  # noqa: E731
    feats, depth, wsum = render(planes, decoder, origins, dirs, cfg.render_options, key=key,
                                draws=draws, kernel=kernel)
    r = resolution
    feature_image = feats.reshape(b, r, r, feats.shape[-1])  # ray m = row * R + col
    image_depth = depth.reshape(b, r, r, 1)
    weights_sum = wsum.reshape(b, r, r, 1)
    rgb = feature_image[..., :3]
    image, rgb_inplace = self.superresolution(rgb, feature_image, ws,
                                              noise_mode=cfg.superresolution_noise_mode)
    image_raw = rgb_inplace if (cfg.inplace_image_raw and rgb_inplace is not None) else rgb
    return dict(image=image, image_raw=image_raw, image_depth=image_depth,
                feature_image=feature_image, weights_sum=weights_sum)


# ------------------------------------------------------------------ compiled entry points

@functools.lru_cache(maxsize=None)
def _module(config: EG3DConfig) -> TriPlaneGenerator:
  return TriPlaneGenerator(config)


def _rngs(key, noise_mode):
  if noise_mode != "random":
    return None
  if key is None:
    raise ValueError("noise_mode='random' needs a key")
  return {"noise": key}


@functools.lru_cache(maxsize=None)
def _mapping_fn(config: EG3DConfig):
  m = _module(config)

  def fn(params, z, c, psi, cutoff):
    return m.apply(params, z, c, psi, cutoff, method=TriPlaneGenerator.mapping)
  return jax.jit(fn)


@functools.lru_cache(maxsize=None)
def _planes_fn(config: EG3DConfig, noise_mode: str):
  m = _module(config)

  def fn(params, ws, key):
    return m.apply(params, ws, noise_mode, method=TriPlaneGenerator.planes,
                   rngs=_rngs(key, noise_mode))
  return jax.jit(fn)


def _split_key(key, noise_mode):
  if key is None:
    return None, None
  k_render, k_noise = jax.random.split(key)
  return k_render, (k_noise if noise_mode == "random" else None)


@functools.lru_cache(maxsize=None)
def _synthesis_fn(config: EG3DConfig, resolution: int, noise_mode: str):
  m = _module(config)

  def fn(params, ws, c, key, draws):
    k_render, k_noise = _split_key(key, noise_mode)
    return m.apply(params, ws, c, resolution, noise_mode, draws, k_render,
                   method=TriPlaneGenerator.synthesis, rngs=_rngs(k_noise, noise_mode))
  return jax.jit(fn)


@functools.lru_cache(maxsize=None)
def _render_planes_fn(config: EG3DConfig, resolution: int):
  m = _module(config)

  def fn(params, planes, ws, c, key, draws):
    return m.apply(params, planes, ws, c, resolution, draws, key,
                   method=TriPlaneGenerator.render_planes)
  return jax.jit(fn)


@functools.lru_cache(maxsize=None)
def _forward_fn(config: EG3DConfig, resolution: int, noise_mode: str):
  m = _module(config)

  def fn(params, z, c, psi, cutoff, key, draws):
    ws = m.apply(params, z, c, psi, cutoff, method=TriPlaneGenerator.mapping)
    k_render, k_noise = _split_key(key, noise_mode)
    return m.apply(params, ws, c, resolution, noise_mode, draws, k_render,
                   method=TriPlaneGenerator.synthesis, rngs=_rngs(k_noise, noise_mode))
  return jax.jit(fn)


def init_params(config: EG3DConfig, key) -> dict:
  """Random parameters in the official initialisation (a *random-init preset*, not a model)."""
  b = 1
  z = jnp.zeros((b, config.z_dim))
  c = jnp.zeros((b, config.c_dim))
  ws = jnp.zeros((b, config.num_ws, config.w_dim))
  feats = jnp.zeros((b, 3, 1, PLANE_CHANNELS))
  return jax.jit(functools.partial(_module(config).init, method=TriPlaneGenerator.init_all))(
      {"params": key}, z, c, ws, feats)


def param_shapes(config: EG3DConfig) -> dict:
  """``{'params': ...}`` tree of ``jax.ShapeDtypeStruct`` (no computation)."""
  return jax.eval_shape(lambda k: init_params(config, k), jax.random.PRNGKey(0))


# ------------------------------------------------------------------ the generator value

def _check_batch(x, name, width, layout):
  checks.check_shape(x, name, (None, width), layout)
  checks.check_floating(x, name)
  checks.check_finite(x, name)


def _check_c(c, batch=None, render=False):
  """Checks camera labels ``[B, 25]`` and returns them; a single label ``[25]`` (as
  ``jaxinv.preprocess`` returns) is broadcast to the batch. ``render=True`` (cameras that are
  rendered from) also refuses a cam2world whose last row is not [0, 0, 0, 1] and malformed
  intrinsics, as ``Camera.from_label`` does; value checks follow ``jaxinv.checks`` (skipped under
  jit unless ``checks.checked``)."""
  s = tuple(np.shape(c))
  if s == (25,) and batch is not None:
    c = jnp.broadcast_to(jnp.asarray(c)[None], (batch, 25))
    s = (batch, 25)
  if len(s) != 2 or s[1] != 25:
    raise ValueError(f"c: expected camera labels [B, 25] (16 cam2world + 9 intrinsics numbers) "
                     f"or one label [25], got shape {s}")
  if batch is not None and s[0] != batch:
    raise ValueError(f"c: batch size {s[0]} does not match {batch}")
  checks.check_floating(c, "c")
  if render:
    camera_lib.validate_label(c, "c", rotation=False)
  else:
    checks.check_finite(c, "c")
  return c


def _resolve_draws(draws):
  if draws is None:
    return None
  if not isinstance(draws, Mapping):
    raise TypeError(f"draws: expected a dict(u_stratified, u_importance), got {type(draws).__name__}")
  return {k: jnp.asarray(v, jnp.float32) for k, v in draws.items()}


@jax.tree_util.register_pytree_node_class
@dataclasses.dataclass(frozen=True)
class EG3DGenerator:
  """An EG3D generator: ``config`` (static) + ``params`` (``{'params': ...}`` pytree).

  All methods are pure and jit-compiled; ``G`` itself is a pytree, so ``jax.jit(f)(G, ...)`` and
  ``jax.grad`` with respect to ``G.params`` work.
  """
  config: EG3DConfig
  params: Any

  def tree_flatten(self):
    return (self.params,), self.config

  @classmethod
  def tree_unflatten(cls, config, children):
    return cls(config, children[0])

  # -- conveniences
  @property
  def num_ws(self) -> int:
    return self.config.num_ws

  @property
  def z_dim(self) -> int:
    return self.config.z_dim

  @property
  def neural_rendering_resolution(self) -> int:
    return self.config.neural_rendering_resolution

  def replace(self, **config_changes) -> "EG3DGenerator":
    """Same parameters, different config switches (e.g. ``inplace_image_raw=False``)."""
    return EG3DGenerator(self.config.replace(**config_changes), self.params)

  # -- entry points
  def mapping(self, z, c, truncation_psi=1.0, truncation_cutoff=None):
    """z: [B, z_dim], c: [B, 25] -> ws: [B, num_ws, w_dim].

    ``truncation_cutoff=None`` truncates every w; an int truncates only ``ws[:, :cutoff]``.
    """
    _check_batch(z, "z", self.config.z_dim, f"[B, {self.config.z_dim}]")
    c = _check_c(c, np.shape(z)[0])
    cutoff = self.config.num_ws if truncation_cutoff is None else int(truncation_cutoff)
    return _mapping_fn(self.config)(self.params, jnp.asarray(z, jnp.float32),
                                    jnp.asarray(c, jnp.float32),
                                    jnp.asarray(truncation_psi, jnp.float32),
                                    jnp.asarray(cutoff, jnp.int32))

  def _check_ws(self, ws):
    cfg = self.config
    checks.check_shape(ws, "ws", (None, cfg.num_ws, cfg.w_dim), f"[B, {cfg.num_ws}, {cfg.w_dim}]")
    checks.check_floating(ws, "ws")
    checks.check_finite(ws, "ws")

  def planes(self, ws, *, noise_mode="const", key=None):
    """ws: [B, num_ws, w_dim] -> planes [B, 3, 256, 256, 32] (XY, XZ, ZX frames)."""
    self._check_ws(ws)
    _check_noise(noise_mode)
    return _planes_fn(self.config, noise_mode)(self.params, jnp.asarray(ws, jnp.float32), key)

  def synthesis(self, ws, c, *, key=None, draws=None, neural_rendering_resolution=None,
                noise_mode="const"):
    """Renders ``ws`` from cameras ``c``.

    Args:
      ws: [B, num_ws, w_dim].
      c: [B, 25] camera labels.
      key: PRNG key for the renderer's stratified jitter and importance draws (and the noise
        when ``noise_mode='random'``).
      draws: dict(u_stratified [B, R*R, D], u_importance [B, R*R, Ni]) of uniforms used instead.
        With neither key nor draws the render is deterministic (jitter 0.5, u = linspace).
      neural_rendering_resolution: R (default ``config.neural_rendering_resolution``).
      noise_mode: backbone noise, 'const' (default, deterministic), 'random' or 'none'.

    Returns:
      dict(image [B, IMG, IMG, 3], image_raw [B, R, R, 3], image_depth [B, R, R, 1],
           feature_image [B, R, R, 32], weights_sum [B, R, R, 1]).
    """
    self._check_ws(ws)
    c = _check_c(c, np.shape(ws)[0], render=True)
    _check_noise(noise_mode)
    r = self._resolution(neural_rendering_resolution)
    return _synthesis_fn(self.config, r, noise_mode)(
        self.params, jnp.asarray(ws, jnp.float32), jnp.asarray(c, jnp.float32), key,
        _resolve_draws(draws))

  def render_planes(self, planes, ws, c, *, key=None, draws=None,
                    neural_rendering_resolution=None):
    """``synthesis`` from given tri-planes (e.g. planes plus predicted offsets).

    Args:
      planes: [B, 3, 256, 256, 32]; ws: [B, num_ws, w_dim] (the SR uses ``ws[:, -1]``); c: [B, 25].
      key, draws, neural_rendering_resolution: as in :meth:`synthesis`.
    Returns: the same dict as :meth:`synthesis`.
    """
    self._check_ws(ws)
    c = _check_c(c, np.shape(ws)[0], render=True)
    checks.check_shape(planes, "planes", (np.shape(ws)[0], 3, None, None, PLANE_CHANNELS),
                       f"[B, 3, H, W, {PLANE_CHANNELS}]")
    checks.check_finite(planes, "planes")
    r = self._resolution(neural_rendering_resolution)
    return _render_planes_fn(self.config, r)(
        self.params, jnp.asarray(planes, jnp.float32), jnp.asarray(ws, jnp.float32),
        jnp.asarray(c, jnp.float32), key, _resolve_draws(draws))

  def __call__(self, z, c, *, truncation_psi=1.0, truncation_cutoff=None, key=None, draws=None,
               neural_rendering_resolution=None, noise_mode="const"):
    """``synthesis(mapping(z, c, ...), c, ...)`` in one compiled call."""
    _check_batch(z, "z", self.config.z_dim, f"[B, {self.config.z_dim}]")
    c = _check_c(c, np.shape(z)[0], render=True)
    _check_noise(noise_mode)
    r = self._resolution(neural_rendering_resolution)
    cutoff = self.config.num_ws if truncation_cutoff is None else int(truncation_cutoff)
    return _forward_fn(self.config, r, noise_mode)(
        self.params, jnp.asarray(z, jnp.float32), jnp.asarray(c, jnp.float32),
        jnp.asarray(truncation_psi, jnp.float32), jnp.asarray(cutoff, jnp.int32), key,
        _resolve_draws(draws))

  def _resolution(self, r):
    r = self.config.neural_rendering_resolution if r is None else r
    if int(r) != r or int(r) < 1:
      raise ValueError(f"neural_rendering_resolution must be a positive int, got {r!r}")
    return int(r)


def _check_noise(noise_mode):
  if noise_mode not in NOISE_MODES:
    raise ValueError(f"noise_mode must be one of {NOISE_MODES}, got {noise_mode!r}")


# ------------------------------------------------------------------ random-init presets

TINY_INIT_KWARGS = {
    "z_dim": 64, "w_dim": 512, "c_dim": 25, "img_resolution": 128, "img_channels": 3,
    "mapping_kwargs": {"num_layers": 2}, "channel_base": 2048, "channel_max": 64,
    "num_fp16_res": 0, "conv_clamp": None, "sr_num_fp16_res": 0,
    "sr_kwargs": {"channel_base": 2048, "channel_max": 64, "fused_modconv_default": "inference_only"},
    "fused_modconv_default": "inference_only",
    "rendering_kwargs": {
        "image_resolution": 128, "disparity_space_sampling": False, "clamp_mode": "softplus",
        "superresolution_module": "training.superresolution.SuperresolutionHybrid2X",
        "c_gen_conditioning_zero": False, "c_scale": 1.0, "superresolution_noise_mode": "none",
        "decoder_lr_mul": 1.0, "sr_antialias": True, "depth_resolution": 12,
        "depth_resolution_importance": 12, "ray_start": 2.25, "ray_end": 3.3, "box_warp": 1,
        "avg_camera_radius": 2.7, "avg_camera_pivot": [0, 0, 0.2]},
    "neural_rendering_resolution": 32,
}


def tiny_eg3d(seed: int = 0, **overrides) -> EG3DGenerator:
  """A **random-init preset** (not a trained model): the fixtures' ``tiny`` topology.

  ``overrides`` replace fields of :class:`EG3DConfig` (e.g. ``neural_rendering_resolution=16``).
  The parameters are built once per (config, seed) in a process (initialisation compiles the
  whole network, tens of seconds on a small CPU) and handed out in fresh containers.
  """
  cfg = EG3DConfig.from_init_kwargs(TINY_INIT_KWARGS, **overrides)
  params = jax.tree_util.tree_map(lambda a: a, _tiny_params(cfg, int(seed)))
  return EG3DGenerator(cfg, params)


@functools.lru_cache(maxsize=8)
def _tiny_params(cfg: EG3DConfig, seed: int):
  return init_params(cfg, jax.random.PRNGKey(seed))
