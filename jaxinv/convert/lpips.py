"""LPIPS weights -> ``jaxinv.losses.lpips.LPIPS`` variables.

Sources:

* the ``lpips`` package module's own state dict (``scaling_layer.*``, ``net.sliceS.I.*``,
  ``linK.model.1.weight`` and the ``lins.K.*`` aliases): ``convert_lpips_module(sd, net)``;
* the published files a user has: the torchvision ImageNet trunk (``alexnet-owt-*.pth`` /
  ``vgg16-*.pth``, keys ``features.I.*``, classifier ignored) and the package's v0.1 heads
  (``weights/v0.1/{alex,vgg}.pth``, keys ``linK.model.1.weight``): ``convert_lpips_files``.

Both give ``{'params': {'trunk': {'features_I': {kernel, bias}}, 'lin0'..'lin4': [C_k]}}``.
"""
from __future__ import annotations

import os
from typing import Mapping

import numpy as np

from jaxinv.convert.common import KeyTracker, check_tree_matches, conv_oihw_to_hwio, jit_apply
from jaxinv.losses.lpips import SCALE, SHIFT, TRUNKS, lpips_init_template, tap_channels, trunk_convs

_FIRST_CONV = {"alex": (64, 3, 11, 11), "vgg": (64, 3, 3, 3)}


def _check_trunk_kind(first_weight, net: str, what: str) -> None:
  shape = tuple(np.shape(first_weight))
  if shape != _FIRST_CONV[net]:
    other = [n for n, s in _FIRST_CONV.items() if s == shape]
    hint = f" -- that is an {other[0]} trunk" if other else ""
    raise ValueError(f"{what}: first conv has shape {shape}, LPIPS-{net} expects "
                     f"{_FIRST_CONV[net]}{hint}")


def _trunk(t: KeyTracker, net: str, key_of) -> dict:
  out = {}
  for c in trunk_convs(net):
    k = key_of(c)
    out[f"features_{c.index}"] = {
        "kernel": conv_oihw_to_hwio(t.take(f"{k}.weight", (c.out_ch, c.in_ch, c.kernel, c.kernel))),
        "bias": t.take(f"{k}.bias", (c.out_ch,))}
  return out


def _lins(t: KeyTracker, net: str, prefix: str = "") -> dict:
  return {f"lin{k}": t.take(f"{prefix}lin{k}.model.1.weight", (1, ch, 1, 1)).reshape(ch)
          for k, ch in enumerate(tap_channels(net))}


def _finish(params: dict, net: str) -> dict:
  variables = {"params": params}
  check_tree_matches(lpips_init_template(net), variables, f"LPIPS-{net} variables")
  return variables


def convert_lpips_module(sd: Mapping[str, np.ndarray], net: str = "alex",
                         what: str = "LPIPS state dict") -> dict:
  """``lpips.LPIPS(net=net, version='0.1')`` state dict -> variables."""
  if net not in TRUNKS:
    raise ValueError(f"net must be one of {sorted(TRUNKS)}, got {net!r}")
  if "net.slice1.0.weight" not in sd:
    raise ValueError(f"{what}: no 'net.slice1.0.weight': not an lpips.LPIPS module state dict "
                     f"(first keys: {', '.join(sorted(sd)[:5])})")
  _check_trunk_kind(sd["net.slice1.0.weight"], net, what)
  t = KeyTracker(sd, what)
  # Map each torchvision index to the slice that holds it (slice numbers start at 1).
  slice_of = {}
  for s, ops in enumerate(TRUNKS[net], start=1):
    for op in ops:
      if not isinstance(op, str):
        slice_of[op.index] = s
  params = {"trunk": _trunk(t, net, lambda c: f"net.slice{slice_of[c.index]}.{c.index}")}
  params.update(_lins(t, net))
  # The scaling constants are fixed by the package; refuse a file that disagrees.
  for name, ref in (("shift", SHIFT), ("scale", SCALE)):
    got = t.take(f"scaling_layer.{name}", (1, 3, 1, 1)).reshape(3)
    if not np.allclose(got, ref, rtol=0, atol=1e-7):
      raise ValueError(f"{what}: scaling_layer.{name} = {got}, LPIPS uses {ref}")
  # lins.K.* are the same tensors as linK.* (a ModuleList alias); use them only to check.
  for k in range(len(TRUNKS[net])):
    alias = t.take_if_present(f"lins.{k}.model.1.weight")
    if alias is not None and not np.array_equal(alias.reshape(-1), params[f"lin{k}"]):
      raise ValueError(f"{what}: lins.{k} differs from lin{k}")
  t.finish()
  return _finish(params, net)


