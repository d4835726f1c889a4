"""TriPlaneNet weights: the tri-plane offset U-Net and the released TriPlaneNet (v1) checkpoint.

Upstream names of ``TriPlane_Encoder`` (``models/encoders/triplane_encoders.py``): the IR-SE trunk
(``input_layer.*`` with 6 input channels, ``body.i.*``), then

===========================================  ==========================================
``up{k}.conv.double_conv.0.*``               ``up{k}/conv/bn`` (BatchNorm of the input)
``up{k}.conv.double_conv.{1,3}.weight/bias`` ``up{k}/conv/conv{1,2}``
``up{k}.conv.double_conv.{2,4,5}.weight``    ``up{k}/conv/prelu{1,2,3}``
``final_head.{0,2,4}.weight/bias``           ``final_conv{1,2,3}``
``final_head.{1,3}.weight``                  ``final_prelu{1,2}``
===========================================  ==========================================

The released checkpoint (``training/coach.py``) is ``{'state_dict', 'opts', 'best_val_loss',
'step', 'triplane_optimizer', 'psp_optimizer'}`` with ``state_dict`` keys ``psp_encoder.*`` (the
pSp ``GradualStyleEncoder``, 14 styles), ``triplanenet_encoder.*`` and ``decoder.*`` (the EG3D
generator it was trained with). ``latent_avg`` is not in it: TriPlaneNet reads it, with the
generator's constructor kwargs, from its ``eg3d_ffhq`` checkpoint (``{'G_ema', 'init_kwargs',
'latent_avg'}``); ``load_eg3d_checkpoint`` reads that file.
"""
from __future__ import annotations

import os
from typing import Any, Callable, Mapping, NamedTuple

import numpy as np

from jaxinv.convert.common import (KeyTracker, check_tree_matches, conv_oihw_to_hwio,
                                   conv_with_bias, jit_apply)
from jaxinv.convert.irse import (combine_variables, convert_bn, convert_irse_body,
                                 convert_irse_input_layer, convert_prelu)
from jaxinv.convert.psp import load_encoder_from_state_dict, normalize_latent_avg, split_prefix
from jaxinv.nn.irse import irse50_units

# (input channels of the DoubleConv = skip + shuffled, output channels) for up1..up4.
_UP_CHANNELS = ((1024, 512), (384, 384), (224, 256), (128, 96))


def convert_triplane_encoder(sd: Mapping[str, Any],
                             what: str = "TriPlaneNet TriPlane_Encoder state dict") -> dict:
  """``TriPlane_Encoder`` state dict (no prefix) -> variables of ``TriPlaneEncoder``."""
  if "input_layer.0.weight" not in sd or "final_head.4.weight" not in sd:
    raise ValueError(f"{what}: not a TriPlane_Encoder state dict (needs 'input_layer.0.weight' and "
                     f"'final_head.4.weight'; first keys: {', '.join(list(sd)[:5])})")
  in_ch = int(np.shape(sd["input_layer.0.weight"])[1])
  t = KeyTracker(sd, what)
  sub = {"input_layer": convert_irse_input_layer(t, "", in_ch),
         "body": convert_irse_body(t, "", irse50_units())}
  for k, (cin, cout) in enumerate(_UP_CHANNELS, start=1):
    d = f"up{k}.conv.double_conv"
    bn_p, bn_s = convert_bn(t, f"{d}.0", cin)
    params = {"bn": bn_p,
              "conv1": conv_with_bias(t, f"{d}.1", (cout, cin, 3, 3)),
              "prelu1": convert_prelu(t, f"{d}.2", cout),
              "conv2": conv_with_bias(t, f"{d}.3", (cout, cout, 3, 3)),
              "prelu2": convert_prelu(t, f"{d}.4", cout),
              "prelu3": convert_prelu(t, f"{d}.5", cout)}
    sub[f"up{k}"] = {"params": {"conv": params}, "batch_stats": {"conv": {"bn": bn_s}}}
  sub["final_conv1"] = {"params": conv_with_bias(t, "final_head.0", (96, 24, 3, 3))}
  sub["final_prelu1"] = {"params": convert_prelu(t, "final_head.1", 96)}
  sub["final_conv2"] = {"params": conv_with_bias(t, "final_head.2", (96, 96, 3, 3))}
  sub["final_prelu2"] = {"params": convert_prelu(t, "final_head.3", 96)}
  sub["final_conv3"] = {"params": conv_with_bias(t, "final_head.4", (96, 96, 1, 1))}
  t.finish()
  return combine_variables(sub)


