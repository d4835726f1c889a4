"""GOAE weights: the released encoder / AFA state dicts -> ``jaxinv.models.encoders.goae`` trees.

GOAE ships two plain state-dict files (``encoder_FFHQ.pt`` = ``GOAEncoder.state_dict()``,
``afa_FFHQ.pt`` = ``AFA.state_dict()``, loaded upstream with ``load_state_dict`` and no prefix);
a ``module.`` (DataParallel) prefix is stripped when every key has it.

Name table (upstream -> jaxinv), ``*`` = same leaf name with the usual fix-ups (Linear weight
transposed to a Dense kernel, conv weight OIHW -> HWIO, LayerNorm weight -> scale):

==========================================================  ===========================================
``swin_model.patch_embed.proj.*``                           ``swin_model/patch_embed_proj/*``
``swin_model.patch_embed.norm.*``                           ``swin_model/patch_embed_norm/*``
``swin_model.layers.L.blocks.B.attn.{q_bias,v_bias}``        ``.../layers_L_blocks_B/attn/{q_bias,v_bias}``
``...attn.logit_scale [H,1,1]``                             ``.../attn/logit_scale [H]``
``...attn.qkv.weight``, ``...attn.proj.*``                  ``.../attn/qkv/kernel``, ``.../attn/proj/*``
``...attn.cpb_mlp.0.*``, ``...attn.cpb_mlp.2.weight``        ``.../attn/cpb_fc1/*``, ``.../attn/cpb_fc2/kernel``
``...blocks.B.{norm1,norm2}.*``, ``...mlp.{fc1,fc2}.*``       ``.../layers_L_blocks_B/{norm1,norm2,fc1,fc2}/*``
``swin_model.layers.L.downsample.{reduction,norm}.*``        ``swin_model/layers_L_downsample/{reduction,norm}/*``
``swin_model.norm.*``                                       ``swin_model/norm/*``
``mapper_X.{i}.*`` (Linear at even ``i``)                    ``mapper_X/fc{i}/*``
``cross_att_X.multihead_attn.in_proj_{weight,bias}``         ``cross_att_X/multihead_attn/{q,k,v}_proj/*``
``cross_att_X.multihead_attn.out_proj.*``, ``linear{1,2}.*``  ``cross_att_X/multihead_attn/out_proj/*``, ...
AFA ``input_layer.*``, ``body.i.*``                          via ``jaxinv.convert.irse``
AFA ``output_layer.{0,2}.{weight,bias}`` (EqualConv2d)       ``output_conv{0,2}/{weight (HWIO), bias}``
==========================================================  ===========================================

The Swin buffers ``relative_coords_table``, ``relative_position_index`` and ``attn_mask`` are
recomputed by ``jaxinv.nn.swin``; a checkpoint's copies are compared with them (a mismatch means
a different window configuration) and then ignored.
"""
from __future__ import annotations

import dataclasses
import functools
from typing import Any, Mapping

import jax
import jax.numpy as jnp
import numpy as np

from jaxinv import checks
from jaxinv.convert import common
from jaxinv.convert.common import (KeyTracker, check_tree_matches, conv_oihw_to_hwio,
                                   linear_to_dense, strip_prefix)
from jaxinv.convert.irse import combine_variables, convert_irse_body, convert_irse_input_layer
from jaxinv.models.encoders.goae import AFA, AFAConfig, GOAEncoder, GOAEncoderConfig
from jaxinv.nn import swin
from jaxinv.nn.irse import UnitSpec
from jaxinv.nn.swin import SwinV2Config

ENCODER_KIND = "goae_encoder"
AFA_KIND = "goae_afa"


# ----------------------------------------------------------------------------------- pieces


def _linear(t: KeyTracker, key: str, n_in: int, n_out: int, bias: bool = True) -> dict:
  out = {"kernel": linear_to_dense(t.take(f"{key}.weight", (n_out, n_in)))}
  if bias:
    out["bias"] = t.take(f"{key}.bias", (n_out,))
  return out


def _layer_norm(t: KeyTracker, key: str, dim: int) -> dict:
  return {"scale": t.take(f"{key}.weight", (dim,)), "bias": t.take(f"{key}.bias", (dim,))}


def _mlp_stack(t: KeyTracker, key: str, n_in: int, widths) -> dict:
  out = {}
  for i, w in enumerate(widths):
    out[f"fc{2 * i}"] = _linear(t, f"{key}.{2 * i}", n_in, w)
    n_in = w
  return out


