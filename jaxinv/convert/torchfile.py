"""Read PyTorch files (``torch.save`` output, network pickles) without torch and without running them.

Pickles can name any Python callable and have the loader call it; a hostile file can run a shell
command that way. This reader therefore resolves globals through an allow-list of inert
re-implementations: tensors become ``np.ndarray``, storages become byte buffers, ``OrderedDict`` is
``OrderedDict``. Every other global raises :class:`UnsafePickleError` naming it, unless the caller
maps it explicitly (``extra_globals``) or declares whole module prefixes as inert stubs
(``stub_modules``), which build :class:`Stub` records holding the pickled state and call nothing.

Both container formats are read:

* the zip format (``torch.save`` since torch 1.6): ``<root>/data.pkl`` plus one file per storage;
* the legacy stream (older ``torch.save``, ``_use_new_zipfile_serialization=False``, and the bytes
  inside ``torch.storage._load_from_bytes`` used when pickling tensors): magic number, protocol
  version, system info, the object pickle, the storage keys, then each storage's raw bytes.
"""
from __future__ import annotations

import collections
import io
import os
import pickle
import struct
import zipfile
from typing import Any, Callable, Iterable, Mapping

import numpy as np

_LEGACY_MAGIC = 0x1950A86A20F9469CFC6C
_LEGACY_PROTOCOL = 1001


class UnsafePickleError(pickle.UnpicklingError):
  """The file asks for a global that this reader will not provide."""


class TorchFileError(ValueError):
  """The file is not a readable PyTorch file (corrupt, truncated or of an unknown format)."""


def _bfloat16():
  import ml_dtypes  # shipped with jax
  return np.dtype(ml_dtypes.bfloat16)


# torch storage class name -> numpy dtype name
_STORAGE_DTYPES = {
    "FloatStorage": "float32", "DoubleStorage": "float64", "HalfStorage": "float16",
    "BFloat16Storage": "bfloat16", "LongStorage": "int64", "IntStorage": "int32",
    "ShortStorage": "int16", "CharStorage": "int8", "ByteStorage": "uint8", "BoolStorage": "bool",
    "UntypedStorage": "uint8",
}


class StorageType:
  """Stands for a ``torch.*Storage`` class named in a pickle; knows its element dtype."""

  def __init__(self, name: str):
    self.name = name
    dt = _STORAGE_DTYPES[name]
    self.dtype = _bfloat16() if dt == "bfloat16" else np.dtype(dt)

  def __repr__(self):
    return f"StorageType({self.name})"


class Storage:
  """A flat typed buffer: what a torch storage holds."""

  def __init__(self, data: np.ndarray):
    self.data = data  # 1-D array of the storage's dtype

  def __repr__(self):
    return f"Storage({self.data.dtype}, {self.data.size})"


def _as_storage(x) -> Storage:
  if isinstance(x, Storage):
    return x
  raise TorchFileError(f"expected a tensor storage, got {type(x).__name__}")


def _rebuild_tensor(storage, storage_offset, size, stride, *unused) -> np.ndarray:
  """A tensor view (offset, size, stride in elements) of ``storage``, copied out."""
  data = _as_storage(storage).data
  size = tuple(int(s) for s in size)
  stride = tuple(int(s) for s in stride)
  if not size:
    if storage_offset >= data.size:
      raise TorchFileError("tensor lies outside its storage (truncated file?)")
    return np.array(data[storage_offset])
  if any(s == 0 for s in size):
    return np.zeros(size, data.dtype)
  last = storage_offset + sum((n - 1) * st for n, st in zip(size, stride))
  if storage_offset < 0 or last >= data.size or any(st < 0 for st in stride):
    raise TorchFileError(
        f"tensor of size {size} / stride {stride} at offset {storage_offset} lies outside its "
        f"storage of {data.size} elements (corrupt or truncated file)")
  view = np.lib.stride_tricks.as_strided(
      data[storage_offset:], shape=size, strides=tuple(st * data.itemsize for st in stride),
      writeable=False)
  return np.array(view)  # own, contiguous copy


def _rebuild_tensor_v2(storage, storage_offset, size, stride, requires_grad=False,
                       backward_hooks=None, metadata=None) -> np.ndarray:
  return _rebuild_tensor(storage, storage_offset, size, stride)


