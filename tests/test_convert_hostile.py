"""Crafted checkpoint files: the torch reader never allocates more than the file's storage backs,
bounds decompression by what the archive can honestly declare, streams paths without a read-then-
copy peak, and answers every such file with its own error (no MemoryError / RecursionError).
Every file is built here, without torch."""
import collections
import io
import pickle
import struct
import tracemalloc
import zipfile

import numpy as np
import pytest

from jaxinv.convert import torchfile
from test_convert_common import (_Call, _Pickler, _Storage, _global, _legacy_bytes, _tensor,
                                 _zip_bytes)

HUGE = (1_000_000, 1_000_000)  # 4 TB of float32


def _strided(storage, size, stride, offset=0):
  return _Call(_global("torch._utils", "_rebuild_tensor_v2"), storage, offset, tuple(size),
               tuple(stride), False, collections.OrderedDict())


def _pickle(obj) -> bytes:
  f = io.BytesIO()
  _Pickler(f).dump(obj)
  return f.getvalue()


def _peak_bytes(fn):
  tracemalloc.start()
  try:
    fn()
  except Exception:
    pass
  _, peak = tracemalloc.get_traced_memory()
  tracemalloc.stop()
  return peak


@pytest.mark.parametrize("fmt", ["zip", "legacy"])
def test_zero_strides_over_tiny_storage_are_refused(fmt):
  s = _Storage("0", np.ones(1, np.float32))
  obj = {"w": _strided(s, HUGE, (0, 0))}
  data = (_zip_bytes if fmt == "zip" else _legacy_bytes)(obj, [s])
  assert len(data) < 1000
  with pytest.raises(torchfile.TorchFileError, match="elements over a storage"):
    torchfile.load(data)


def test_overlapping_strides_larger_than_storage_are_refused():
  s = _Storage("0", np.ones(2000, np.float32))
  with pytest.raises(torchfile.TorchFileError, match="materialise"):
    torchfile.load(_zip_bytes({"w": _strided(s, (1000, 1000), (1, 1))}, [s]))