def _cross_attention(t: KeyTracker, key: str, dim: int, ffn: int) -> dict:
  """``CrossAttention`` (``multihead_attn`` + FFN; its LayerNorms have no parameters)."""
  w = t.take(f"{key}.multihead_attn.in_proj_weight", (3 * dim, dim))
  b = t.take(f"{key}.multihead_attn.in_proj_bias", (3 * dim,))
  mha = {name: {"kernel": linear_to_dense(w[i * dim:(i + 1) * dim]),
                "bias": b[i * dim:(i + 1) * dim]}
         for i, name in enumerate(("q_proj", "k_proj", "v_proj"))}
  mha["out_proj"] = _linear(t, f"{key}.multihead_attn.out_proj", dim, dim)
  return {"multihead_attn": mha,
          "linear1": _linear(t, f"{key}.linear1", dim, ffn),
          "linear2": _linear(t, f"{key}.linear2", ffn, dim)}


def _check_buffer(t: KeyTracker, key: str, expected: np.ndarray, what: str) -> None:
  """Compares a shipped constant buffer with the recomputed one, then marks it ignored."""
  if key not in t:
    return
  got = np.asarray(t.take(key))
  if got.shape != expected.shape or not np.allclose(got, expected, rtol=0, atol=1e-6):
    detail = (f"shape {got.shape} vs {expected.shape}" if got.shape != expected.shape
              else f"max |diff| {np.abs(got.astype(np.float64) - expected).max():.3g}")
    raise ValueError(f"{what}: buffer {key!r} differs from the one this configuration implies "
                     f"({detail}); the checkpoint was built with another window configuration")


def convert_swin(t: KeyTracker, prefix: str, cfg: SwinV2Config, what: str) -> dict:
  """``{prefix}patch_embed.*``, ``{prefix}layers.*``, ``{prefix}norm.*`` -> ``SwinV2`` params."""
  p = cfg.patch_size
  e = cfg.embed_dim
  params = {
      "patch_embed_proj": {
          "kernel": conv_oihw_to_hwio(t.take(f"{prefix}patch_embed.proj.weight",
                                             (e, cfg.in_chans, p, p))),
          "bias": t.take(f"{prefix}patch_embed.proj.bias", (e,))},
      "patch_embed_norm": _layer_norm(t, f"{prefix}patch_embed.norm", e),
  }
  for i in range(cfg.num_stages):
    c, h, r = cfg.width(i), cfg.num_heads[i], cfg.resolution(i)
    hidden = int(c * cfg.mlp_ratio)
    for j in range(cfg.depths[i]):
      k = f"{prefix}layers.{i}.blocks.{j}"
      window, shift = swin.block_geometry(r, cfg.window_size, j)
      attn = {
          "q_bias": t.take(f"{k}.attn.q_bias", (c,)),
          "v_bias": t.take(f"{k}.attn.v_bias", (c,)),
          "logit_scale": t.take(f"{k}.attn.logit_scale", (h, 1, 1)).reshape(h),
          "qkv": {"kernel": linear_to_dense(t.take(f"{k}.attn.qkv.weight", (3 * c, c)))},
          "proj": _linear(t, f"{k}.attn.proj", c, c),
          "cpb_fc1": _linear(t, f"{k}.attn.cpb_mlp.0", 2, 512),
          "cpb_fc2": _linear(t, f"{k}.attn.cpb_mlp.2", 512, h, bias=False),
      }
      _check_buffer(t, f"{k}.attn.relative_coords_table",
                    swin.relative_coords_table(window, cfg.pretrained_window_sizes[i])[None], what)
      _check_buffer(t, f"{k}.attn.relative_position_index",
                    swin.relative_position_index(window), what)
      if shift:
        _check_buffer(t, f"{k}.attn_mask", swin.shifted_window_mask(r, window, shift), what)
      elif f"{k}.attn_mask" in t:
        raise ValueError(f"{what}: {k}.attn_mask present, but this configuration does not shift "
                         f"block {j} of stage {i} (another window size or resolution?)")
      params[f"layers_{i}_blocks_{j}"] = {
          "attn": attn,
          "norm1": _layer_norm(t, f"{k}.norm1", c),
          "fc1": _linear(t, f"{k}.mlp.fc1", c, hidden),
          "fc2": _linear(t, f"{k}.mlp.fc2", hidden, c),
          "norm2": _layer_norm(t, f"{k}.norm2", c),
      }
    if t.has_prefix(f"{prefix}layers.{i}.blocks.{cfg.depths[i]}."):
      raise ValueError(f"{what}: stage {i} has more than the configured {cfg.depths[i]} blocks")
    if i < cfg.num_stages - 1:
      k = f"{prefix}layers.{i}.downsample"
      params[f"layers_{i}_downsample"] = {
          "reduction": _linear(t, f"{k}.reduction", 4 * c, 2 * c, bias=False),
          "norm": _layer_norm(t, f"{k}.norm", 2 * c)}
  params["norm"] = _layer_norm(t, f"{prefix}norm", cfg.width(cfg.num_stages - 1))
  return params


