"""Shared converter machinery: key bookkeeping, layout fix-ups, the native checkpoint format.

A converter is a declarative walk over the upstream names: each source tensor is taken once
(``KeyTracker.take``) or ignored on purpose (``KeyTracker.ignore``), and ``KeyTracker.finish``
refuses the conversion if anything was left over. The filled parameter tree is then compared with
the model's own initialisation (``check_tree_matches``), so no target leaf can be missing or
mis-shaped.

Native format (``save_native`` / ``load_native``): one ``.npz`` file whose arrays are the
flattened parameter paths (``params/backbone/b4/conv1/weight``) plus a ``__jaxinv__`` entry holding
JSON metadata (kind, format version, the model config). Loading needs no pickle and runs nothing.
"""
from __future__ import annotations

import difflib
import json
import os
import tempfile
import zipfile
from typing import Any, Iterable, Mapping

import numpy as np

# 2: float32 arrays may be stored as float16 (``save_native(half=True)``)
NATIVE_FORMAT_VERSION = 2
_META_KEY = "__jaxinv__"
_SEP = "/"


class KeyTracker:
  """Hands out source tensors by name and remembers which ones were used.

  Args:
    state_dict: upstream key -> array.
    what: a short description used in error messages (e.g. ``"EG3D state dict"``).
  """

  def __init__(self, state_dict: Mapping[str, Any], what: str = "state dict"):
    self._sd = {str(k): np.asarray(v) for k, v in state_dict.items()}
    self._what = what
    self._used: set[str] = set()
    self._ignored: set[str] = set()

  def __contains__(self, key: str) -> bool:
    return key in self._sd

  def keys(self) -> list[str]:
    return list(self._sd)

  def has_prefix(self, prefix: str) -> bool:
    return any(k.startswith(prefix) for k in self._sd)

  def take(self, key: str, shape: Iterable[int] | None = None, dtype=None) -> np.ndarray:
    """Returns ``state_dict[key]``, checking its shape; marks it used."""
    if key not in self._sd:
      close = difflib.get_close_matches(key, list(self._sd), n=3)
      hint = f"; closest keys: {', '.join(close)}" if close else ""
      raise ValueError(f"{self._what}: missing key {key!r}{hint}")
    a = self._sd[key]
    if shape is not None and tuple(a.shape) != tuple(shape):
      raise ValueError(
          f"{self._what}: {key!r} has shape {tuple(a.shape)}, expected {tuple(shape)}")
    self._used.add(key)
    return a.astype(dtype) if dtype is not None else a

  def take_if_present(self, key: str, shape: Iterable[int] | None = None):
    return self.take(key, shape) if key in self._sd else None

  def ignore(self, *keys_or_prefixes: str, suffix: bool = False) -> None:
    """Marks keys as deliberately unused: exact keys, prefixes ending in ``.``, or suffixes."""
    for p in keys_or_prefixes:
      for k in self._sd:
        if (k == p or (p.endswith(".") and k.startswith(p)) or (suffix and k.endswith(p))):
          self._ignored.add(k)

  def unused(self) -> list[str]:
    return [k for k in self._sd if k not in self._used and k not in self._ignored]

  def finish(self) -> None:
    """Raises unless every source tensor was taken or explicitly ignored."""
    left = self.unused()
    if left:
      shown = ", ".join(f"{k} {tuple(self._sd[k].shape)}" for k in left[:12])
      more = f" and {len(left) - 12} more" if len(left) > 12 else ""
      raise ValueError(f"{self._what}: {len(left)} source tensor(s) were not mapped: "
                       f"{shown}{more} (a checkpoint of a different network or configuration?)")


def conv_oihw_to_hwio(w) -> np.ndarray:
  """PyTorch conv weight ``[O, I, kh, kw]`` -> lax/Flax kernel ``[kh, kw, I, O]``."""
  w = np.asarray(w)
  if w.ndim != 4:
    raise ValueError(f"conv weight must have 4 dimensions [O, I, kh, kw], got {w.shape}")
  return np.ascontiguousarray(np.transpose(w, (2, 3, 1, 0)))


def linear_to_dense(w) -> np.ndarray:
  """PyTorch Linear weight ``[out, in]`` -> Flax Dense kernel ``[in, out]``."""
  w = np.asarray(w)
  if w.ndim != 2:
    raise ValueError(f"linear weight must have 2 dimensions [out, in], got {w.shape}")
  return np.ascontiguousarray(w.T)


