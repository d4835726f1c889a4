"""pSp / e4e / PREIM3D encoder weights: upstream state dicts and released ``.pt`` files -> Flax.

Upstream names (``fixtures/ENCODERS.md`` section 4): the IR-SE trunk (``input_layer.*``,
``body.i.*``, see ``jaxinv.convert.irse``), then

=================================  =====================================================
``styles.i.convs.{2j}.weight/bias``  ``style_i/conv_j`` (``convs`` interleaves LeakyReLUs)
``styles.i.linear.weight/bias``      ``style_i/linear`` (EqualLinear; weight stored unscaled)
``latlayer{1,2}.weight/bias``        ``latlayer{1,2}`` (1x1 convs)
``output_layer_2.0.*``               ``output_bn`` (PREIM3D W+ encoder: BN2d(512))
``output_layer_2.3.weight/bias``     ``output_fc`` (Linear 25088 -> 512 over a C,H,W flatten)
``linear.weight/bias``               ``linear`` (PREIM3D W+: EqualLinear 512 -> n_styles*512)
=================================  =====================================================

Released checkpoints (``torch.save`` of the training coach) are dicts with ``state_dict``
(``encoder.*`` is the encoder, ``decoder.*`` the generator, which jaxinv loads separately and
ignores here), ``latent_avg`` (the generator's average w, added to the codes), ``opts`` (the
training options; ``encoder_type`` names the class) and optimizer/discriminator state (ignored).
``load_checkpoint`` reads them without torch and without executing anything.
"""
from __future__ import annotations

import math
import os
import re
from typing import Any, Callable, Mapping, NamedTuple

import numpy as np

from jaxinv.convert.common import (KeyTracker, check_tree_matches, conv_oihw_to_hwio,
                                   conv_with_bias, jit_apply, linear_to_dense)
from jaxinv.convert.irse import combine_variables, convert_bn, convert_irse_body, convert_irse_input_layer
from jaxinv.nn.irse import irse50_units

# Encoder classes by the names the upstream ``opts.encoder_type`` uses.
PSP = "GradualStyleEncoder"
E4E = "Encoder4Editing"
WPLUS = "BackboneEncoderUsingLastLayerIntoWPlus"
_ENCODER_TYPE_ALIASES = {
    "GradualStyleEncoder": PSP, "psp": PSP,
    "Encoder4Editing": E4E, "e4e": E4E,
    "WPlusEncoder": WPLUS, "BackboneEncoderUsingLastLayerIntoWPlus": WPLUS, "preim3d_wplus": WPLUS,
    "preim3d": WPLUS,
}


def _head_spatial(i: int) -> int:
  return 16 if i < 3 else 32 if i < 7 else 64


def count_styles(sd: Mapping[str, Any]) -> int:
  """Number of style heads in a pSp/e4e state dict (``styles.i.*``)."""
  idx = {int(m.group(1)) for k in sd for m in [re.match(r"styles\.(\d+)\.", k)] if m}
  if not idx:
    raise ValueError("state dict has no 'styles.i.*' keys: not a pSp/e4e encoder "
                     f"(first keys: {', '.join(list(sd)[:5])})")
  if idx != set(range(len(idx))):
    raise ValueError(f"state dict style heads are not numbered 0..n-1: {sorted(idx)}")
  return len(idx)


def _input_channels(sd: Mapping[str, Any], what: str) -> int:
  w = sd.get("input_layer.0.weight")
  if w is None:
    raise ValueError(f"{what}: missing 'input_layer.0.weight' (not an IR-SE encoder state dict; "
                     f"first keys: {', '.join(list(sd)[:5])})")
  return int(np.shape(w)[1])


def _equal_linear(t: KeyTracker, key: str, out: int, inp: int) -> dict:
  return {"kernel": linear_to_dense(t.take(f"{key}.weight", (out, inp))),
          "bias": t.take(f"{key}.bias", (out,))}


def _trunk(t: KeyTracker, in_ch: int) -> dict:
  return {"input_layer": convert_irse_input_layer(t, "", in_ch),
          "body": convert_irse_body(t, "", irse50_units())}