# ---------------------------------------------------------------------------------- encoder


def _check_encoder_keys(sd: Mapping[str, Any], what: str) -> None:
  if "swin_model.patch_embed.proj.weight" not in sd:
    sample = ", ".join(list(sd)[:5])
    raise ValueError(f"{what}: not a GOAE encoder state dict (no "
                     f"'swin_model.patch_embed.proj.weight'; first keys: {sample})")


def convert_encoder(sd: Mapping[str, Any], config: GOAEncoderConfig = GOAEncoderConfig(),
                    what: str = "GOAE encoder checkpoint") -> dict:
  """``GOAEncoder.state_dict()`` -> ``{'params': ...}`` for ``GOAEncoder(config)``.

  Raises:
    ValueError: naming every missing, unused or mis-shaped key.
  """
  sd = strip_prefix(sd)
  _check_encoder_keys(sd, what)
  t = KeyTracker(sd, what)
  cfg = config
  e, w, m = cfg.swin.embed_dim, cfg.w_dim, cfg.mlp_layer
  n_fine, n_mid, n_coarse, n_query = (cfg.tokens(i) for i in range(4))
  _, k_coarse, k_mid, k_fine = cfg.ws_split

  def head(key, n_in, n_out):
    return _mlp_stack(t, key, n_in, [n_in] * (m - 1) + [n_out])

  params = {"swin_model": convert_swin(t, "swin_model.", cfg.swin, what),
            "mapper_base_spatial": head("mapper_base_spatial", n_query, 1),
            "mapper_base_channel": head("mapper_base_channel", 8 * e, w)}
  for level, k in (("coarse", k_coarse), ("mid", k_mid), ("fine", k_fine)):
    params[f"mapper_query_spatial_{level}"] = head(f"mapper_query_spatial_{level}", n_query, k)
    params[f"mapper_query_channel_{level}"] = head(f"mapper_query_channel_{level}", 8 * e, w)
  params["mapper_coarse_channel"] = _mlp_stack(t, "mapper_coarse_channel", 4 * e, [w])
  params["mapper_mid_channel"] = _mlp_stack(t, "mapper_mid_channel", 2 * e, [w])
  params["mapper_fine_channel"] = _mlp_stack(t, "mapper_fine_channel", e, [2 * e, w])
  params["mapper_coarse_to_mid_spatial"] = _mlp_stack(
      t, "mapper_coarse_to_mid_spatial", n_coarse, [2 * n_coarse, n_mid])
  params["mapper_mid_to_fine_spatial"] = _mlp_stack(
      t, "mapper_mid_to_fine_spatial", n_mid, [2 * n_mid, n_fine])
  for level in ("coarse", "mid", "fine"):
    params[f"cross_att_{level}"] = _cross_attention(t, f"cross_att_{level}", w, cfg.ca_ffn)
  t.finish()
  params = jax.tree_util.tree_map(lambda a: np.asarray(a, np.float32), params)
  template = jax.eval_shape(
      GOAEncoder(cfg).init, jax.random.PRNGKey(0),
      jnp.zeros((1, cfg.swin.img_size, cfg.swin.img_size, cfg.swin.in_chans), jnp.float32))
  check_tree_matches(template["params"], params, what)
  return {"params": params}


@functools.lru_cache(maxsize=8)
def _encoder_apply(config: GOAEncoderConfig, features: bool):
  model = GOAEncoder(config)
  return jax.jit(lambda variables, x: model.apply(variables, x, features=features))


