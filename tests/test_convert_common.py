"""The safe PyTorch-file reader and the shared converter bookkeeping."""
import collections
import io
import os
import pickle
import struct
import zipfile

import numpy as np
import pytest

from jaxinv.convert import common, torchfile
from conftest import fixture_dir


class _FakeGlobal:
  """Pickles as a reference to ``module.name`` without that module existing here."""

  def __init__(self, module, name):
    self.module, self.name = module, name

  def __call__(self, *args):  # pickle only accepts callables as reduce functions
    raise AssertionError("never called")


class _Pickler(pickle._Pickler):
  """Writes torch-shaped pickles without torch: storages as persistent ids, globals by name."""

  dispatch = pickle._Pickler.dispatch.copy()

  def _save_fake_global(self, obj):
    self.write(pickle.GLOBAL + f"{obj.module}\n{obj.name}\n".encode())
    self.memoize(obj)

  dispatch[_FakeGlobal] = _save_fake_global

  def __init__(self, f, storage_pid=None):
    super().__init__(f, protocol=2)
    self._storage_pid = storage_pid

  def persistent_id(self, obj):
    if self._storage_pid is not None and isinstance(obj, _Storage):
      return self._storage_pid(obj)
    return None

  def reducer_override(self, obj):
    if isinstance(obj, _Call):
      return obj.fn, obj.args
    return NotImplemented


class _Call:

  def __init__(self, fn, *args):
    self.fn, self.args = fn, args


class _Storage:

  def __init__(self, key, data):
    self.key, self.data = key, data


def _global(module, name):
  return _FakeGlobal(module, name)


def _tensor(storage, shape):
  stride = tuple(int(np.prod(shape[i + 1:])) for i in range(len(shape)))
  return _Call(_global("torch._utils", "_rebuild_tensor_v2"), storage, 0, tuple(shape), stride,
               False, collections.OrderedDict())


def _legacy_bytes(obj, storages):
  """A legacy (non-zip) torch stream: magic, protocol, sys info, object, keys, raw storages."""
  f = io.BytesIO()
  for header in (0x1950A86A20F9469CFC6C, 1001, {"little_endian": True}):
    pickle.dump(header, f, protocol=2)
  float_storage = _global("torch", "FloatStorage")
  _Pickler(f, lambda s: ("storage", float_storage, s.key, "cpu", s.data.size, None)).dump(obj)
  pickle.dump([s.key for s in storages], f, protocol=2)
  for s in storages:
    f.write(struct.pack("<q", s.data.size))
    f.write(s.data.astype("<f4").tobytes())
  return f.getvalue()


def _zip_bytes(obj, storages):
  f = io.BytesIO()
  with zipfile.ZipFile(f, "w") as zf:
    buf = io.BytesIO()
    float_storage = _global("torch", "FloatStorage")
    _Pickler(buf, lambda s: ("storage", float_storage, s.key, "cpu", s.data.size)).dump(obj)
    zf.writestr("archive/data.pkl", buf.getvalue())
    for s in storages:
      zf.writestr(f"archive/data/{s.key}", s.data.astype("<f4").tobytes())
  return f.getvalue()


def _example():
  a = np.arange(6, dtype=np.float32).reshape(2, 3) / 7
  b = np.array([1.5, -2.0], np.float32)
  sa, sb = _Storage("0", a.ravel()), _Storage("1", b)
  obj = collections.OrderedDict([("layer.weight", _tensor(sa, (2, 3))),
                                 ("layer.bias", _tensor(sb, (2,)))])
  return obj, [sa, sb], {"layer.weight": a, "layer.bias": b}


@pytest.mark.parametrize("fmt", ["legacy", "zip"])
def test_reads_both_container_formats(fmt):
  obj, storages, want = _example()
  data = (_legacy_bytes if fmt == "legacy" else _zip_bytes)(obj, storages)
  sd = torchfile.load_state_dict(data)
  assert list(sd) == list(want)
  for k in want:
    np.testing.assert_array_equal(sd[k], want[k])
    assert sd[k].dtype == np.float32


def test_transposed_view_honours_strides():
  a = np.arange(6, dtype=np.float32)
  s = _Storage("0", a)
  t = _Call(_global("torch._utils", "_rebuild_tensor_v2"), s, 0, (3, 2), (1, 3), False,
            collections.OrderedDict())
  out = torchfile.load(_zip_bytes({"t": t}, [s]))["t"]
  np.testing.assert_array_equal(out, a.reshape(2, 3).T)


def test_refuses_pickle_that_would_run_a_command(tmp_path):
  marker = tmp_path / "pwned"

  class Evil:
    def __reduce__(self):
      return os.system, (f"touch {marker}",)

  data = pickle.dumps({"G_ema": Evil()})
  with pytest.raises(torchfile.UnsafePickleError, match="system"):
    torchfile.load_pickle(data)
  assert not marker.exists()
  # The same payload inside a torch zip container is refused too.
  f = io.BytesIO()
  with zipfile.ZipFile(f, "w") as zf:
    zf.writestr("archive/data.pkl", data)
  with pytest.raises(torchfile.UnsafePickleError):
    torchfile.load(f.getvalue())
  assert not marker.exists()


