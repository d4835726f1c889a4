"""EG3D weights in: official network pickles, ``.pt`` / ``.npz`` state dicts, jaxinv native files.

Nothing here imports torch or EG3D code, and nothing in a file is executed: pickles are read by
``convert.torchfile`` with an allow-list; EG3D's persistent classes
(``torch_utils.persistence._reconstruct_persistent_obj``) become inert records (their embedded
module source is never looked at), other EG3D / torch.nn classes become inert stubs, and any other
global (``os.system``, ``builtins.eval``, ...) is refused.

Name table (official state-dict key -> parameter path under ``params/``; fix-up):

==========================================================  ======================================
``backbone.synthesis.b{R}.const [C, R, R]``                 ``.../const [R, R, C]`` (CHW -> HWC)
``*.weight [O, I, k, k]`` (conv, torgb)                     ``.../weight [k, k, I, O]`` (OIHW->HWIO)
``*.weight [out, in]`` (affine, fc, embed, decoder.net.N)   ``.../weight [in, out]`` (transpose)
``decoder.net.{0,2}.*``                                     ``decoder/net_{0,2}/*``
everything else (bias, noise_strength, noise_const, w_avg)  same name, unchanged
``*.resample_filter``                                       ignored after checking it is the
                                                            standard [1,3,3,1] filter
==========================================================  ======================================
"""
from __future__ import annotations

import collections
import os
import zipfile
from typing import Any, Mapping

import jax
import numpy as np

from jaxinv.convert import torchfile
from jaxinv.convert.common import (KeyTracker, check_tree_matches, flatten_tree, is_native,
                                   load_native, save_native, to_plain, unflatten_tree)
from jaxinv.models.eg3d import EG3DConfig, EG3DGenerator, param_shapes
from jaxinv.ops.upfirdn2d import STANDARD_FILTER

NATIVE_KIND = "eg3d"


def _torch_key(path: str) -> str:
  """``backbone/synthesis/b4/conv1/weight`` -> ``backbone.synthesis.b4.conv1.weight``."""
  parts = path.split("/")
  out = []
  for p in parts:
    if p.startswith("net_") and p[4:].isdigit():
      out.extend(["net", p[4:]])
    else:
      out.append(p)
  return ".".join(out)


def _to_target(key: str, src: np.ndarray, target_shape: tuple) -> np.ndarray:
  """Applies the per-tensor layout fix-up of the name table."""
  name = key.rsplit(".", 1)[-1]
  if name == "const" and src.ndim == 3:
    src = np.transpose(src, (1, 2, 0))
  elif name == "weight" and src.ndim == 4:
    src = np.transpose(src, (2, 3, 1, 0))
  elif name == "weight" and src.ndim == 2:
    src = src.T
  src = np.array(src, dtype=np.float32, order="C")  # (ascontiguousarray would make 0-d arrays 1-d)
  if tuple(src.shape) != tuple(target_shape):
    raise ValueError(f"EG3D state dict: {key!r} has shape {tuple(src.shape)} (after layout fix-up), "
                     f"but the configured model expects {tuple(target_shape)}")
  return src


def _source_shape(key: str, target_shape: tuple) -> tuple:
  name = key.rsplit(".", 1)[-1]
  t = tuple(target_shape)
  if name == "const" and len(t) == 3:
    return (t[2], t[0], t[1])
  if name == "weight" and len(t) == 4:
    return (t[3], t[2], t[0], t[1])
  if name == "weight" and len(t) == 2:
    return (t[1], t[0])
  return t


def params_from_state_dict(sd: Mapping[str, Any], config: EG3DConfig) -> dict:
  """``{'params': ...}`` for ``config`` from an official state dict (see the name table)."""
  tracker = KeyTracker(sd, "EG3D state dict")
  for k in tracker.keys():
    if k.endswith("resample_filter"):
      f = tracker.take(k)
      if f.shape != STANDARD_FILTER.shape or not np.allclose(f, STANDARD_FILTER, rtol=0, atol=1e-7):
        raise ValueError(f"EG3D state dict: {k!r} is not the standard [1,3,3,1] filter "
                         f"(shape {f.shape}); jaxinv only supports that filter")
  template = flatten_tree(param_shapes(config)["params"])
  flat = {}
  for path, leaf in template.items():
    key = _torch_key(path)
    src = tracker.take(key, _source_shape(key, leaf.shape))
    flat[path] = _to_target(key, src, leaf.shape)
  tracker.finish()
  params = {"params": unflatten_tree(flat)}
  check_tree_matches(param_shapes(config), params, "EG3D")
  return params