def convert_gradual_style(sd: Mapping[str, Any], n_styles: int | None = None,
                          what: str = "pSp encoder state dict") -> dict:
  """pSp ``GradualStyleEncoder`` / e4e ``Encoder4Editing`` state dict -> Flax variables.

  Both classes have the same parameters. ``n_styles`` defaults to the number of heads found.
  """
  found = count_styles(sd)
  if n_styles is not None and n_styles != found:
    raise ValueError(f"{what}: has {found} style heads, but n_styles={n_styles} was requested")
  in_ch = _input_channels(sd, what)
  t = KeyTracker(sd, what)
  sub = _trunk(t, in_ch)
  sub["latlayer1"] = {"params": conv_with_bias(t, "latlayer1", (512, 256, 1, 1))}
  sub["latlayer2"] = {"params": conv_with_bias(t, "latlayer2", (512, 128, 1, 1))}
  for i in range(found):
    head = {f"conv_{j}": conv_with_bias(t, f"styles.{i}.convs.{2 * j}", (512, 512, 3, 3))
            for j in range(int(math.log2(_head_spatial(i))))}
    head["linear"] = _equal_linear(t, f"styles.{i}.linear", 512, 512)
    sub[f"style_{i}"] = {"params": head}
  t.finish()
  return combine_variables(sub)


def convert_wplus(sd: Mapping[str, Any], n_styles: int | None = None,
                  what: str = "PREIM3D W+ encoder state dict") -> dict:
  """PREIM3D ``BackboneEncoderUsingLastLayerIntoWPlus`` state dict -> Flax variables."""
  if "linear.weight" not in sd:
    raise ValueError(f"{what}: missing 'linear.weight' (not a PREIM3D W+ encoder; "
                     f"first keys: {', '.join(list(sd)[:5])})")
  rows = int(np.shape(sd["linear.weight"])[0])
  if rows % 512:
    raise ValueError(f"{what}: linear.weight has {rows} rows, not a multiple of 512")
  if n_styles is not None and rows != 512 * n_styles:
    raise ValueError(f"{what}: linear.weight has shape {tuple(np.shape(sd['linear.weight']))}, "
                     f"n_styles={n_styles} needs ({512 * n_styles}, 512)")
  t = KeyTracker(sd, what)
  sub = _trunk(t, _input_channels(sd, what))
  bn_p, bn_s = convert_bn(t, "output_layer_2.0", 512)
  sub["output_bn"] = {"params": bn_p, "batch_stats": bn_s}
  sub["output_fc"] = {"params": _equal_linear(t, "output_layer_2.3", 512, 512 * 7 * 7)}
  sub["linear"] = {"params": _equal_linear(t, "linear", rows, 512)}
  t.finish()
  return combine_variables(sub)


# ------------------------------------------------------------------------ models + templates

def build_encoder(encoder_type: str, n_styles: int, in_ch: int = 3, *, units=None, taps=None,
                  input_size: int | None = None):
  """The Flax module for an upstream ``encoder_type`` (pSp, e4e or PREIM3D W+).

  ``units`` ([in, depth, stride] per IR-SE unit), ``taps`` and ``input_size`` describe the smaller
  encoders jaxinv trains itself (``runlocal``, the toy world); None = the upstream network.
  """
  from jaxinv.models.encoders import psp as m
  from jaxinv.nn.irse import UnitSpec
  kind = _canonical_type(encoder_type)
  cls = {PSP: m.GradualStyleEncoder, E4E: m.Encoder4Editing, WPLUS: m.WPlusEncoder}[kind]
  kw = {}
  if units is not None:
    kw["units"] = tuple(UnitSpec(*(int(v) for v in u)) for u in units)
  if kind != WPLUS and taps is not None:
    kw["taps"] = tuple(int(t) for t in taps)
  if input_size is not None:
    kw["input_size"] = int(input_size)
  return cls(n_styles=n_styles, in_ch=in_ch, **kw)


def architecture(model) -> dict:
  """What ``build_encoder`` needs besides the type to rebuild ``model`` (JSON-able)."""
  out = {}
  if getattr(model, "units", None) is not None:
    out["units"] = [list(u) for u in model.units]
  if hasattr(model, "taps") and tuple(model.taps) != (6, 20, 23):
    out["taps"] = list(model.taps)
  if getattr(model, "input_size", 256) != 256:
    out["input_size"] = int(model.input_size)
  return out


def _canonical_type(encoder_type: str) -> str:
  if encoder_type not in _ENCODER_TYPE_ALIASES:
    raise ValueError(f"unsupported encoder_type {encoder_type!r}; known: "
                     f"{', '.join(sorted(set(_ENCODER_TYPE_ALIASES)))}")
  return _ENCODER_TYPE_ALIASES[encoder_type]