def load_triplane_encoder_from_state_dict(sd: Mapping[str, Any]):
  """(model, variables) of the offset U-Net; the tree is checked against the model."""
  import jax
  import jax.numpy as jnp

  from jaxinv.models.encoders.triplanenet import TriPlaneEncoder
  sd = {k: np.asarray(v) for k, v in sd.items()}
  variables = convert_triplane_encoder(sd)
  model = TriPlaneEncoder(in_ch=int(sd["input_layer.0.weight"].shape[1]))
  template = jax.eval_shape(model.init, jax.random.PRNGKey(0),
                            jnp.zeros((1, 256, 256, model.in_ch)))
  check_tree_matches(template, variables, "TriPlaneEncoder variables")
  return model, variables


class TriPlaneNetCheckpoint(NamedTuple):
  """A converted TriPlaneNet (v1) checkpoint.

  ``decoder_state_dict`` holds the embedded EG3D generator's weights (EG3D names, no prefix) for
  ``jaxinv.convert.eg3d.from_state_dict`` together with the EG3D checkpoint's ``init_kwargs``.
  """
  psp_model: Any
  psp_variables: dict
  triplane_model: Any
  triplane_variables: dict
  decoder_state_dict: dict
  opts: dict
  latent_avg: Any = None   # [n_styles, 512] when known (native files); else the generator's w_avg


def load_checkpoint(path_or_obj) -> TriPlaneNetCheckpoint:
  """Converts TriPlaneNet's released ``.pt`` (or the dict ``torch.load`` returns, numpy tensors).

  Raises:
    ValueError: not a TriPlaneNet v1 checkpoint (v2's 9-channel encoder is refused by name).
  """
  from jaxinv.convert import torchfile
  ck = path_or_obj if isinstance(path_or_obj, Mapping) else torchfile.load(path_or_obj)
  what = os.fspath(path_or_obj) if isinstance(path_or_obj, (str, os.PathLike)) else "checkpoint"
  if not isinstance(ck, Mapping) or "state_dict" not in ck:
    raise ValueError(f"{what}: expected a TriPlaneNet training checkpoint with a 'state_dict'")
  sd = ck["state_dict"]
  psp_sd = split_prefix(sd, "psp_encoder.", ignore=("triplanenet_encoder.", "decoder."), what=what)
  tri_sd = split_prefix(sd, "triplanenet_encoder.", ignore=("psp_encoder.", "decoder."), what=what)
  if "final_head_two.0.weight" in tri_sd:
    raise ValueError(f"{what}: this is a TriPlaneNet v2 checkpoint (final_head_two, 9-channel "
                     "input); only v1 is supported")
  psp_model, psp_vars = load_encoder_from_state_dict(psp_sd, "GradualStyleEncoder")
  tri_model, tri_vars = load_triplane_encoder_from_state_dict(tri_sd)
  dec = {k[len("decoder."):]: np.asarray(v) for k, v in sd.items() if k.startswith("decoder.")}
  return TriPlaneNetCheckpoint(psp_model, psp_vars, tri_model, tri_vars, dec,
                               dict(ck.get("opts") or {}))


def load_eg3d_checkpoint(path_or_obj, n_styles: int = 14):
  """TriPlaneNet's ``eg3d_ffhq`` file -> ``(G_ema state dict, init_kwargs, latent_avg [n, 512])``."""
  from jaxinv.convert import torchfile
  ck = path_or_obj if isinstance(path_or_obj, Mapping) else torchfile.load(path_or_obj)
  missing = [k for k in ("G_ema", "init_kwargs", "latent_avg") if k not in ck]
  if missing:
    raise ValueError(f"EG3D checkpoint: missing entries {missing} (expected TriPlaneNet's "
                     "eg3d_ffhq file with G_ema, init_kwargs and latent_avg)")
  sd = {k: np.asarray(v) for k, v in ck["G_ema"].items()}
  return sd, dict(ck["init_kwargs"]), normalize_latent_avg(ck["latent_avg"], n_styles)


def reference_triplanenet_offsets(sd: Mapping[str, np.ndarray], **config) -> Callable:
  """Kind ``triplanenet_offsets``: ``f(x_input [B,256,256,6]) -> offsets [B,3,256,256,32]``."""
  if config:
    raise ValueError(f"triplanenet_offsets takes no config, got {sorted(config)}")
  model, variables = load_triplane_encoder_from_state_dict(sd)
  return jit_apply(model, variables)