def from_state_dict(sd: Mapping[str, Any], init_kwargs: Mapping[str, Any],
                    **config_overrides) -> EG3DGenerator:
  """Generator from an official state dict and the ``TriPlaneGenerator`` constructor kwargs.

  Args:
    sd: key -> array with ``TriPlaneGenerator.state_dict()`` names.
    init_kwargs: constructor kwargs (``z_dim, w_dim, c_dim, img_resolution, img_channels,
      mapping_kwargs, rendering_kwargs, sr_kwargs, sr_num_fp16_res, channel_base, ...``); may hold
      ``neural_rendering_resolution`` too.
    **config_overrides: fields of :class:`EG3DConfig` (e.g. ``inplace_image_raw=False``).
  """
  config = EG3DConfig.from_init_kwargs(init_kwargs, **config_overrides)
  return EG3DGenerator(config, params_from_state_dict(sd, config))


# ------------------------------------------------------------------ network pickles

class PersistentRecord:
  """Inert stand-in for an object of a ``persistence.persistent_class`` (nothing is executed)."""

  def __init__(self, meta):
    if not isinstance(meta, Mapping):
      raise torchfile.UnsafePickleError("malformed persistent object record")
    self.class_name = str(meta.get("class_name"))
    self.state = meta.get("state") or {}
    # meta['module_src'] (the embedded Python source) is deliberately never read.

  def __repr__(self):
    return f"<PersistentRecord {self.class_name}>"


def _reconstruct_persistent_obj(meta):
  return PersistentRecord(meta)


_EXTRA_GLOBALS = {("torch_utils.persistence", "_reconstruct_persistent_obj"):
                  _reconstruct_persistent_obj}
_STUB_MODULES = ("training", "dnnlib", "torch_utils", "torch.nn.modules", "torch.nn")
_DICT_STUBS = ("dnnlib.util.EasyDict",)


def _state_of(obj) -> Mapping[str, Any]:
  if isinstance(obj, PersistentRecord):
    return obj.state
  st = getattr(obj, "_state", None)
  if isinstance(st, Mapping):
    return st
  if isinstance(st, tuple) and st and isinstance(st[0], Mapping):
    return st[0]
  return getattr(obj, "__dict__", {})


def module_state_dict(obj, prefix: str = "") -> "collections.OrderedDict[str, np.ndarray]":
  """``state_dict()`` of an unpickled (inert) torch module tree, in registration order."""
  out = collections.OrderedDict()
  st = _state_of(obj)
  non_persistent = set(st.get("_non_persistent_buffers_set", ()) or ())
  for name, p in (st.get("_parameters") or {}).items():
    if p is not None:
      out[prefix + name] = np.asarray(p)
  for name, b in (st.get("_buffers") or {}).items():
    if b is not None and name not in non_persistent:
      out[prefix + name] = np.asarray(b)
  for name, m in (st.get("_modules") or {}).items():
    if m is not None:
      out.update(module_state_dict(m, f"{prefix}{name}."))
  return out


_TRIPLANE_ARGS = ("z_dim", "c_dim", "w_dim", "img_resolution", "img_channels", "sr_num_fp16_res",
                  "mapping_kwargs", "rendering_kwargs", "sr_kwargs")


def read_pickle(path) -> tuple["collections.OrderedDict[str, np.ndarray]", dict]:
  """(state dict, init kwargs) of ``G_ema`` in an EG3D network pickle, executing nothing."""
  try:
    data = torchfile.load_pickle(path, extra_globals=_EXTRA_GLOBALS, stub_modules=_STUB_MODULES,
                                 dict_stubs=_DICT_STUBS)
  except torchfile.UnsafePickleError:
    raise
  except torchfile.TorchFileError as e:
    raise ValueError(f"{path}: not a readable EG3D network pickle ({e})") from None
  if not isinstance(data, Mapping) or "G_ema" not in data:
    keys = sorted(map(str, data)) if isinstance(data, Mapping) else type(data).__name__
    raise ValueError(f"{path}: not an EG3D network pickle: no 'G_ema' entry (found {keys})")
  g = data["G_ema"]
  if not isinstance(g, PersistentRecord):
    raise ValueError(f"{path}: 'G_ema' is not a persistent EG3D module (got {type(g).__name__})")
  if g.class_name.rsplit(".", 1)[-1] != "TriPlaneGenerator":
    raise ValueError(f"{path}: G_ema is a {g.class_name}, not an EG3D TriPlaneGenerator")
  st = g.state
  kwargs = to_plain(dict(st.get("_init_kwargs") or {}))
  args = list(st.get("_init_args") or ())
  for name, v in zip(_TRIPLANE_ARGS, args):
    kwargs.setdefault(name, to_plain(v))
  if "neural_rendering_resolution" in st:
    kwargs["neural_rendering_resolution"] = int(st["neural_rendering_resolution"])
  return module_state_dict(g), kwargs