def convert_lpips_files(trunk_sd: Mapping[str, np.ndarray], lin_sd: Mapping[str, np.ndarray],
                        net: str = "alex") -> dict:
  """torchvision trunk state dict + lpips v0.1 heads state dict -> variables.

  Args:
    trunk_sd: ``alexnet-owt-*.pth`` / ``vgg16-*.pth`` (``features.I.*``; ``classifier.*`` ignored).
    lin_sd: ``lpips/weights/v0.1/{alex,vgg}.pth`` (``linK.model.1.weight``).
  """
  if net not in TRUNKS:
    raise ValueError(f"net must be one of {sorted(TRUNKS)}, got {net!r}")
  what = f"torchvision {net} checkpoint"
  if "features.0.weight" not in trunk_sd:
    raise ValueError(f"{what}: no 'features.0.weight' (first keys: {', '.join(sorted(trunk_sd)[:5])})")
  _check_trunk_kind(trunk_sd["features.0.weight"], net, what)
  t = KeyTracker(trunk_sd, what)
  params = {"trunk": _trunk(t, net, lambda c: f"features.{c.index}")}
  t.ignore("classifier.")
  t.finish()
  lin_sd = {k[len("module."):] if k.startswith("module.") else k: v for k, v in lin_sd.items()}
  tl = KeyTracker(lin_sd, f"LPIPS {net} v0.1 heads")
  params.update(_lins(tl, net))
  tl.finish()
  return _finish(params, net)


def convert_files(trunk_path: str | os.PathLike, lin_path: str | os.PathLike, net: str) -> dict:
  """Reads the two ``.pth`` files (no torch needed) and converts them."""
  from jaxinv.convert import torchfile
  return convert_lpips_files(torchfile.load_state_dict(trunk_path),
                             torchfile.load_state_dict(lin_path), net)


def _reference(sd, net: str, config):
  from jaxinv.losses.lpips import LPIPS
  if config:
    raise ValueError(f"lpips_{net} takes no config, got {sorted(config)}")
  variables = convert_lpips_module(sd, net)
  return jit_apply(LPIPS(net), variables)


def reference_lpips_alex(sd: Mapping[str, np.ndarray], **config):
  """Reference kind ``lpips_alex``: ``f(in0, in1 [B,H,W,3]) -> distance [B]``."""
  return _reference(sd, "alex", config)


def reference_lpips_vgg(sd: Mapping[str, np.ndarray], **config):
  """Reference kind ``lpips_vgg``: ``f(in0, in1 [B,H,W,3]) -> distance [B]``."""
  return _reference(sd, "vgg", config)


def default_heads_path(net: str):
  """The v0.1 head file shipped inside an installed ``lpips`` package (found without importing it)."""
  import importlib.util
  spec = importlib.util.find_spec("lpips")
  if spec is None or not spec.submodule_search_locations:
    return None
  path = os.path.join(list(spec.submodule_search_locations)[0], "weights", "v0.1", f"{net}.pth")
  return path if os.path.exists(path) else None


def convert_file(trunk_path, dst, net: str = "alex", heads_path=None) -> dict:
  """torchvision trunk ``.pth`` + lpips v0.1 heads ``.pth`` -> jaxinv native ``.npz`` (kind ``lpips``)."""
  from jaxinv.convert.common import save_native
  heads_path = heads_path or default_heads_path(net)
  if heads_path is None:
    raise ValueError(f"no LPIPS heads file given and no installed lpips package to take "
                     f"weights/v0.1/{net}.pth from (pass --heads {net}.pth)")
  variables = convert_files(trunk_path, heads_path, net)
  save_native(dst, "lpips", {"net": net}, variables)
  return variables


def load_native_lpips(path):
  """(net, variables) from a file written by ``convert_file``."""
  from jaxinv.convert.common import load_native
  _, config, variables = load_native(path, expect_kind="lpips")
  check_tree_matches(lpips_init_template(config["net"]), variables, f"{path}")
  return config["net"], variables