def test_stubbed_classes_stay_inert():
  obj = pickle.loads(pickle.dumps(1))  # sanity
  data = _Pickler_dump(_Call(_global("training.networks", "Generator"), 1, 2))
  out = torchfile.load_pickle(data, stub_modules=("training",))
  assert isinstance(out, torchfile.Stub) and out.qualname == "training.networks.Generator"
  assert out._args == (1, 2)
  with pytest.raises(torchfile.UnsafePickleError, match="training.networks.Generator"):
    torchfile.load_pickle(data)
  del obj


def _Pickler_dump(obj):
  f = io.BytesIO()
  _Pickler(f).dump(obj)
  return f.getvalue()


def test_corrupt_and_truncated_files_get_clear_errors(tmp_path):
  obj, storages, _ = _example()
  data = _legacy_bytes(obj, storages)
  with pytest.raises(torchfile.TorchFileError, match="truncated|end of file"):
    torchfile.load(data[:-5])
  with pytest.raises(torchfile.TorchFileError):
    torchfile.load(b"this is not a checkpoint at all")
  with pytest.raises(torchfile.TorchFileError, match="empty"):
    torchfile.load(b"")
  zdata = _zip_bytes(obj, storages)
  with pytest.raises(torchfile.TorchFileError):
    torchfile.load(zdata[: len(zdata) // 2])
  with pytest.raises(FileNotFoundError):
    torchfile.load(tmp_path / "missing.pt")


def test_eg3d_fixture_files_read_bit_exact():
  d = fixture_dir("eg3d/tiny")
  sd = torchfile.load_state_dict(d / "state_dict.pt")
  with np.load(d / "state_dict.npz") as ref:
    assert list(sd) == list(ref.files)
    for k in ref.files:
      assert sd[k].dtype == ref[k].dtype and np.array_equal(sd[k], ref[k]), k


def test_key_tracker_reports_missing_unused_and_misshaped():
  t = common.KeyTracker({"a.weight": np.zeros((2, 3)), "a.bias": np.zeros(2),
                         "b.num_batches_tracked": np.zeros(())}, "test dict")
  with pytest.raises(ValueError, match="missing key 'a.wieght'.*a.weight"):
    t.take("a.wieght")
  with pytest.raises(ValueError, match=r"\(2, 3\), expected \(3, 2\)"):
    t.take("a.weight", shape=(3, 2))
  t.take("a.weight", shape=(2, 3))
  t.ignore("num_batches_tracked", suffix=True)
  with pytest.raises(ValueError, match="a.bias"):
    t.finish()
  t.take("a.bias")
  t.finish()


def test_tree_check_and_native_roundtrip(tmp_path):
  params = {"params": {"dense": {"kernel": np.ones((3, 2), np.float32), "bias": np.zeros(2)}}}
  common.check_tree_matches(params, params, "x")
  bad = {"params": {"dense": {"kernel": np.ones((2, 3), np.float32)}}}
  with pytest.raises(ValueError, match=r"missing parameters: params/dense/bias.*\(2, 3\)"):
    common.check_tree_matches(params, bad, "x")
  path = tmp_path / "m.jaxinv"
  common.save_native(path, "demo", {"width": 3, "tup": (1, 2)}, params)
  assert common.is_native(path)
  kind, cfg, loaded = common.load_native(path)
  assert kind == "demo" and cfg == {"width": 3, "tup": [1, 2]}
  np.testing.assert_array_equal(loaded["params"]["dense"]["kernel"], params["params"]["dense"]["kernel"])
  with pytest.raises(ValueError, match="expected 'eg3d'"):
    common.load_native(path, expect_kind="eg3d")
  path.write_bytes(path.read_bytes()[:100])
  with pytest.raises(ValueError, match="corrupt"):
    common.load_native(path)


def test_half_storage_halves_the_bytes_and_loads_float32(tmp_path):
  rng = np.random.default_rng(0)
  params = {"w": rng.normal(size=(64, 64)).astype(np.float32), "step": np.arange(3),
            "d": rng.normal(size=4)}   # float64 and int arrays are kept as they are
  full, half = tmp_path / "full.npz", tmp_path / "half.npz"
  common.save_native(full, "demo", {}, params)
  common.save_native(half, "demo", {}, params, half=True)
  assert half.stat().st_size < 0.6 * full.stat().st_size
  _, _, back = common.load_native(half)
  assert back["w"].dtype == np.float32 and back["d"].dtype == np.float64
  np.testing.assert_array_equal(back["step"], params["step"])
  np.testing.assert_array_equal(back["d"], params["d"])
  np.testing.assert_allclose(back["w"], params["w"], rtol=1e-3, atol=1e-4)
  assert np.any(back["w"] != params["w"])   # it really went through float16
  with pytest.raises(ValueError, match="w: values beyond float16"):
    common.save_native(tmp_path / "big.npz", "demo", {}, {"w": np.full(2, 1e6, np.float32)},
                       half=True)
  # a file whose record lists an array as float16 that is not (tampered or mis-written) is refused
  with np.load(half) as z:
    flat = {k: z[k] for k in z.files}
  import json
  meta = json.loads(bytes(flat["__jaxinv__"]).decode())
  meta["stored_float16"].append("d")
  flat["__jaxinv__"] = np.frombuffer(json.dumps(meta).encode(), np.uint8)
  np.savez(tmp_path / "bad.npz", **flat)
  with pytest.raises(ValueError, match="d is listed as stored in float16"):
    common.load_native(tmp_path / "bad.npz")