def _rebuild_parameter(data, requires_grad=False, backward_hooks=None, *unused):
  return data


def _rebuild_parameter_with_state(data, requires_grad, backward_hooks, state):
  return data


def _rebuild_from_type_v2(func, new_type, args, state):
  # ``func`` was itself resolved through the allow-list, so calling it is safe.
  return func(*args)


def _torch_size(*args):
  return tuple(*args) if args else ()


def _numpy_scalar(dtype, data=None):
  dt = np.dtype(dtype)
  if data is None:
    return dt.type(0)
  return np.frombuffer(bytes(data), dt, count=1)[0]


def _numpy_dtype(name, align=False, copy=False):
  return np.dtype(name)


class _NumpyArrayRecord(np.ndarray):
  pass


def _numpy_reconstruct(subtype, shape, dtype):
  if subtype is not np.ndarray:
    raise UnsafePickleError(f"numpy array subclass {subtype!r} is not allowed")
  return np.ndarray.__new__(np.ndarray, shape, dtype)


def _codecs_encode(text, encoding="utf-8"):
  return text.encode(encoding)


class Stub:
  """An inert stand-in for a class that the file names but this reader must not import.

  Construction arguments, ``__setstate__`` state and items are recorded, nothing is executed.
  ``qualname`` tells which class it stands for (``module.name``).
  """
  qualname = "Stub"

  def __init__(self, *args, **kwargs):
    self.__dict__["_args"] = args
    self.__dict__["_kwargs"] = kwargs

  def __setstate__(self, state):
    self.__dict__["_state"] = state
    if isinstance(state, dict):
      for k, v in state.items():
        if isinstance(k, str) and not k.startswith("__"):
          self.__dict__[k] = v
    elif isinstance(state, tuple) and len(state) == 2 and isinstance(state[1], dict):
      for k, v in state[1].items():  # (state, slotstate)
        self.__dict__[k] = v

  def __setitem__(self, key, value):
    self.__dict__.setdefault("_items", {})[key] = value

  def append(self, value):
    self.__dict__.setdefault("_list", []).append(value)

  def extend(self, values):
    self.__dict__.setdefault("_list", []).extend(values)

  def __repr__(self):
    return f"<Stub {self.qualname}>"


class StubDict(dict):
  """Inert stand-in for a ``dict`` subclass (e.g. ``dnnlib.util.EasyDict``); behaves as a dict."""
  qualname = "StubDict"

  def __setstate__(self, state):
    if isinstance(state, dict):
      self.update(state)


def _make_stub(module: str, name: str, dict_like: bool) -> type:
  base = StubDict if dict_like else Stub
  return type(name, (base,), {"qualname": f"{module}.{name}", "__module__": "jaxinv.stub"})


_TORCH_ALLOWED: dict[tuple[str, str], Any] = {
    ("torch._utils", "_rebuild_tensor"): _rebuild_tensor,
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor_v2,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
    ("torch._utils", "_rebuild_parameter_with_state"): _rebuild_parameter_with_state,
    ("torch._tensor", "_rebuild_from_type_v2"): _rebuild_from_type_v2,
    ("torch", "Size"): _torch_size,
    ("torch", "Tensor"): np.ndarray,  # only ever the ``new_type`` marker of _rebuild_from_type_v2
    ("torch.nn.parameter", "Parameter"): np.ndarray,
    ("collections", "OrderedDict"): collections.OrderedDict,
    ("builtins", "set"): set,
    ("builtins", "frozenset"): frozenset,
    ("builtins", "slice"): slice,
    ("builtins", "complex"): complex,
    ("numpy.core.multiarray", "scalar"): _numpy_scalar,
    ("numpy._core.multiarray", "scalar"): _numpy_scalar,
    ("numpy", "dtype"): _numpy_dtype,
    ("numpy.core.multiarray", "_reconstruct"): _numpy_reconstruct,
    ("numpy._core.multiarray", "_reconstruct"): _numpy_reconstruct,
    ("numpy", "ndarray"): np.ndarray,
    ("_codecs", "encode"): _codecs_encode,
}
for _name in _STORAGE_DTYPES:
  _TORCH_ALLOWED[("torch", _name)] = StorageType(_name)
  _TORCH_ALLOWED[("torch.storage", _name)] = StorageType(_name)
