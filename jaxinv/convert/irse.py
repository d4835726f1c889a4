"""IR-SE / ArcFace weights: upstream state dicts -> ``jaxinv.nn.irse`` variable trees.

Reusable pieces (the pSp-family, TriPlaneNet and GOAE converters build on them):

``convert_bn(tracker, key)``                -> ``({'scale','bias'}, {'mean','var'})``
``convert_prelu(tracker, key)``             -> ``{'alpha'}``
``convert_irse_input_layer(tracker, prefix, in_ch, features=64)``
``convert_irse_body(tracker, prefix, units)``
    Each returns a variables subtree ``{'params': ..., 'batch_stats': ...}`` for the module
    (``IRSEInputLayer`` / ``IRSEBody``); ``prefix`` is prepended to the upstream names
    (``'' -> 'input_layer.0.weight'``, ``'encoder.' -> 'encoder.body.3.res_layer.1.weight'``).
``combine_variables({'input_layer': v1, 'body': v2, 'other': {'params': ...}})``
    Nests subtrees under module names in one ``{'params', 'batch_stats'}`` tree.

ArcFace (TreB1eN / pSp ``Backbone(112, 50, 'ir_se')``): ``convert_arcface(sd)``, and the
reference-conformance builders ``reference_ir_se50`` / ``reference_ir_se50_idloss``.
"""
from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np

from jaxinv.convert.common import (KeyTracker, check_tree_matches, conv_oihw_to_hwio, jit_apply,
                                   linear_to_dense, strip_prefix)
from jaxinv.nn.irse import UnitSpec, irse_units_for_depth

# Buffers that eval-mode BatchNorm never reads.
_BN_UNUSED = ("num_batches_tracked",)


def convert_bn(tracker: KeyTracker, key: str, channels: int | None = None):
  """Upstream ``BatchNorm{1,2}d`` at ``key`` (``key.weight`` ...) -> (params, batch_stats)."""
  shape = None if channels is None else (channels,)
  params = {"scale": tracker.take(f"{key}.weight", shape),
            "bias": tracker.take(f"{key}.bias", shape)}
  c = params["scale"].shape
  stats = {"mean": tracker.take(f"{key}.running_mean", c),
           "var": tracker.take(f"{key}.running_var", c)}
  tracker.ignore(f"{key}.num_batches_tracked")
  return params, stats


def convert_prelu(tracker: KeyTracker, key: str, channels: int | None = None):
  """Upstream per-channel ``PReLU`` at ``key`` -> ``{'alpha': [C]}``."""
  return {"alpha": tracker.take(f"{key}.weight", None if channels is None else (channels,))}


def _conv(tracker: KeyTracker, key: str, shape) -> dict:
  return {"kernel": conv_oihw_to_hwio(tracker.take(key, shape))}


def convert_irse_input_layer(tracker: KeyTracker, prefix: str, in_ch: int, features: int = 64):
  """``{prefix}input_layer.{0,1,2}`` -> variables of ``IRSEInputLayer(features)``."""
  k = f"{prefix}input_layer"
  bn_p, bn_s = convert_bn(tracker, f"{k}.1", features)
  params = {"conv": _conv(tracker, f"{k}.0.weight", (features, in_ch, 3, 3)),
            "bn": bn_p, "prelu": convert_prelu(tracker, f"{k}.2", features)}
  return {"params": params, "batch_stats": {"bn": bn_s}}


