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

Hostile files are answered with :class:`TorchFileError`, never with an allocation the file cannot
back: tensor shapes, strides and offsets are checked against the size of their storage (a
contiguous tensor is a view of its storage, a strided one is copied only if it has no more elements
than the storage and all copies stay within twice the file's size), storages are read only up to the size
the archive declares for them (and a declared size must be one that deflate can produce from the
compressed bytes: no zip bombs), paths are streamed rather than read whole and copied, and
``MemoryError`` / ``RecursionError`` from a crafted file become ``TorchFileError``.
"""
from __future__ import annotations

import collections
import contextlib
import contextvars
import io
import math
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


# Deflate cannot expand data by more than ~1032:1; a member declaring more is a zip bomb.
_MAX_DEFLATE_RATIO = 1032
_SLACK_BYTES = 1 << 20  # copies allowed beyond the file's size (tiny files, scalars)
_CHUNK = 1 << 20


_COPY_FACTOR = 2  # strided copies may total twice the file (e.g. two transposed views of a storage)


class _Limits:
  """Per-load budget: strided copies may total at most ``_COPY_FACTOR`` x the file (+ slack)."""

  def __init__(self, backing_bytes: int):
    self.backing = int(backing_bytes)
    self.copied = 0

  def charge(self, nbytes: int, what: str) -> None:
    self.copied += int(nbytes)
    if self.copied > _COPY_FACTOR * self.backing + _SLACK_BYTES:
      raise TorchFileError(
          f"{what}: the file's tensors would need {self.copied:,} bytes of copies, more than "
          f"{_COPY_FACTOR}x the {self.backing:,} bytes the file holds (a crafted or corrupt file)")


_LIMITS: contextvars.ContextVar = contextvars.ContextVar("jaxinv_torchfile_limits", default=None)


def _ints(values, what: str) -> tuple:
  try:
    out = tuple(values)
  except TypeError:
    raise TorchFileError(f"tensor {what} is not a sequence: {values!r:.80}") from None
  if not all(isinstance(v, (int, np.integer)) and not isinstance(v, bool) for v in out):
    raise TorchFileError(f"tensor {what} must be integers, got {out!r:.80}")
  return tuple(int(v) for v in out)


def _rebuild_tensor(storage, storage_offset, size, stride, *unused) -> np.ndarray:
  """The tensor (offset, size, stride in elements) over ``storage``.

  A C-contiguous tensor is a view of its storage (as torch tensors share their storage); any other
  layout is copied, but only if it has no more elements than its storage (broadcast / expanded
  views of a small storage are refused) and the copies stay within the load's budget.
  """
  data = _as_storage(storage).data
  size, stride = _ints(size, "size"), _ints(stride, "stride")
  (storage_offset,) = _ints((storage_offset,), "offset")
  if len(size) != len(stride):
    raise TorchFileError(f"tensor size {size} and stride {stride} have different lengths")
  if storage_offset < 0 or any(n < 0 for n in size) or any(st < 0 for st in stride):
    raise TorchFileError(f"negative tensor offset/size/stride: {storage_offset}, {size}, {stride}")
  numel = math.prod(size)
  if numel == 0:
    return np.zeros(size, data.dtype)
  if not size:
    if storage_offset >= data.size:
      raise TorchFileError("tensor lies outside its storage (truncated file?)")
    return np.array(data[storage_offset])
  last = storage_offset + sum((n - 1) * st for n, st in zip(size, stride))
  if last >= data.size:
    raise TorchFileError(
        f"tensor of size {size} / stride {stride} at offset {storage_offset} lies outside its "
        f"storage of {data.size} elements (corrupt or truncated file)")
  contiguous = all(st == math.prod(size[i + 1:]) for i, (n, st) in enumerate(zip(size, stride))
                   if n > 1)
  if contiguous:
    return data[storage_offset:storage_offset + numel].reshape(size)
  if numel > data.size:
    raise TorchFileError(
        f"tensor of size {size} / stride {stride} has {numel:,} elements over a storage of "
        f"{data.size:,}: refusing to materialise more than the file stores")
  limits = _LIMITS.get()
  if limits is not None:
    limits.charge(numel * data.itemsize, f"tensor of size {size}")
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
  dt = _numpy_dtype(dtype) if not isinstance(dtype, np.dtype) else dtype
  if data is None:
    return dt.type(0)
  if not isinstance(data, (bytes, bytearray)) or len(data) != dt.itemsize:
    raise TorchFileError(f"numpy scalar of {dt} needs {dt.itemsize} bytes, got {data!r:.40}")
  return np.frombuffer(bytes(data), dt, count=1)[0]


def _numpy_dtype(name, align=False, copy=False):
  try:
    dt = np.dtype(name)
  except (TypeError, ValueError) as e:
    raise TorchFileError(f"unknown numpy dtype {name!r:.40}: {e}") from None
  if dt.hasobject:
    raise UnsafePickleError(f"numpy object arrays ({name!r}) are not allowed: they hold "
                            "arbitrary Python objects, not numbers")
  return dt


class _TypeMarker:
  """Stands for a class the file names only as a marker (``torch.Tensor``, ``numpy.ndarray``);
  building an instance from file-given arguments is refused."""

  def __init__(self, qualname):
    self.qualname = qualname

  def __call__(self, *args, **kwargs):
    raise UnsafePickleError(f"refusing to construct {self.qualname} from the file's arguments")

  def __repr__(self):
    return f"<{self.qualname}>"


_NDARRAY = _TypeMarker("numpy.ndarray")
_TENSOR = _TypeMarker("torch.Tensor")


def _numpy_reconstruct(subtype, shape, dtype):
  # numpy pickles an array as _reconstruct(ndarray, (0,), b'b') + __setstate__ with its real
  # shape and bytes (whose size numpy checks); a non-empty shape here would allocate unbacked memory.
  if subtype is not _NDARRAY:
    raise UnsafePickleError(f"numpy array subclass {subtype!r} is not allowed")
  if tuple(_ints(shape, "shape")) != (0,):
    raise TorchFileError(f"numpy array record with initial shape {shape!r:.60} (numpy writes (0,))")
  return np.ndarray.__new__(np.ndarray, (0,), np.uint8 if isinstance(dtype, bytes) else dtype)


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
    ("torch", "Tensor"): _TENSOR,  # only ever the ``new_type`` marker of _rebuild_from_type_v2
    ("torch.nn.parameter", "Parameter"): _TENSOR,
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
    ("numpy", "ndarray"): _NDARRAY,
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
    if not isinstance(data, (bytes, bytearray)):
      raise TorchFileError(f"_load_from_bytes expects bytes, got {type(data).__name__}")
    f = io.BytesIO(data)  # shares the bytes' buffer; storages are read straight into arrays
    return _load_legacy(_Bounded(f, len(data)), self._extra, self._stub_modules,
                        self._dict_stubs)

  def persistent_load(self, pid):
    return self._storages(pid)


class _Bounded:
  """A binary reader that never asks its file for more bytes than remain in it, so a length
  field in a crafted file cannot make ``read(n)`` allocate ``n`` bytes up front."""

  def __init__(self, f, size: int):
    self._f, self._end = f, int(size)

  def remaining(self) -> int:
    return max(0, self._end - self._f.tell())

  def read(self, n=-1):
    n = self.remaining() if n is None or n < 0 else min(int(n), self.remaining())
    return self._f.read(n)

  def readline(self, limit=-1):
    return self._f.readline(limit)

  def readinto(self, b):
    return self._f.readinto(b)

  def tell(self):
    return self._f.tell()


def _read_exact(f, n: int) -> bytes:
  b = f.read(n)
  if len(b) != n:
    raise TorchFileError(f"unexpected end of file: wanted {n} bytes, got {len(b)} (truncated?)")
  return b


def _read_array(f, dtype: np.dtype, count: int, what: str) -> np.ndarray:
  """``count`` elements read from ``f`` straight into a new array, in chunks (no bytes copy)."""
  out = np.empty(count, dtype)
  buf = memoryview(out.view(np.uint8))
  pos, n = 0, buf.nbytes
  while pos < n:
    got = f.readinto(buf[pos:pos + _CHUNK])
    if not got:
      raise TorchFileError(f"{what}: unexpected end of data after {pos} of {n} bytes (truncated?)")
    pos += got
  return out


def _load_legacy(f, extra_globals, stub_modules, dict_stubs):
  """Reads the legacy (non-zip) torch serialization stream from ``f`` (a :class:`_Bounded`)."""
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

  pending: dict[str, np.dtype] = {}
  views: list[tuple[Storage, str, int, int]] = []
  roots: dict[str, Storage] = {}

  def storages(pid):
    if not (isinstance(pid, tuple) and pid and pid[0] == "storage"):
      if isinstance(pid, tuple) and pid and pid[0] == "module":
        return None  # source-code record of a pickled nn.Module class; never executed
      raise TorchFileError(f"unknown persistent id {pid!r:.80}")
    storage_type, root_key, _location, numel, view_meta = (tuple(pid[1:]) + (None,))[:5]
    if not isinstance(storage_type, StorageType):
      raise TorchFileError(f"unknown storage type {storage_type!r:.80}")
    if root_key not in roots:
      roots[root_key] = Storage(np.zeros(0, storage_type.dtype))
      pending[root_key] = storage_type.dtype
    root = roots[root_key]
    if view_meta is not None:
      _view_key, offset, size = view_meta
      offset, size = _ints((offset, size), "storage view")
      if offset < 0 or size < 0:
        raise TorchFileError(f"storage view with negative offset/size {offset}, {size}")
      view = Storage(np.zeros(0, storage_type.dtype))
      views.append((view, root_key, offset, size))
      return view
    return root

  obj = _Unpickler(f, storages=storages, extra_globals=extra_globals, stub_modules=stub_modules,
                   dict_stubs=dict_stubs).load()
  keys = _Unpickler(f, **plain).load()
  if not isinstance(keys, (list, tuple)):
    raise TorchFileError(f"legacy storage key list is a {type(keys).__name__}")
  for key in keys:
    if key not in pending:
      raise TorchFileError(f"legacy stream lists storage {key!r:.40} that no tensor uses")
    dtype = pending.pop(key)
    (n,) = struct.unpack("<q", _read_exact(f, 8))
    if n < 0 or n * dtype.itemsize > f.remaining():
      raise TorchFileError(f"storage {key} declares {n} elements of {dtype}, but only "
                           f"{f.remaining()} bytes remain in the file (truncated or corrupt)")
    roots[key].data = _read_array(f, dtype, n, f"storage {key}")
  for view, root_key, offset, size in views:
    data = roots[root_key].data
    if offset + size > data.size:
      raise TorchFileError(f"storage view [{offset}, {offset + size}) lies outside storage "
                           f"{root_key} of {data.size} elements")
    view.data = data[offset:offset + size]
  # Tensors were rebuilt before the bytes arrived: rebuild them now that storages are filled.
  return _resolve_deferred(obj)


def _bad_pid(pid):
  raise TorchFileError(f"unexpected persistent id {pid!r}")


class _Deferred:
  """A tensor whose storage bytes come later in a legacy stream."""

  def __init__(self, fn, args):
    self.fn, self.args = fn, args


def _resolve_deferred(obj, _memo=None):
  """Walks containers and Stub records, replacing deferred tensors by arrays.

  Every object is visited once (``_memo`` by id), so a file whose containers share children
  (a DAG that is exponentially large as a tree) costs time linear in its size.
  """
  _memo = {} if _memo is None else _memo
  if isinstance(obj, (str, bytes, int, float, bool, type(None), np.ndarray)):
    return obj
  key = id(obj)
  if key in _memo:
    return _memo[key]
  if isinstance(obj, _Deferred):
    out = obj.fn(*[_resolve_deferred(a, _memo) for a in obj.args])
    _memo[key] = out
    return out
  _memo[key] = obj
  if isinstance(obj, dict):
    for k in list(obj.keys()):
      obj[k] = _resolve_deferred(obj[k], _memo)
    if isinstance(obj, StubDict):
      for k, v in list(obj.__dict__.items()):
        obj.__dict__[k] = _resolve_deferred(v, _memo)
    return obj
  if isinstance(obj, list):
    obj[:] = [_resolve_deferred(v, _memo) for v in obj]
    return obj
  if isinstance(obj, tuple):
    out = tuple(_resolve_deferred(v, _memo) for v in obj)
    _memo[key] = out
    return out
  if isinstance(obj, Stub):
    for k, v in list(obj.__dict__.items()):
      obj.__dict__[k] = _resolve_deferred(v, _memo)
    return obj
  return obj


def _deferring(fn):
  """Wraps a tensor rebuild so that it runs once the legacy stream's storages are filled."""

  def wrapper(*args):
    if args and isinstance(args[0], Storage) and args[0].data.size == 0:
      return _Deferred(fn, args)
    return fn(*args)
  return wrapper


def _check_member(info: zipfile.ZipInfo) -> None:
  """Refuses a member whose declared size the compressed bytes cannot honestly produce."""
  if info.compress_type == zipfile.ZIP_STORED:
    if info.file_size != info.compress_size:
      raise TorchFileError(f"{info.filename}: stored member declares {info.file_size} bytes but "
                           f"holds {info.compress_size}")
  elif info.file_size > _MAX_DEFLATE_RATIO * info.compress_size + 1024:
    raise TorchFileError(
        f"{info.filename}: declares {info.file_size:,} bytes from {info.compress_size:,} "
        f"compressed bytes, more than compression can produce (a zip bomb?)")


def _load_zip(zf: zipfile.ZipFile, extra_globals, stub_modules, dict_stubs):
  names = zf.namelist()
  pkl = [n for n in names if n.endswith("data.pkl") and n.count("/") == 1]
  if len(pkl) != 1:
    raise TorchFileError("zip file is not a torch checkpoint (no <root>/data.pkl)")
  root = pkl[0].rsplit("/", 1)[0]
  cache: dict[str, Storage] = {}

  def storages(pid):
    if not (isinstance(pid, tuple) and len(pid) >= 5 and pid[0] == "storage"):
      raise TorchFileError(f"unknown persistent id {pid!r:.80}")
    storage_type, key, _location, numel = pid[1:5]
    if not isinstance(storage_type, StorageType):
      raise TorchFileError(f"unknown storage type {storage_type!r:.80}")
    if key not in cache:
      try:
        info = zf.getinfo(f"{root}/data/{key}")
      except KeyError:
        raise TorchFileError(f"storage {key} is missing from the archive (truncated?)") from None
      _check_member(info)
      itemsize = storage_type.dtype.itemsize
      if info.file_size % itemsize:
        raise TorchFileError(f"storage {key} has {info.file_size} bytes, not a whole number of "
                             f"{storage_type.dtype} elements")
      (numel,) = _ints((numel,), "storage size")
      if numel * itemsize > info.file_size:
        raise TorchFileError(f"storage {key} declares {numel} elements of {storage_type.dtype} "
                             f"but the archive holds {info.file_size} bytes (truncated?)")
      with zf.open(info) as f:
        cache[key] = Storage(_read_array(f, storage_type.dtype, info.file_size // itemsize,
                                         f"storage {key}"))
    return cache[key]

  info = zf.getinfo(pkl[0])
  _check_member(info)
  with zf.open(info) as f:
    data = f.read()
  return _Unpickler(io.BytesIO(data), storages=storages, extra_globals=extra_globals,
                    stub_modules=stub_modules, dict_stubs=dict_stubs).load()


@contextlib.contextmanager
def _open_source(source):
  """``(binary file, size in bytes)`` of a path, a bytes-like object or a binary file object.
  Paths are streamed (never read whole and copied)."""
  if isinstance(source, (str, os.PathLike)):
    if not os.path.exists(source):
      raise FileNotFoundError(f"no such file: {source}")
    with open(source, "rb") as f:
      yield f, os.fstat(f.fileno()).st_size
    return
  if isinstance(source, (bytes, bytearray, memoryview)):
    data = source if isinstance(source, bytes) else bytes(source)
    yield io.BytesIO(data), len(data)
    return
  try:
    start = source.tell()
    end = source.seek(0, os.SEEK_END)
    source.seek(start)
  except (AttributeError, OSError, io.UnsupportedOperation):  # not seekable: buffer it
    data = source.read()
    source, start, end = io.BytesIO(data), 0, len(data)
  yield source, end - start


_PASS_THROUGH = (UnsafePickleError, TorchFileError, FileNotFoundError)


def _wrap(e: BaseException, what: str) -> TorchFileError:
  if isinstance(e, RecursionError):
    return TorchFileError(f"{what}: objects nested too deeply (a crafted or corrupt file)")
  if isinstance(e, MemoryError):
    return TorchFileError(f"{what}: reading it would exhaust memory (a crafted or corrupt file)")
  return TorchFileError(f"{what}: {type(e).__name__}: {e}")


def load(source, *, extra_globals: Mapping[tuple[str, str], Any] | None = None,
         stub_modules: Iterable[str] = (), dict_stubs: Iterable[str] = ()) -> Any:
  """Loads a PyTorch file into plain Python objects with ``np.ndarray`` tensors.

  Contiguous tensors are views of their (writable) storage, as torch tensors share storage.

  Args:
    source: a path, bytes, or a binary file object.
    extra_globals: ``(module, name) -> object`` for globals the caller allows (they must be inert).
    stub_modules: module prefixes whose classes become inert :class:`Stub` records
      (e.g. ``("training", "dnnlib", "torch_utils", "torch.nn")`` for EG3D network pickles).
    dict_stubs: ``"module.Name"`` of stubbed classes that are ``dict`` subclasses.

  Raises:
    FileNotFoundError: ``source`` is a path that does not exist.
    UnsafePickleError: the file names a global outside the allow-list.
    TorchFileError: corrupt, truncated, crafted (sizes its bytes cannot back) or not a torch file.
  """
  stub_modules = tuple(stub_modules)
  dict_stubs = tuple(dict_stubs)
  extra = dict(extra_globals or {})
  with _open_source(source) as (f, size):
    if size <= 0:
      raise TorchFileError("empty file")
    token = _LIMITS.set(_Limits(size))
    try:
      start = f.tell()
      head = f.read(4)
      f.seek(start)
      if head == b"PK\x03\x04":
        try:
          zf = zipfile.ZipFile(f)
        except (zipfile.BadZipFile, OSError, ValueError, EOFError) as e:
          raise TorchFileError(f"corrupt or truncated torch zip archive: {e}") from None
        with zf:
          return _load_zip(zf, extra, stub_modules, dict_stubs)
      # Legacy stream: rebuilds must wait for the storage bytes at the end of the stream.
      legacy_extra = {k: v for k, v in extra.items()}
      for k in (("torch._utils", "_rebuild_tensor"), ("torch._utils", "_rebuild_tensor_v2")):
        legacy_extra.setdefault(k, _deferring(_TORCH_ALLOWED[k]))
      return _load_legacy(_Bounded(f, start + size), legacy_extra, stub_modules, dict_stubs)
    except _PASS_THROUGH:
      raise
    except Exception as e:  # untrusted input: any other failure means a corrupt/crafted file
      raise _wrap(e, "corrupt or truncated torch file") from None
    finally:
      _LIMITS.reset(token)


def load_pickle(source, *, extra_globals=None, stub_modules=(), dict_stubs=()) -> Any:
  """Loads a plain pickle (not a ``torch.save`` container) with the same allow-list.

  Network pickles (StyleGAN/EG3D snapshots) are plain pickles whose tensors are pickled through
  ``torch.storage._load_from_bytes``; this resolves them to ``np.ndarray`` the same way.
  """
  with _open_source(source) as (f, size):
    if size <= 0:
      raise TorchFileError("empty file")
    token = _LIMITS.set(_Limits(size))
    try:
      return _Unpickler(_Bounded(f, f.tell() + size), storages=_bad_pid,
                        extra_globals=extra_globals, stub_modules=tuple(stub_modules),
                        dict_stubs=tuple(dict_stubs)).load()
    except _PASS_THROUGH:
      raise
    except Exception as e:  # untrusted input: any other failure means a corrupt/crafted file
      raise _wrap(e, "corrupt or truncated pickle") from None
    finally:
      _LIMITS.reset(token)


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


# ------------------------------------------------------------------------------------ writing

_DTYPE_STORAGES = {np.dtype(v): k for k, v in _STORAGE_DTYPES.items()
                   if v != "bfloat16" and k != "UntypedStorage"}


class _GlobalRef:
  """Pickles as a reference to ``module.name`` (torch need not be importable)."""

  def __init__(self, module: str, name: str):
    self.module, self.name = module, name

  def __call__(self, *args):  # pickle only writes callables as reduce functions
    raise AssertionError("never called")


class _TensorRecord:

  def __init__(self, key: str, array: np.ndarray):
    self.key, self.array = key, array


class _StorageRecord:

  def __init__(self, key: str, array: np.ndarray):
    self.key, self.array = key, array


class _TorchPickler(pickle._Pickler):
  """Writes torch-shaped pickles: tensors as ``_rebuild_tensor_v2`` over persistent storages."""

  dispatch = pickle._Pickler.dispatch.copy()

  def _save_global_ref(self, obj):
    self.write(pickle.GLOBAL + f"{obj.module}\n{obj.name}\n".encode())
    self.memoize(obj)

  dispatch[_GlobalRef] = _save_global_ref

  def __init__(self, f):
    super().__init__(f, protocol=2)
    self._globals: dict[tuple[str, str], _GlobalRef] = {}

  def _ref(self, module, name):
    return self._globals.setdefault((module, name), _GlobalRef(module, name))

  def persistent_id(self, obj):
    if isinstance(obj, _StorageRecord):
      storage = self._ref("torch", _DTYPE_STORAGES[obj.array.dtype])
      return ("storage", storage, obj.key, "cpu", int(obj.array.size))
    return None

  def reducer_override(self, obj):
    if isinstance(obj, _TensorRecord):
      a = obj.array
      stride = tuple(int(np.prod(a.shape[i + 1:])) for i in range(a.ndim))
      return (self._ref("torch._utils", "_rebuild_tensor_v2"),
              (_StorageRecord(obj.key, a), 0, tuple(a.shape), stride, False,
               collections.OrderedDict()))
    return NotImplemented


def save_state_dict(path: str | os.PathLike, state_dict: Mapping[str, Any],
                    archive_name: str = "archive") -> None:
  """Writes ``{key: array}`` as a PyTorch zip checkpoint (what ``torch.save(state_dict)`` writes,
  loadable by ``torch.load`` and by :func:`load`), without torch.

  Tensors are stored contiguous, little-endian, uncompressed, one storage each; nested dicts and
  plain values (numbers, strings, lists) are kept. bfloat16 is not supported.
  """
  counter = [0]

  def convert(obj):
    if isinstance(obj, (np.ndarray, np.generic)) and not isinstance(obj, (np.str_, np.bytes_)):
      a = np.asarray(obj)  # not ascontiguousarray: it turns 0-d into 1-d
      if not a.flags.c_contiguous:
        a = a.copy(order="C")
      if a.dtype.byteorder == ">":
        a = a.astype(a.dtype.newbyteorder("<"))
      if a.dtype not in _DTYPE_STORAGES:
        raise ValueError(f"save_state_dict: dtype {a.dtype} has no torch storage type here")
      key = str(counter[0])
      counter[0] += 1
      return _TensorRecord(key, a)
    if isinstance(obj, Mapping):
      out = collections.OrderedDict() if not type(obj) is dict else {}
      for k, v in obj.items():
        out[k] = convert(v)
      return out
    if isinstance(obj, (list, tuple)):
      return type(obj)(convert(v) for v in obj)
    return obj

  obj = convert(state_dict)
  tensors: list[_TensorRecord] = []

  def collect(o):
    if isinstance(o, _TensorRecord):
      tensors.append(o)
    elif isinstance(o, Mapping):
      for v in o.values():
        collect(v)
    elif isinstance(o, (list, tuple)):
      for v in o:
        collect(v)

  collect(obj)
  buf = io.BytesIO()
  _TorchPickler(buf).dump(obj)
  path = os.fspath(path)
  with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as zf:
    zf.writestr(f"{archive_name}/data.pkl", buf.getvalue())
    zf.writestr(f"{archive_name}/byteorder", "little")
    for t in tensors:
      zf.writestr(f"{archive_name}/data/{t.key}", t.array.tobytes())
    zf.writestr(f"{archive_name}/version", "3\n")
