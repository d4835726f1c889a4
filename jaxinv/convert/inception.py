"""The FID Inception-v3 weights -> ``jaxinv.models.inception`` parameters.

Source: pytorch-fid's ``pt_inception-2015-12-05-6726825d.pth`` (TensorFlow's 2015-12-05 Inception
graph, the one every FID/KID number in the field is computed with, ported to a torch state dict:
``<layer>.conv.weight`` and ``<layer>.bn.{weight,bias,running_mean,running_var}`` per layer, plus
the classifier ``fc.*`` which FID does not use). Read without torch; nothing in the file is run.

    jaxinv convert inception pt_inception-2015-12-05-6726825d.pth inception.npz

StyleGAN / EG3D's ``inception-2015-12-05.pkl`` holds the same weights as a TorchScript program;
it is not read here (TorchScript is code), convert pytorch-fid's file instead.
"""
from __future__ import annotations

from typing import Mapping

import numpy as np

from jaxinv.convert.common import KeyTracker, check_tree_matches, conv_oihw_to_hwio
from jaxinv.models import inception

NATIVE_KIND = "fid_inception"


def from_state_dict(sd: Mapping[str, np.ndarray], what: str = "FID Inception state dict") -> dict:
  """State dict (upstream names) -> ``{layer: {kernel, scale, bias, mean, var}}`` float32."""
  t = KeyTracker(sd, what)
  out = {}
  for name, cin, cout, (kh, kw), _, _ in inception.layers():
    out[name] = dict(
        kernel=conv_oihw_to_hwio(t.take(f"{name}.conv.weight", (cout, cin, kh, kw))),
        scale=t.take(f"{name}.bn.weight", (cout,)), bias=t.take(f"{name}.bn.bias", (cout,)),
        mean=t.take(f"{name}.bn.running_mean", (cout,)),
        var=t.take(f"{name}.bn.running_var", (cout,)))
  t.ignore("fc.", "AuxLogits.")                     # the classifiers: not part of the features
  t.ignore("num_batches_tracked", suffix=True)
  t.finish()
  out = {n: {k: np.asarray(v, np.float32) for k, v in d.items()} for n, d in out.items()}
  for n, d in out.items():
    if not np.all(np.isfinite(d["kernel"])) or np.any(d["var"] < 0):
      raise ValueError(f"{what}: layer {n} has non-finite weights or a negative variance")
  return out


def load(path) -> dict:
  """Parameters from a native ``.npz`` (``convert_file``) or the pytorch-fid ``.pth`` itself."""
  from jaxinv.convert import common, torchfile
  if common.is_native(path):
    _, _, params = common.load_native(path, expect_kind=NATIVE_KIND)
    check_tree_matches(inception.param_shapes(), params, f"{path}: Inception parameters")
    return params
  return from_state_dict(torchfile.load_state_dict(path), f"{path}")


def convert_file(src, dst) -> dict:
  """``jaxinv convert inception SRC.pth DST.npz``."""
  from jaxinv.convert import torchfile
  from jaxinv.convert.common import save_native
  params = from_state_dict(torchfile.load_state_dict(src), f"{src}")
  save_native(dst, NATIVE_KIND, {"features": inception.FEATURES}, params)
  return params