NATIVE_KIND = "triplanenet"


def convert_file(src, dst, eg3d_checkpoint=None) -> TriPlaneNetCheckpoint:
  """``jaxinv convert triplanenet SRC.pt DST.npz [--eg3d eg3d_ffhq.pt]``.

  Stores both encoders and, when TriPlaneNet's EG3D file is given, its ``latent_avg``. The
  generator itself is converted with ``jaxinv convert eg3d``.
  """
  ck = load_checkpoint(src)
  if eg3d_checkpoint is not None:
    ck = ck._replace(latent_avg=load_eg3d_checkpoint(eg3d_checkpoint, ck.psp_model.n_styles)[2])
  save_native_checkpoint(dst, ck)
  return ck


def _offset_architecture(model) -> dict:
  from jaxinv.models.encoders.triplanenet import TriPlaneEncoder
  from jaxinv.models.encoders.triplanenet_small import SmallOffsetEncoder
  if type(model) is TriPlaneEncoder:
    return {"kind": "release"}
  if type(model) is SmallOffsetEncoder:
    return {"kind": "small", "width": int(model.width),
            "plane_resolution": int(model.plane_resolution)}
  raise ValueError(f"no native form for a tri-plane offset encoder of type {type(model).__name__}")


def save_native_checkpoint(path, ck: TriPlaneNetCheckpoint, half: bool = False) -> None:
  """Both encoders (and ``latent_avg`` when known) as a native ``.npz``; the pSp encoder may be a
  smaller one jaxinv trained (its ``jaxinv.convert.psp.architecture``), the offset encoder the
  release U-Net or ``SmallOffsetEncoder``. ``half``: float32 arrays stored as float16."""
  from jaxinv.convert.common import save_native
  from jaxinv.convert.psp import architecture
  tree = {"psp": ck.psp_variables, "triplane": ck.triplane_variables}
  if ck.latent_avg is not None:
    tree["latent_avg"] = np.asarray(ck.latent_avg)
  config = {"n_styles": int(ck.psp_model.n_styles), "triplane_in_ch": int(ck.triplane_model.in_ch),
            "psp": architecture(ck.psp_model), "offset": _offset_architecture(ck.triplane_model)}
  save_native(path, NATIVE_KIND, config, tree, half=half)


def load_native(path) -> TriPlaneNetCheckpoint:
  """What ``convert_file`` / ``save_native_checkpoint`` wrote, checked against the models it
  describes (``decoder_state_dict`` and ``opts`` come back empty)."""
  import jax
  import jax.numpy as jnp

  from jaxinv.convert.common import load_native as _load
  from jaxinv.convert.psp import PSP, build_encoder
  from jaxinv.models.encoders.triplanenet import TriPlaneEncoder
  from jaxinv.models.encoders.triplanenet_small import SmallOffsetEncoder
  _, config, tree = _load(path, expect_kind=NATIVE_KIND)
  arch = dict(config.get("psp") or {})
  psp_model = build_encoder(PSP, int(config["n_styles"]), 3, units=arch.get("units"),
                            taps=arch.get("taps"), input_size=arch.get("input_size"))
  in_ch = int(config["triplane_in_ch"])
  off = dict(config.get("offset") or {"kind": "release"})
  if off.get("kind") == "release":
    tri_model = TriPlaneEncoder(in_ch=in_ch)
  elif off.get("kind") == "small":
    tri_model = SmallOffsetEncoder(in_ch, int(off["width"]), int(off["plane_resolution"]))
  else:
    raise ValueError(f"{path}: unknown offset encoder {off.get('kind')!r}")
  size = int(getattr(psp_model, "input_size", 256))
  for what, model, ch in (("psp", psp_model, 3), ("triplane", tri_model, in_ch)):
    if what not in tree:
      raise ValueError(f"{path}: no {what!r} encoder variables")
    template = jax.eval_shape(model.init, jax.random.PRNGKey(0), jnp.zeros((1, size, size, ch)))
    check_tree_matches(template, tree[what], f"{path}: {what} encoder variables")
  return TriPlaneNetCheckpoint(psp_model, tree["psp"], tri_model, tree["triplane"], {}, {},
                               tree.get("latent_avg"))