# numpy dtype classes pickled by numpy >= 1.25 (e.g. numpy.dtypes.Float32DType) resolve to np.dtype.
for _dt in ("Float16DType", "Float32DType", "Float64DType", "Int8DType", "Int16DType", "Int32DType",
            "Int64DType", "UInt8DType", "BoolDType"):
  _TORCH_ALLOWED[("numpy.dtypes", _dt)] = _numpy_dtype


class _Unpickler(pickle.Unpickler):

  def __init__(self, file, *, storages: Callable[[tuple], Any], extra_globals, stub_modules,
               dict_stubs):
    super().__init__(file)
    self._storages = storages
    self._extra = dict(extra_globals or {})
    self._stub_modules = tuple(stub_modules or ())
    self._dict_stubs = set(dict_stubs or ())
    self._stub_cache: dict[tuple[str, str], type] = {}

  def find_class(self, module, name):
    key = (module, name)
    if key in self._extra:
      return self._extra[key]
    if key == ("torch.storage", "_load_from_bytes"):
      return self._load_from_bytes
    if key in _TORCH_ALLOWED:
      return _TORCH_ALLOWED[key]
    if any(module == p or module.startswith(p + ".") for p in self._stub_modules):
      if key not in self._stub_cache:
        self._stub_cache[key] = _make_stub(module, name, f"{module}.{name}" in self._dict_stubs)
      return self._stub_cache[key]
    raise UnsafePickleError(
        f"refusing to load global {module}.{name}: the file asks to call or build it, and "
        "jaxinv only reads tensors and plain containers (the file may be a different kind of "
        "checkpoint, or malicious)")

  def _load_from_bytes(self, data):
    return _load_legacy(io.BytesIO(bytes(data)), self._extra, self._stub_modules, self._dict_stubs)

  def persistent_load(self, pid):
    return self._storages(pid)


def _read_exact(f, n: int) -> bytes:
  b = f.read(n)
  if len(b) != n:
    raise TorchFileError(f"unexpected end of file: wanted {n} bytes, got {len(b)} (truncated?)")
  return b


def _load_legacy(f, extra_globals, stub_modules, dict_stubs):
  """Reads the legacy (non-zip) torch serialization stream from ``f``."""
  plain = dict(storages=lambda pid: _bad_pid(pid), extra_globals=None, stub_modules=(),
               dict_stubs=())
  try:
    magic = _Unpickler(f, **plain).load()
  except (pickle.UnpicklingError, EOFError, ValueError) as e:
    raise TorchFileError(f"not a PyTorch file: {e}") from None
  if magic != _LEGACY_MAGIC:
    raise TorchFileError("not a PyTorch file (no zip archive and no legacy magic number)")
  protocol = _Unpickler(f, **plain).load()
  if protocol != _LEGACY_PROTOCOL:
    raise TorchFileError(f"unsupported legacy torch protocol {protocol!r}")
  sys_info = _Unpickler(f, **plain).load()
  if isinstance(sys_info, dict) and not sys_info.get("little_endian", True):
    raise TorchFileError("big-endian torch files are not supported")

  pending: dict[str, tuple[np.dtype, int]] = {}
  views: list[tuple[Storage, str, int, int]] = []
  roots: dict[str, Storage] = {}

  def storages(pid):
    if not (isinstance(pid, tuple) and pid and pid[0] == "storage"):
      if isinstance(pid, tuple) and pid and pid[0] == "module":
        return None  # source-code record of a pickled nn.Module class; never executed
      raise TorchFileError(f"unknown persistent id {pid!r}")
    storage_type, root_key, _location, numel, view_meta = (tuple(pid[1:]) + (None,))[:5]
    if not isinstance(storage_type, StorageType):
      raise TorchFileError(f"unknown storage type {storage_type!r}")
    if root_key not in roots:
      roots[root_key] = Storage(np.zeros(0, storage_type.dtype))
      pending[root_key] = (storage_type.dtype, int(numel))
    root = roots[root_key]
    if view_meta is not None:
      view_key, offset, size = view_meta
      view = Storage(np.zeros(0, storage_type.dtype))
      views.append((view, root_key, int(offset), int(size)))
      return view
    return root

  obj = _Unpickler(f, storages=storages, extra_globals=extra_globals, stub_modules=stub_modules,
                   dict_stubs=dict_stubs).load()
  keys = _Unpickler(f, **plain).load()
  for key in keys:
    dtype, numel = pending[key]
    (n,) = struct.unpack("<q", _read_exact(f, 8))
    raw = _read_exact(f, n * dtype.itemsize)
    roots[key].data = np.frombuffer(raw, dtype).copy()
  for view, root_key, offset, size in views:
    view.data = roots[root_key].data[offset:offset + size]
  # Tensors were rebuilt before the bytes arrived: rebuild them now that storages are filled.
  return _resolve_deferred(obj)