def flatten_tree(tree: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
  """Nested dict -> ``{'a/b/c': leaf}`` (insertion order kept)."""
  out = {}
  for k, v in tree.items():
    path = f"{prefix}{_SEP}{k}" if prefix else str(k)
    if isinstance(v, Mapping):
      out.update(flatten_tree(v, path))
    else:
      out[path] = v
  return out


def unflatten_tree(flat: Mapping[str, Any]) -> dict[str, Any]:
  """Inverse of :func:`flatten_tree`."""
  out: dict[str, Any] = {}
  for path, v in flat.items():
    node = out
    *parents, leaf = path.split(_SEP)
    for p in parents:
      node = node.setdefault(p, {})
    node[leaf] = v
  return out


def check_tree_matches(template: Mapping[str, Any], tree: Mapping[str, Any], what: str) -> None:
  """Refuses ``tree`` unless it has exactly ``template``'s leaves with the same shapes.

  ``template`` may hold arrays or ``jax.ShapeDtypeStruct`` (e.g. from ``jax.eval_shape``).
  """
  ft, fx = flatten_tree(template), flatten_tree(tree)
  missing = [p for p in ft if p not in fx]
  extra = [p for p in fx if p not in ft]
  bad = [(p, tuple(np.shape(fx[p])), tuple(ft[p].shape)) for p in ft
         if p in fx and tuple(np.shape(fx[p])) != tuple(ft[p].shape)]
  msgs = []
  if missing:
    msgs.append(f"missing parameters: {', '.join(missing[:10])}" + (" ..." if len(missing) > 10 else ""))
  if extra:
    msgs.append(f"unexpected parameters: {', '.join(extra[:10])}" + (" ..." if len(extra) > 10 else ""))
  for p, got, want in bad[:10]:
    msgs.append(f"{p}: shape {got}, model expects {want}")
  if msgs:
    raise ValueError(f"{what}: converted parameters do not fit the model: " + "; ".join(msgs))


def to_plain(x):
  """Nested mappings / sequences / numpy scalars -> plain JSON-able dicts, lists and numbers."""
  if isinstance(x, Mapping):
    return {str(k): to_plain(v) for k, v in x.items()}
  if isinstance(x, (list, tuple)):
    return [to_plain(v) for v in x]
  if isinstance(x, np.generic):
    return x.item()
  return x


def strip_prefix(sd: Mapping[str, Any], prefixes: Iterable[str] = ("module.",)) -> dict:
  """Drops a wrapper prefix (``DataParallel``'s ``module.``, ...) when EVERY key carries it;
  the first of ``prefixes`` that all keys share is removed, else ``sd`` is returned as a dict."""
  if isinstance(prefixes, str):
    prefixes = (prefixes,)
  for p in prefixes:
    if sd and all(str(k).startswith(p) for k in sd):
      return {k[len(p):]: v for k, v in sd.items()}
  return dict(sd)


def conv_with_bias(t: KeyTracker, key: str, shape) -> dict:
  """``{kernel (HWIO), bias}`` of a torch ``Conv2d`` at ``key`` with weight ``shape`` (OIHW)."""
  return {"kernel": conv_oihw_to_hwio(t.take(f"{key}.weight", shape)),
          "bias": t.take(f"{key}.bias", (shape[0],))}


def jit_apply(model, variables, preprocess=None, **apply_kwargs):
  """``f(*inputs) = model.apply(variables, *inputs)`` compiled once with the weights passed in as
  an argument (STYLE rule 3: never closed over, so they are not baked into the program as
  constants); ``preprocess`` (optional, pure) maps the first input first."""
  import jax

  def apply(v, *inputs):
    if preprocess is not None:
      inputs = (preprocess(inputs[0]),) + inputs[1:]
    return model.apply(v, *inputs, **apply_kwargs)

  jitted = jax.jit(apply)
  variables = jax.device_put(variables)

  def f(*inputs):
    return jitted(variables, *inputs)
  f.jitted, f.variables = jitted, variables  # for inspection (e.g. lowering)
  return f


def save_native(path: str | os.PathLike, kind: str, config: Mapping[str, Any],
                params: Mapping[str, Any], half: bool = False) -> None:
  """Writes ``params`` (nested dict of arrays) and its ``config`` to one ``.npz`` file.

  ``half``: float32 arrays are stored as float16 (half the bytes; for the built-in models, whose
  metrics are measured on the stored file) and :func:`load_native` returns them as float32 again.
  Raises ``ValueError`` if a value is outside float16's range (it would be stored as inf).
  """
  flat = {k: np.asarray(v) for k, v in flatten_tree(params).items()}
  if _META_KEY in flat:
    raise ValueError(f"parameter path {_META_KEY!r} is reserved")
  meta = {"kind": kind, "format_version": 1, "config": to_plain(config)}
  if half:
    halved = []
    for k, v in flat.items():
      if v.dtype == np.float32:
        if np.any(np.abs(v[np.isfinite(v)]) > np.finfo(np.float16).max):
          raise ValueError(f"{k}: values beyond float16's range; save it with half=False")
        flat[k] = v.astype(np.float16)
        halved.append(k)
    # A reader of format 1 would return the float16 arrays as they are: it must refuse instead.
    meta.update(format_version=NATIVE_FORMAT_VERSION, stored_float16=sorted(halved))
  flat[_META_KEY] = np.frombuffer(json.dumps(meta).encode(), np.uint8)
  path = os.fspath(path)
  # A fresh temporary name beside the target (never a user's file such as PATH.tmp), renamed
  # into place only once complete, and removed if writing fails.
  fd, tmp = tempfile.mkstemp(prefix=os.path.basename(path) + ".", suffix=".partial",
                             dir=os.path.dirname(os.path.abspath(path)))
  try:
    with os.fdopen(fd, "wb") as f:  # np.savez would append '.npz' to a bare name
      np.savez(f, **flat)
    os.chmod(tmp, 0o644)  # mkstemp creates 0600
    os.replace(tmp, path)
  except BaseException:
    if os.path.exists(tmp):
      os.remove(tmp)
    raise


_ZIP_MAGIC = (b"PK\x03\x04", b"PK\x05\x06")


def check_zip_intact(path: str | os.PathLike) -> None:
  """Raises ``ValueError`` if ``path`` begins like a zip archive (``.npz``, torch ``.pt``) but its
  directory cannot be read: a truncated download or copy, not a file of another kind."""
  try:
    with open(path, "rb") as f:
      head = f.read(4)
  except OSError:
    return
  if head not in _ZIP_MAGIC:
    return
  try:
    with zipfile.ZipFile(path):
      pass
  except (zipfile.BadZipFile, OSError, ValueError, EOFError) as e:
    size = os.path.getsize(path)
    raise ValueError(f"{path}: truncated or corrupt file ({size:,} bytes): it starts as a zip "
                     f"archive (.npz / torch .pt) but its directory is unreadable ({e}); "
                     "download or convert it again") from None


def is_native(path: str | os.PathLike) -> bool:
  """True if ``path`` is a jaxinv native checkpoint.

  Raises:
    ValueError: the file is a truncated or corrupt zip archive (see :func:`check_zip_intact`),
      so what kind of file it was cannot be told.
  """
  check_zip_intact(path)
  try:
    with zipfile.ZipFile(path) as zf:
      return f"{_META_KEY}.npy" in zf.namelist()
  except (zipfile.BadZipFile, OSError):
    return False


def load_native(path: str | os.PathLike, expect_kind: str | None = None):
  """Reads a native checkpoint: returns ``(kind, config, params)``.

  Raises:
    FileNotFoundError: no such file.
    ValueError: not a jaxinv checkpoint, corrupt, a newer format, or a different ``kind``.
  """
  path = os.fspath(path)
  if not os.path.exists(path):
    raise FileNotFoundError(f"no such checkpoint: {path}")
  try:
    with np.load(path, allow_pickle=False) as z:
      if _META_KEY not in z.files:
        raise ValueError(f"{path}: not a jaxinv native checkpoint (no {_META_KEY} record)")
      meta = json.loads(bytes(z[_META_KEY]).decode())
      flat = {k: z[k] for k in z.files if k != _META_KEY}
  except (zipfile.BadZipFile, EOFError, OSError) as e:
    raise ValueError(f"{path}: corrupt or truncated checkpoint ({e})") from None
  if meta.get("format_version", 0) > NATIVE_FORMAT_VERSION:
    raise ValueError(f"{path}: written by a newer jaxinv (format {meta['format_version']})")
  if expect_kind is not None and meta.get("kind") != expect_kind:
    raise ValueError(f"{path}: holds a {meta.get('kind')!r} checkpoint, expected {expect_kind!r}")
  for k in meta.get("stored_float16", ()):
    if k not in flat or flat[k].dtype != np.float16:
      raise ValueError(f"{path}: {k} is listed as stored in float16 but is not")
    flat[k] = flat[k].astype(np.float32)
  return meta["kind"], meta["config"], unflatten_tree(flat)