def encoder_fn(variables: Mapping, config: GOAEncoderConfig = GOAEncoderConfig(),
               features: bool = False):
  """A checked, jit-compiled ``f(x [B, img, img, 3]) -> dict(ws, ws_base[, swin_x_*])``."""
  apply = _encoder_apply(config, features)
  s = config.swin.img_size

  def f(x):
    checks.check_image(x, "x", channels=config.swin.in_chans, size=(s, s))
    return apply(variables, jnp.asarray(x, jnp.float32))

  return f


def _encoder_config(**config) -> GOAEncoderConfig:
  swin_keys = {f.name for f in SwinV2Config.__dataclass_fields__.values()}
  swin_cfg = {k: config.pop(k) for k in list(config) if k in swin_keys}
  return GOAEncoderConfig(swin=SwinV2Config(**swin_cfg), **config)


def reference_goae_encoder(sd: Mapping[str, np.ndarray], features: bool = False, **config):
  """Reference-conformance builder ``goae_encoder``: ``f(x[B,256,256,3]) -> dict(ws, ws_base)``.

  ``config``: ``GOAEncoderConfig`` fields and ``SwinV2Config`` fields (flat), all optional.
  ``features=True`` adds the Swin taps ``swin_x_{fine,mid,coarse,query,base}`` (upstream layouts).
  """
  cfg = _encoder_config(**config)
  return encoder_fn(convert_encoder(sd, cfg), cfg, features)


# -------------------------------------------------------------------------------------- AFA


def _check_afa_keys(sd: Mapping[str, Any], what: str) -> None:
  if "cross_att_gamma.multihead_attn.in_proj_weight" not in sd:
    sample = ", ".join(list(sd)[:5])
    hint = (" (this looks like the GOAE *encoder*; use the encoder converter)"
            if "swin_model.patch_embed.proj.weight" in sd else "")
    raise ValueError(f"{what}: not a GOAE AFA state dict (no "
                     f"'cross_att_gamma.multihead_attn.in_proj_weight'; first keys: {sample}){hint}")


def convert_afa(sd: Mapping[str, Any], config: AFAConfig = AFAConfig(),
                what: str = "GOAE AFA checkpoint") -> dict:
  """``AFA.state_dict()`` -> ``{'params', 'batch_stats'}`` for ``AFA(config)``."""
  sd = strip_prefix(sd)
  _check_afa_keys(sd, what)
  t = KeyTracker(sd, what)
  cfg = config
  c_body, f = cfg.units[-1].depth, cfg.feat_dim

  def equal_conv(key, cin):
    return {"weight": conv_oihw_to_hwio(t.take(f"{key}.weight", (f, cin, 3, 3))),
            "bias": t.take(f"{key}.bias", (f,))}

  variables = combine_variables({
      "input_layer": convert_irse_input_layer(t, "", 3, cfg.stem),
      "body": convert_irse_body(t, "", cfg.units),
      "output_conv0": {"params": equal_conv("output_layer.0", c_body)},
      "output_conv2": {"params": equal_conv("output_layer.2", f)},
      "cross_att_gamma": {"params": _cross_attention(t, "cross_att_gamma", f, cfg.ffn_dim)},
      "cross_att_beta": {"params": _cross_attention(t, "cross_att_beta", f, cfg.ffn_dim)},
  })
  if t.has_prefix(f"body.{len(cfg.units)}."):
    raise ValueError(f"{what}: the body has more than the configured {len(cfg.units)} units")
  t.finish()
  variables = jax.tree_util.tree_map(lambda a: np.asarray(a, np.float32), variables)
  z = jnp.zeros((1, 64, 64, 3), jnp.float32)
  template = jax.eval_shape(AFA(cfg).init, jax.random.PRNGKey(0), z, z,
                            jnp.zeros((1, 4, 4, f), jnp.float32))
  check_tree_matches(template, variables, what)
  return variables


@functools.lru_cache(maxsize=8)
def _afa_apply(config: AFAConfig, features: bool):
  model = AFA(config)
  return jax.jit(lambda v, img, rec, fm: model.apply(v, img, rec, fm, features=features))