def convert_irse_unit(tracker: KeyTracker, key: str, unit: UnitSpec):
  """One ``bottleneck_IR_SE`` at ``key`` (e.g. ``'body.3'``) -> variables of ``BottleneckIRSE``."""
  i, d = unit.in_ch, unit.depth
  params, stats = {}, {}
  if i != d:
    params["shortcut_conv"] = _conv(tracker, f"{key}.shortcut_layer.0.weight", (d, i, 1, 1))
    params["shortcut_bn"], stats["shortcut_bn"] = convert_bn(tracker, f"{key}.shortcut_layer.1", d)
  r = f"{key}.res_layer"
  params["bn1"], stats["bn1"] = convert_bn(tracker, f"{r}.0", i)
  params["conv1"] = _conv(tracker, f"{r}.1.weight", (d, i, 3, 3))
  params["prelu"] = convert_prelu(tracker, f"{r}.2", d)
  params["conv2"] = _conv(tracker, f"{r}.3.weight", (d, d, 3, 3))
  params["bn2"], stats["bn2"] = convert_bn(tracker, f"{r}.4", d)
  # The SE 1x1 convs act on a 1x1 map: Dense kernels [in, out].
  params["se"] = {
      "fc1": {"kernel": tracker.take(f"{r}.5.fc1.weight", (d // 16, d, 1, 1))[:, :, 0, 0].T},
      "fc2": {"kernel": tracker.take(f"{r}.5.fc2.weight", (d, d // 16, 1, 1))[:, :, 0, 0].T},
  }
  return {"params": params, "batch_stats": stats}


def convert_irse_body(tracker: KeyTracker, prefix: str, units: Sequence[UnitSpec]):
  """``{prefix}body.i.*`` for every unit -> variables of ``IRSEBody(units)``."""
  out = {"params": {}, "batch_stats": {}}
  for n, unit in enumerate(units):
    v = convert_irse_unit(tracker, f"{prefix}body.{n}", unit)
    out["params"][f"unit_{n}"] = v["params"]
    out["batch_stats"][f"unit_{n}"] = v["batch_stats"]
  return out


def combine_variables(subtrees: Mapping[str, Mapping]) -> dict:
  """``{name: {'params': p, 'batch_stats': s}}`` -> ``{'params': {name: p}, 'batch_stats': {name: s}}``.

  Subtrees without a collection (or with an empty one) are left out of it.
  """
  out: dict = {}
  for name, v in subtrees.items():
    for col, tree in v.items():
      if tree:
        out.setdefault(col, {})[name] = tree
  return out


# ------------------------------------------------------------------------------------- ArcFace

def _check_arcface_keys(sd: Mapping[str, np.ndarray], what: str) -> None:
  """Names the likely mix-up before the per-key errors (a file of another network)."""
  if "output_layer.3.weight" not in sd and "input_layer.0.weight" not in sd:
    sample = ", ".join(sorted(sd)[:5])
    raise ValueError(f"{what}: this is not an IR-SE Backbone state dict (no 'input_layer.0.weight' "
                     f"/ 'output_layer.3.weight'; first keys: {sample})")
  for k, s in (("input_layer.0.weight", (64, 3, 3, 3)), ("output_layer.3.weight", (512, 25088))):
    if k in sd and tuple(np.shape(sd[k])) != s:
      raise ValueError(f"{what}: {k} has shape {tuple(np.shape(sd[k]))}, an IR-SE-50 ArcFace "
                       f"Backbone(112) has {s}")


def convert_arcface(sd: Mapping[str, np.ndarray], num_layers: int = 50,
                    what: str = "ArcFace IR-SE checkpoint") -> dict:
  """``Backbone(112, num_layers, 'ir_se')`` state dict -> variables of ``ArcFaceBackbone``.

  Raises:
    ValueError: naming every missing, unused or mis-shaped key.
  """
  sd = strip_prefix(sd, ("module.", "facenet."))  # DataParallel or pSp IDLoss wrapper
  _check_arcface_keys(sd, what)
  t = KeyTracker(sd, what)
  units = irse_units_for_depth(num_layers)
  bn_p, bn_s = convert_bn(t, "output_layer.0", 512)
  # output_layer.3 is Linear(512*7*7 -> 512) over a C,H,W flatten; the model flattens in that order.
  dense = {"kernel": linear_to_dense(t.take("output_layer.3.weight", (512, 512 * 7 * 7))),
           "bias": t.take("output_layer.3.bias", (512,))}
  bn1_p, bn1_s = convert_bn(t, "output_layer.4", 512)
  variables = combine_variables({
      "input_layer": convert_irse_input_layer(t, "", 3),
      "body": convert_irse_body(t, "", units),
      "output_bn2d": {"params": bn_p, "batch_stats": bn_s},
      "output_dense": {"params": dense},
      "output_bn1d": {"params": bn1_p, "batch_stats": bn1_s},
  })
  t.finish()
  return variables


def _arcface_template(num_layers: int = 50):
  import jax
  import jax.numpy as jnp

  from jaxinv.models.encoders.arcface import ArcFaceBackbone
  model = ArcFaceBackbone(num_layers=num_layers)
  shapes = jax.eval_shape(model.init, jax.random.PRNGKey(0), jnp.zeros((1, 112, 112, 3)))
  return model, shapes


def load_arcface(sd: Mapping[str, np.ndarray], num_layers: int = 50):
  """(model, variables) from an upstream state dict; the tree is checked against the model."""
  variables = convert_arcface(sd, num_layers)
  model, template = _arcface_template(num_layers)
  check_tree_matches(template, variables, "ArcFace variables")
  return model, variables


def reference_ir_se50(sd: Mapping[str, np.ndarray], **config):
  """Reference kind ``ir_se50``: ``f(x [B,112,112,3]) -> embedding [B,512]``."""
  if config:
    raise ValueError(f"ir_se50 takes no config, got {sorted(config)}")
  model, variables = load_arcface(sd)
  return jit_apply(model, variables)


def reference_ir_se50_idloss(sd: Mapping[str, np.ndarray], **config):
  """Reference kind ``ir_se50_idloss``: ``f(x [B,256,256,3]) -> embedding [B,512]`` (pSp crop + pool)."""
  from jaxinv.losses.arcface import psp_id_preprocess
  if config:
    raise ValueError(f"ir_se50_idloss takes no config, got {sorted(config)}")
  model, variables = load_arcface(sd)
  return jit_apply(model, variables, preprocess=psp_id_preprocess)


def convert_file(src, dst, num_layers: int = 50) -> dict:
  """TreB1eN / pSp ``model_ir_se50.pth`` -> jaxinv native ``.npz`` (kind ``arcface``).

  Read without torch and without running anything in the file. Returns the variables.
  """
  from jaxinv.convert import torchfile
  from jaxinv.convert.common import save_native
  _, variables = load_arcface(torchfile.load_state_dict(src), num_layers)
  save_native(dst, "arcface", {"num_layers": num_layers}, variables)
  return variables


def load_native_arcface(path):
  """(model, variables) from a file written by ``convert_file``."""
  from jaxinv.convert.common import load_native
  _, config, variables = load_native(path, expect_kind="arcface")
  model, template = _arcface_template(config["num_layers"])
  check_tree_matches(template, variables, f"{path}")
  return model, variables