def from_pickle(path, **config_overrides) -> EG3DGenerator:
  """Generator from an official EG3D network pickle (``{'G_ema': ...}``), e.g. ``ffhq512-128.pkl``.

  Raises:
    UnsafePickleError: the pickle asks for a callable outside the allow-list (e.g. os.system).
    ValueError: no ``G_ema``, corrupt/truncated file, or weights that do not fit the kwargs.
  """
  sd, kwargs = read_pickle(path)
  return from_state_dict(sd, kwargs, **config_overrides)


# ------------------------------------------------------------------ other containers, native

def save(G: EG3DGenerator, path) -> None:
  """Writes ``G`` in jaxinv's native format (npz of parameter paths + JSON config)."""
  save_native(path, NATIVE_KIND, G.config.to_json(), jax.device_get(G.params))


def load_native_generator(path) -> EG3DGenerator:
  _, cfg, params = load_native(path, expect_kind=NATIVE_KIND)
  config = EG3DConfig.from_json(cfg)
  params = {k: v for k, v in params.items()}
  check_tree_matches(param_shapes(config), params, f"{path}")
  return EG3DGenerator(config, params)


def _read_npz(path) -> dict:
  try:
    with np.load(path, allow_pickle=False) as z:
      return collections.OrderedDict((k, z[k]) for k in z.files)
  except (zipfile.BadZipFile, EOFError, OSError, ValueError) as e:
    raise ValueError(f"{path}: corrupt or truncated npz ({e})") from None


TOY = "toy"   # the name of the built-in generator of the procedural world


def toy_path() -> str:
  """Path of the built-in toy-world generator (``jaxinv/assets/toy_eg3d.npz``); an error naming
  the regeneration commands when this install lacks it."""
  import importlib.resources
  asset = importlib.resources.files("jaxinv") / "assets" / "toy_eg3d.npz"
  if not asset.is_file():
    raise FileNotFoundError(
        f"the built-in toy generator is not in this install ({asset} is missing); regenerate it: "
        "python -m jaxinv.train --config configs/toy_eg3d.py --workdir runs/toy_eg3d && "
        "python -m jaxinv.train.tasks.toy_eg3d --workdir runs/toy_eg3d")
  return str(asset)


def load(path, init_kwargs: Mapping[str, Any] | None = None, **config_overrides) -> EG3DGenerator:
  """Any supported file: native ``.npz``, network ``.pkl``, or a ``.pt`` / ``.npz`` state dict.

  State dicts carry no architecture, so they need ``init_kwargs``. ``path="toy"`` is the built-in
  toy-world generator (:func:`toy_path`).
  """
  if isinstance(path, str) and path == TOY:
    path = toy_path()
  path = os.fspath(path)
  if not os.path.exists(path):
    raise FileNotFoundError(f"no such checkpoint: {path}")
  if is_native(path):
    G = load_native_generator(path)
    return G.replace(**config_overrides) if config_overrides else G
  with open(path, "rb") as f:
    head = f.read(4)
  if path.endswith(".pkl") or (head[:1] == b"\x80" and not path.endswith((".pt", ".pth"))):
    return from_pickle(path, **config_overrides)
  if init_kwargs is None:
    raise ValueError(f"{path}: a bare state dict holds no architecture; pass init_kwargs (the "
                     "TriPlaneGenerator constructor kwargs)")
  if path.endswith(".npz"):
    sd = _read_npz(path)
  else:
    try:
      sd = torchfile.load_state_dict(path)
    except torchfile.TorchFileError as e:
      raise ValueError(f"{path}: not a readable state dict ({e})") from None
  return from_state_dict(sd, init_kwargs, **config_overrides)


def convert_file(src, dst, init_kwargs: Mapping[str, Any] | None = None) -> EG3DGenerator:
  """Converts any supported input to a native checkpoint at ``dst``; returns the generator."""
  G = load(src, init_kwargs)
  save(G, dst)
  return G