def test_strided_copies_are_bounded_by_the_file_size():
  n = 300_000
  s = _Storage("0", np.zeros(n, np.float32))  # 1.2 MB of real data
  obj = {f"t{i}": _strided(s, (1000, n // 1000), (1, 1000)) for i in range(10)}  # 10 transposes
  with pytest.raises(torchfile.TorchFileError, match="bytes of copies"):
    torchfile.load(_zip_bytes(obj, [s]))
  # a couple of transposed views of one storage are fine
  ok = torchfile.load(_zip_bytes({k: obj[k] for k in ("t0", "t1")}, [s]))
  assert ok["t0"].shape == (1000, 300)


def test_contiguous_tensors_are_views_not_copies():
  a = np.arange(12, dtype=np.float32)
  s = _Storage("0", a)
  out = torchfile.load(_zip_bytes({"x": _tensor(s, (3, 4)),
                                   "y": _strided(s, (2, 2), (2, 1), offset=8)}, [s]))
  np.testing.assert_array_equal(out["x"], a.reshape(3, 4))
  np.testing.assert_array_equal(out["y"], [[8, 9], [10, 11]])
  assert np.shares_memory(out["x"], out["y"]) and out["x"].flags.writeable


@pytest.mark.parametrize("bad", [
    ((2, 2), (1,), 0),          # stride/size rank mismatch
    ((2, -2), (1, 1), 0),       # negative size
    ((2, 2), (1, 1), -1),       # negative offset
    ((2, 2), ("a", 1), 0),      # non-integer stride
])
def test_malformed_tensor_records(bad):
  size, stride, offset = bad
  s = _Storage("0", np.ones(8, np.float32))
  with pytest.raises(torchfile.TorchFileError):
    torchfile.load(_zip_bytes({"w": _strided(s, size, stride, offset)}, [s]))


def test_numpy_reconstruct_with_a_huge_shape():
  rec = _Call(_global("numpy.core.multiarray", "_reconstruct"), _global("numpy", "ndarray"),
              HUGE, b"b")
  with pytest.raises(torchfile.TorchFileError, match="initial shape"):
    torchfile.load_pickle(_pickle(rec))


def test_numpy_arrays_still_load():
  a = np.arange(6, dtype=np.float32).reshape(2, 3)
  out = torchfile.load_pickle(pickle.dumps({"a": a, "s": np.float32(2.5)}, protocol=2))
  np.testing.assert_array_equal(out["a"], a)
  assert out["s"] == np.float32(2.5)
  with pytest.raises(torchfile.UnsafePickleError, match="object"):
    torchfile.load_pickle(pickle.dumps(np.array([1, "x"], dtype=object), protocol=2))


def test_numpy_scalar_with_an_integer_payload():
  dt = _Call(_global("numpy", "dtype"), "f4", False, True)
  rec = _Call(_global("numpy.core.multiarray", "scalar"), dt, 10**12)
  with pytest.raises(torchfile.TorchFileError, match="scalar"):
    torchfile.load_pickle(_pickle(rec))


def test_tensor_class_cannot_be_constructed_from_file_arguments():
  rec = _Call(_global("torch", "Tensor"), HUGE)
  with pytest.raises(torchfile.UnsafePickleError, match="construct"):
    torchfile.load_pickle(_pickle(rec))


def _patched_zip_bomb():
  """A torch zip whose storage member declares 4e9 bytes from a ~10 KB deflate stream."""
  zeros = np.zeros(2_500_000, np.float32)  # 10 MB, compresses ~1000:1
  s = _Storage("0", zeros)
  f = io.BytesIO()
  buf = io.BytesIO()
  float_storage = _global("torch", "FloatStorage")
  _Pickler(buf, lambda st: ("storage", float_storage, st.key, "cpu", 1_000_000_000)).dump(
      {"w": _tensor(s, (1_000_000_000,))})
  with zipfile.ZipFile(f, "w") as zf:
    zf.writestr("archive/data.pkl", buf.getvalue())
    zf.writestr(zipfile.ZipInfo("archive/data/0"), zeros.tobytes(), zipfile.ZIP_DEFLATED, 9)
  data = bytearray(f.getvalue())
  declared = struct.pack("<I", 4_000_000_000)
  # the member's local header (uncompressed size at +22) and central record (+24)
  local = [i for i in range(len(data)) if data[i:i + 4] == b"PK\x03\x04"][1]
  data[local + 22:local + 26] = declared
  central = [i for i in range(len(data)) if data[i:i + 4] == b"PK\x01\x02"][1]
  data[central + 24:central + 28] = declared
  return bytes(data)


def test_zip_bomb_is_refused_before_decompressing():
  data = _patched_zip_bomb()
  assert len(data) < 100_000
  with pytest.raises(torchfile.TorchFileError, match="zip bomb"):
    torchfile.load(data)
  assert _peak_bytes(lambda: torchfile.load(data)) < 2_000_000


def test_streaming_a_path_has_no_read_then_copy_peak(tmp_path):
  a = np.random.default_rng(0).standard_normal(2_000_000).astype(np.float32)  # 8 MB
  s = _Storage("0", a)
  path = tmp_path / "big.pt"
  path.write_bytes(_zip_bytes({"w": _tensor(s, (2000, 1000))}, [s]))
  peak = _peak_bytes(lambda: torchfile.load(path))
  assert peak < 1.4 * a.nbytes, f"peak {peak / a.nbytes:.2f}x the tensor bytes"
  np.testing.assert_array_equal(torchfile.load(path)["w"].ravel(), a)
  legacy = tmp_path / "big_legacy.pt"
  legacy.write_bytes(_legacy_bytes({"w": _tensor(s, (2000, 1000))}, [s]))
  assert _peak_bytes(lambda: torchfile.load(legacy)) < 1.4 * a.nbytes


def _nested_lists(depth):
  return b"\x80\x02" + b"]" * depth + b"a" * (depth - 1) + b"."


def test_deep_nesting_is_a_loader_error():
  head = b"".join(pickle.dumps(h, protocol=2) for h in
                  (0x1950A86A20F9469CFC6C, 1001, {"little_endian": True}))
  data = head + _nested_lists(200_000) + pickle.dumps([], protocol=2)
  with pytest.raises(torchfile.TorchFileError, match="nested too deeply"):
    torchfile.load(data)


def test_shared_children_are_walked_once():
  """A tuple DAG that is 2**40 nodes as a tree must not be expanded."""
  head = b"".join(pickle.dumps(h, protocol=2) for h in
                  (0x1950A86A20F9469CFC6C, 1001, {"little_endian": True}))
  body = b"\x80\x02N"  # None
  for i in range(40):  # t_{i+1} = (t_i, t_i) via memo
    body += b"q" + bytes([0]) + b"h" + bytes([0]) + b"\x86"  # BINPUT 0, BINGET 0, TUPLE2
  body += b"."
  out = torchfile.load(head + body + pickle.dumps([], protocol=2))
  depth = 0
  while isinstance(out, tuple):
    out, depth = out[0], depth + 1
  assert depth == 40


def test_public_loaders_answer_with_their_own_error(tmp_path):
  import jaxinv
  s = _Storage("0", np.ones(1, np.float32))
  path = tmp_path / "evil.pt"
  path.write_bytes(_zip_bytes({"state_dict": {"encoder.w": _strided(s, HUGE, (0, 0))}}, [s]))
  with pytest.raises(ValueError, match="storage"):
    jaxinv.load_encoder(path)
  with pytest.raises(ValueError, match="storage"):
    jaxinv.load_generator(path, init_kwargs={"z_dim": 8})