def afa_fn(variables: Mapping, config: AFAConfig = AFAConfig(), features: bool = False):
  """A checked, jit-compiled ``f(img, rec_img [B,H,W,3], feature_map [B,h,w,C]) -> dict``."""
  apply = _afa_apply(config, features)

  def f(img, rec_img, feature_map):
    checks.check_image(img, "img")
    checks.check_image(rec_img, "rec_img", size=tuple(np.shape(img)[1:3]), value_range=None)
    checks.check_rank(feature_map, "feature_map", 4, "[B, h, w, C] NHWC")
    checks.check_floating(feature_map, "feature_map")
    if np.shape(feature_map)[-1] != config.feat_dim:
      raise ValueError(f"feature_map: expected {config.feat_dim} channels last [B, h, w, "
                       f"{config.feat_dim}], got shape {tuple(np.shape(feature_map))}")
    if np.shape(img)[0] != np.shape(feature_map)[0] or np.shape(img)[0] != np.shape(rec_img)[0]:
      raise ValueError(f"batch sizes differ: img {np.shape(img)[0]}, rec_img "
                       f"{np.shape(rec_img)[0]}, feature_map {np.shape(feature_map)[0]}")
    if np.shape(img)[1] % 8 or np.shape(img)[2] % 8:
      raise ValueError(f"img: spatial size {tuple(np.shape(img)[1:3])} must be a multiple of 8")
    return apply(variables, *(jnp.asarray(a, jnp.float32) for a in (img, rec_img, feature_map)))

  return f


def reference_goae_afa(sd: Mapping[str, np.ndarray], features: bool = False, **config):
  """Reference-conformance builder ``goae_afa``:
  ``f(img, rec_img [B,512,512,3], feature_map [B,32,32,512]) -> dict(feature_map_adain, gamma, beta)``.
  """
  cfg = AFAConfig(**config)
  return afa_fn(convert_afa(sd, cfg), cfg, features)


# ------------------------------------------------------------------------- released files


def load_encoder_checkpoint(path, config: GOAEncoderConfig = GOAEncoderConfig()) -> dict:
  """Reads GOAE's ``encoder_FFHQ.pt`` (no torch needed) -> encoder variables."""
  from jaxinv.convert import torchfile  # deferred: only file conversions need the reader
  return convert_encoder(torchfile.load_state_dict(path), config, what=f"GOAE encoder {path}")


def load_afa_checkpoint(path, config: AFAConfig = AFAConfig()) -> dict:
  """Reads GOAE's ``afa_FFHQ.pt`` (no torch needed) -> AFA variables."""
  from jaxinv.convert import torchfile
  return convert_afa(torchfile.load_state_dict(path), config, what=f"GOAE AFA {path}")


def _config_to_json(config) -> dict:
  return dataclasses.asdict(config)


def _encoder_config_from_json(d: Mapping[str, Any]) -> GOAEncoderConfig:
  d = dict(d)
  return GOAEncoderConfig(swin=SwinV2Config(**d.pop("swin")), **d)


def _afa_config_from_json(d: Mapping[str, Any]) -> AFAConfig:
  d = dict(d)
  return AFAConfig(units=tuple(UnitSpec(*u) for u in d.pop("units")), **d)


def convert_file(src, dst, kind: str) -> dict:
  """Converts GOAE's ``encoder_FFHQ.pt`` (``kind='goae_encoder'``) or ``afa_FFHQ.pt``
  (``kind='goae_afa'``) to a jaxinv native checkpoint ``dst``; returns the variables."""
  if kind == ENCODER_KIND:
    config, variables = GOAEncoderConfig(), load_encoder_checkpoint(src)
  elif kind == AFA_KIND:
    config, variables = AFAConfig(), load_afa_checkpoint(src)
  else:
    raise ValueError(f"kind must be {ENCODER_KIND!r} or {AFA_KIND!r}, got {kind!r}")
  common.save_native(dst, kind, _config_to_json(config), variables)
  return variables


def load_any(path, kind: str):
  """``(config, variables)`` from a native checkpoint or an original GOAE ``.pt`` file."""
  if kind not in (ENCODER_KIND, AFA_KIND):
    raise ValueError(f"kind must be {ENCODER_KIND!r} or {AFA_KIND!r}, got {kind!r}")
  if common.is_native(path):
    _, config, variables = common.load_native(path, expect_kind=kind)
    if kind == ENCODER_KIND:
      return _encoder_config_from_json(config), variables
    return _afa_config_from_json(config), variables
  if kind == ENCODER_KIND:
    return GOAEncoderConfig(), load_encoder_checkpoint(path)
  return AFAConfig(), load_afa_checkpoint(path)