def load_encoder_from_state_dict(sd: Mapping[str, Any], encoder_type: str,
                                 n_styles: int | None = None):
  """(model, variables) for an encoder state dict with upstream names (no ``encoder.`` prefix).

  The converted tree is checked leaf by leaf against the model's own initialisation.
  """
  import jax
  import jax.numpy as jnp
  kind = _canonical_type(encoder_type)
  sd = {k: np.asarray(v) for k, v in sd.items()}
  if kind == WPLUS:
    variables = convert_wplus(sd, n_styles)
    n = int(sd["linear.weight"].shape[0]) // 512
  else:
    variables = convert_gradual_style(sd, n_styles, what=f"{kind} state dict")
    n = count_styles(sd)
  in_ch = _input_channels(sd, kind)
  model = build_encoder(kind, n, in_ch)
  template = jax.eval_shape(model.init, jax.random.PRNGKey(0), jnp.zeros((1, 256, 256, in_ch)))
  check_tree_matches(template, variables, f"{kind} variables")
  return model, variables


# ---------------------------------------------------------------------- released checkpoints

class EncoderCheckpoint(NamedTuple):
  """A converted pSp-family checkpoint.

  ``codes = model.apply(variables, x) + latent_avg`` gives the w+ codes the upstream wrapper
  feeds the generator (``latent_avg`` is ``None`` when the file has none, e.g. TriPlaneNet's, which
  takes it from the EG3D checkpoint).
  """
  encoder_type: str
  model: Any
  variables: dict
  latent_avg: np.ndarray | None  # [n_styles, 512]
  opts: dict


def split_prefix(sd: Mapping[str, Any], prefix: str, ignore: tuple[str, ...] = (),
                 what: str = "checkpoint") -> dict:
  """Keys under ``prefix`` with it stripped; every other key must start with one of ``ignore``.

  Raises:
    ValueError: no key has ``prefix``, or keys belong to neither ``prefix`` nor ``ignore``.
  """
  out = {k[len(prefix):]: v for k, v in sd.items() if k.startswith(prefix)}
  if not out:
    raise ValueError(f"{what}: no '{prefix}*' keys (first keys: {', '.join(list(sd)[:5])})")
  stray = [k for k in sd if not k.startswith(prefix) and not k.startswith(ignore)]
  if stray:
    raise ValueError(f"{what}: {len(stray)} key(s) belong to no known part: "
                     f"{', '.join(stray[:8])}" + (" ..." if len(stray) > 8 else ""))
  return out


def normalize_latent_avg(latent_avg, n_styles: int, what: str = "latent_avg") -> np.ndarray:
  """``[512]``, ``[1, 512]``, ``[1, n, 512]`` or ``[n, 512]`` -> ``[n_styles, 512]``."""
  a = np.asarray(latent_avg, np.float32)
  a = a.reshape(-1, a.shape[-1]) if a.ndim >= 2 else a[None]
  if a.shape[0] == 1:
    a = np.repeat(a, n_styles, axis=0)
  if a.shape != (n_styles, 512):
    raise ValueError(f"{what}: shape {np.shape(latent_avg)} does not fit {n_styles} styles x 512")
  return a


def _read(path_or_obj):
  if isinstance(path_or_obj, Mapping):
    return path_or_obj
  from jaxinv.convert import torchfile
  return torchfile.load(path_or_obj)


def load_checkpoint(path_or_obj, encoder_type: str | None = None) -> EncoderCheckpoint:
  """Converts a released pSp / e4e / PREIM3D ``.pt`` (or its already loaded dict).

  Args:
    path_or_obj: file path, or the dict ``torch.load`` would return (numpy tensors).
    encoder_type: override for ``opts['encoder_type']`` (``psp``, ``e4e``, ``preim3d_wplus`` or
      the upstream class names). pSp files without that option are GradualStyleEncoders.

  Raises:
    ValueError: the file is not such a checkpoint, or its weights do not fit the encoder.
  """
  ck = _read(path_or_obj)
  what = os.fspath(path_or_obj) if isinstance(path_or_obj, (str, os.PathLike)) else "checkpoint"
  if not isinstance(ck, Mapping) or "state_dict" not in ck:
    raise ValueError(f"{what}: expected a training checkpoint with a 'state_dict' entry")
  opts = dict(ck.get("opts") or {})
  etype = _canonical_type(encoder_type or opts.get("encoder_type") or PSP)
  sd = split_prefix(ck["state_dict"], "encoder.", ignore=("decoder.", "latent_avg"), what=what)
  model, variables = load_encoder_from_state_dict(sd, etype)
  n = model.n_styles
  la = ck.get("latent_avg")
  if la is None and "latent_avg" in ck["state_dict"]:
    la = ck["state_dict"]["latent_avg"]
  la = None if la is None else normalize_latent_avg(la, n, f"{what}: latent_avg")
  return EncoderCheckpoint(etype, model, variables, la, opts)