def _bad_pid(pid):
  raise TorchFileError(f"unexpected persistent id {pid!r}")


class _Deferred:
  """A tensor whose storage bytes come later in a legacy stream."""

  def __init__(self, fn, args):
    self.fn, self.args = fn, args


def _resolve_deferred(obj, _seen=None):
  """Walks containers and Stub records, replacing deferred tensors by arrays."""
  _seen = set() if _seen is None else _seen
  if isinstance(obj, _Deferred):
    return obj.fn(*[_resolve_deferred(a, _seen) for a in obj.args])
  if id(obj) in _seen:
    return obj
  if isinstance(obj, (dict, list, Stub)):
    _seen.add(id(obj))
  if isinstance(obj, dict):
    for k in list(obj.keys()):
      obj[k] = _resolve_deferred(obj[k], _seen)
    if isinstance(obj, StubDict):
      for k, v in list(obj.__dict__.items()):
        obj.__dict__[k] = _resolve_deferred(v, _seen)
    return obj
  if isinstance(obj, list):
    obj[:] = [_resolve_deferred(v, _seen) for v in obj]
    return obj
  if isinstance(obj, tuple):
    return tuple(_resolve_deferred(v, _seen) for v in obj)
  if isinstance(obj, Stub):
    for k, v in list(obj.__dict__.items()):
      obj.__dict__[k] = _resolve_deferred(v, _seen)
    return obj
  return obj


def _deferring(fn):
  """Wraps a tensor rebuild so that it runs once the legacy stream's storages are filled."""

  def wrapper(*args):
    if args and isinstance(args[0], Storage) and args[0].data.size == 0:
      return _Deferred(fn, args)
    return fn(*args)
  return wrapper


def _load_zip(zf: zipfile.ZipFile, extra_globals, stub_modules, dict_stubs):
  names = zf.namelist()
  pkl = [n for n in names if n.endswith("data.pkl") and n.count("/") == 1]
  if len(pkl) != 1:
    raise TorchFileError("zip file is not a torch checkpoint (no <root>/data.pkl)")
  root = pkl[0].rsplit("/", 1)[0]
  cache: dict[str, Storage] = {}

  def storages(pid):
    if not (isinstance(pid, tuple) and pid and pid[0] == "storage"):
      raise TorchFileError(f"unknown persistent id {pid!r}")
    storage_type, key, _location, numel = pid[1:5]
    if not isinstance(storage_type, StorageType):
      raise TorchFileError(f"unknown storage type {storage_type!r}")
    if key not in cache:
      try:
        raw = zf.read(f"{root}/data/{key}")
      except KeyError:
        raise TorchFileError(f"storage {key} is missing from the archive (truncated?)") from None
      if len(raw) % storage_type.dtype.itemsize:
        raise TorchFileError(f"storage {key} has {len(raw)} bytes, not a whole number of "
                             f"{storage_type.dtype} elements")
      cache[key] = Storage(np.frombuffer(raw, storage_type.dtype).copy())
    return cache[key]

  with zf.open(pkl[0]) as f:
    return _Unpickler(io.BytesIO(f.read()), storages=storages, extra_globals=extra_globals,
                      stub_modules=stub_modules, dict_stubs=dict_stubs).load()


def _read_source(source) -> bytes:
  """The bytes of a path, a bytes-like object or a binary file object."""
  if isinstance(source, (str, os.PathLike)):
    if not os.path.exists(source):
      raise FileNotFoundError(f"no such file: {source}")
    with open(source, "rb") as f:
      data = f.read()
  elif isinstance(source, (bytes, bytearray, memoryview)):
    data = bytes(source)
  else:
    data = source.read()
  if not data:
    raise TorchFileError("empty file")
  return data