# ----------------------------------------------------------------- reference conformance kinds

def _reference(kind: str, sd, n_styles) -> Callable:
  model, variables = load_encoder_from_state_dict(sd, kind, n_styles)
  return jit_apply(model, variables)


def reference_psp(sd: Mapping[str, np.ndarray], n_styles: int | None = None, **config):
  """Kind ``psp``: ``f(x [B,256,256,3]) -> codes [B,n_styles,512]`` (no latent_avg)."""
  if config:
    raise ValueError(f"psp takes only n_styles, got {sorted(config)}")
  return _reference(PSP, sd, n_styles)


def reference_e4e(sd: Mapping[str, np.ndarray], n_styles: int | None = None, **config):
  """Kind ``e4e``: ``f(x [B,256,256,3]) -> codes [B,n_styles,512]`` (inference form)."""
  if config:
    raise ValueError(f"e4e takes only n_styles, got {sorted(config)}")
  return _reference(E4E, sd, n_styles)


def reference_preim3d_wplus(sd: Mapping[str, np.ndarray], n_styles: int | None = 14, **config):
  """Kind ``preim3d_wplus``: ``f(x [B,256,256,3]) -> codes [B,14,512]``."""
  if config:
    raise ValueError(f"preim3d_wplus takes only n_styles, got {sorted(config)}")
  return _reference(WPLUS, sd, n_styles)


# ------------------------------------------------------------------------ native round trip

NATIVE_KIND = "psp_encoder"


def save_native_encoder(path, ck: EncoderCheckpoint, half: bool = False) -> None:
  """Writes a converted checkpoint as a jaxinv native ``.npz`` (no pickle, nothing executable);
  ``half``: float32 arrays stored as float16 (``jaxinv.convert.common.save_native``)."""
  from jaxinv.convert.common import save_native
  config = {"encoder_type": ck.encoder_type, "n_styles": ck.model.n_styles, "in_ch": ck.model.in_ch,
            **architecture(ck.model)}
  tree = {"variables": ck.variables}
  if ck.latent_avg is not None:
    tree["latent_avg"] = ck.latent_avg
  save_native(path, NATIVE_KIND, config, tree, half=half)


def load_native_encoder(path) -> EncoderCheckpoint:
  """Reads what ``save_native_encoder`` wrote (``opts`` comes back empty)."""
  import jax
  import jax.numpy as jnp

  from jaxinv.convert.common import load_native
  _, config, tree = load_native(path, expect_kind=NATIVE_KIND)
  model = build_encoder(config["encoder_type"], int(config["n_styles"]), int(config["in_ch"]),
                        units=config.get("units"), taps=config.get("taps"),
                        input_size=config.get("input_size"))
  size = int(getattr(model, "input_size", 256))
  template = jax.eval_shape(model.init, jax.random.PRNGKey(0),
                            jnp.zeros((1, size, size, model.in_ch)))
  check_tree_matches(template, tree["variables"], f"{path}: encoder variables")
  return EncoderCheckpoint(config["encoder_type"], model, tree["variables"],
                           tree.get("latent_avg"), {})


def convert_file(src, dst, encoder_type: str | None = None) -> EncoderCheckpoint:
  """``jaxinv convert psp|e4e|preim3d SRC.pt DST.npz``: released checkpoint -> native file."""
  ck = load_checkpoint(src, encoder_type)
  save_native_encoder(dst, ck)
  return ck


# The built-in encoders of the procedural world: method -> file in jaxinv/assets, used where it
# ships (``jaxinv.train.tasks.toy_encoders`` evaluates and exports them).
TOY_ENCODERS = {m: f"toy_{m}.npz" for m in ("psp", "e4e", "preim3d", "triplanenet",
                                                   "nerf3de")}
TOY_ENCODERS["goae"] = "toy_goae_afa.npz"    # with its stage-1 encoder:
TOY_GOAE_ENCODER = "toy_goae_encoder.npz"


def toy_encoder_path(method: str):
  """The built-in toy-world encoder of ``method`` (a path; GOAE: ``(encoder, afa)`` paths), or None
  when this install has none."""
  import importlib.resources
  name = TOY_ENCODERS.get(method)
  if name is None:
    return None
  names = (TOY_GOAE_ENCODER, name) if method == "goae" else (name,)
  assets = [importlib.resources.files("jaxinv") / "assets" / n for n in names]
  if not all(a.is_file() for a in assets):
    return None
  paths = tuple(os.fspath(a) for a in assets)
  return paths if method == "goae" else paths[0]