def load(source, *, extra_globals: Mapping[tuple[str, str], Any] | None = None,
         stub_modules: Iterable[str] = (), dict_stubs: Iterable[str] = ()) -> Any:
  """Loads a PyTorch file into plain Python objects with ``np.ndarray`` tensors.

  Args:
    source: a path, bytes, or a binary file object.
    extra_globals: ``(module, name) -> object`` for globals the caller allows (they must be inert).
    stub_modules: module prefixes whose classes become inert :class:`Stub` records
      (e.g. ``("training", "dnnlib", "torch_utils", "torch.nn")`` for EG3D network pickles).
    dict_stubs: ``"module.Name"`` of stubbed classes that are ``dict`` subclasses.

  Raises:
    FileNotFoundError: ``source`` is a path that does not exist.
    UnsafePickleError: the file names a global outside the allow-list.
    TorchFileError: corrupt, truncated or not a torch file.
  """
  data = _read_source(source)
  stub_modules = tuple(stub_modules)
  dict_stubs = tuple(dict_stubs)
  extra = dict(extra_globals or {})
  if data[:4] == b"PK\x03\x04":
    try:
      zf = zipfile.ZipFile(io.BytesIO(data))
    except zipfile.BadZipFile as e:
      raise TorchFileError(f"corrupt torch zip archive: {e}") from None
    try:
      return _load_zip(zf, extra, stub_modules, dict_stubs)
    except (zipfile.BadZipFile, EOFError, struct.error, pickle.UnpicklingError, ValueError) as e:
      if isinstance(e, (UnsafePickleError, TorchFileError)):
        raise
      raise TorchFileError(f"corrupt torch zip archive: {e}") from None
  # Legacy stream: rebuilds must wait for the storage bytes at the end of the stream.
  legacy_extra = {k: v for k, v in extra.items()}
  for k in (("torch._utils", "_rebuild_tensor"), ("torch._utils", "_rebuild_tensor_v2")):
    legacy_extra.setdefault(k, _deferring(_TORCH_ALLOWED[k]))
  try:
    return _load_legacy(io.BytesIO(data), legacy_extra, stub_modules, dict_stubs)
  except (EOFError, struct.error, pickle.UnpicklingError, KeyError, ValueError) as e:
    if isinstance(e, (UnsafePickleError, TorchFileError)):
      raise
    raise TorchFileError(f"corrupt or truncated torch file: {type(e).__name__}: {e}") from None


def load_pickle(source, *, extra_globals=None, stub_modules=(), dict_stubs=()) -> Any:
  """Loads a plain pickle (not a ``torch.save`` container) with the same allow-list.

  Network pickles (StyleGAN/EG3D snapshots) are plain pickles whose tensors are pickled through
  ``torch.storage._load_from_bytes``; this resolves them to ``np.ndarray`` the same way.
  """
  data = _read_source(source)
  try:
    return _Unpickler(io.BytesIO(data), storages=_bad_pid, extra_globals=extra_globals,
                      stub_modules=tuple(stub_modules), dict_stubs=tuple(dict_stubs)).load()
  except (EOFError, struct.error, KeyError, IndexError) as e:
    raise TorchFileError(f"corrupt or truncated pickle: {type(e).__name__}: {e}") from None
  except pickle.UnpicklingError as e:
    if isinstance(e, (UnsafePickleError, TorchFileError)):
      raise
    raise TorchFileError(f"corrupt or truncated pickle: {e}") from None


def load_state_dict(source, *, unwrap: Iterable[str] = ("state_dict", "model", "params")
                    ) -> "collections.OrderedDict[str, np.ndarray]":
  """Loads a file holding a state dict (possibly wrapped as ``{'state_dict': ...}``).

  Returns ``{key: np.ndarray}`` in file order. Non-tensor entries of a wrapper dict (e.g. ``opts``)
  are dropped; use :func:`load` to see them.
  """
  obj = load(source)
  if isinstance(obj, Mapping):
    for k in unwrap:
      if k in obj and isinstance(obj[k], Mapping):
        obj = obj[k]
        break
  if not isinstance(obj, Mapping):
    raise TorchFileError(f"expected a state dict (a mapping of tensors), got {type(obj).__name__}")
  out = collections.OrderedDict()
  for k, v in obj.items():
    if isinstance(v, np.ndarray):
      out[str(k)] = v
  if not out:
    raise TorchFileError("the file holds no tensors")
  return out
