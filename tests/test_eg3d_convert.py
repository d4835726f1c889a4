"""EG3D checkpoint loading: pickle / .pt / .npz / native agree bit for bit; unsafe or broken files are refused."""
import functools
import io
import os
import pickle

import numpy as np
import pytest

from conftest import eg3d_fixture, fixture_dir
from jaxinv.convert import eg3d as eg3d_convert
from jaxinv.convert import torchfile
from jaxinv.convert.common import flatten_tree


def _flat(G):
  return {k: np.asarray(v) for k, v in flatten_tree(G.params).items()}


def _assert_identical(a, b):
  fa, fb = _flat(a), _flat(b)
  assert list(fa) == list(fb)
  for k in fa:
    assert fa[k].dtype == fb[k].dtype and np.array_equal(fa[k], fb[k]), k


@functools.lru_cache(maxsize=None)
def tiny_kwargs():
  cfg, _, _ = eg3d_fixture("tiny")
  return dict(cfg["constructor_kwargs"], neural_rendering_resolution=cfg["neural_rendering_resolution"])


@functools.lru_cache(maxsize=None)
def from_npz():
  _, sd, _ = eg3d_fixture("tiny")
  return eg3d_convert.from_state_dict(sd, tiny_kwargs())


def test_all_loaders_give_bit_identical_params(tmp_path):
  d = fixture_dir("eg3d/tiny")
  g_npz = from_npz()
  g_pkl = eg3d_convert.from_pickle(d / "legacy.pkl")
  g_pt = eg3d_convert.load(d / "state_dict.pt", tiny_kwargs())
  g_npz2 = eg3d_convert.load(d / "state_dict.npz", tiny_kwargs())
  for g in (g_pkl, g_pt, g_npz2):
    _assert_identical(g_npz, g)
  assert g_pkl.config == g_npz.config  # init kwargs + neural_rendering_resolution read from the pickle
  out = tmp_path / "tiny.jaxinv.npz"
  eg3d_convert.convert_file(d / "legacy.pkl", out)
  g_native = eg3d_convert.load(out)
  _assert_identical(g_npz, g_native)
  assert g_native.config == g_npz.config


def test_every_source_tensor_is_used_and_layouts():
  cfg, sd, _ = eg3d_fixture("tiny")
  g = from_npz()
  p = g.params["params"]
  w = sd["backbone.synthesis.b8.conv0.weight"]  # [O, I, 3, 3]
  np.testing.assert_array_equal(p["backbone"]["synthesis"]["b8"]["conv0"]["weight"], w.transpose(2, 3, 1, 0))
  np.testing.assert_array_equal(p["decoder"]["net_2"]["weight"], sd["decoder.net.2.weight"].T)
  np.testing.assert_array_equal(p["backbone"]["synthesis"]["b4"]["const"],
                                sd["backbone.synthesis.b4.const"].transpose(1, 2, 0))
  n_filters = sum(k.endswith("resample_filter") for k in sd)
  assert len(_flat(g)) == len(sd) - n_filters == cfg["state_dict_num_tensors"] - n_filters


def test_mismatch_errors_name_key_and_shapes():
  _, sd, _ = eg3d_fixture("tiny")
  bad = dict(sd)
  bad["backbone.synthesis.b8.conv1.weight"] = np.zeros((64, 64, 1, 1), np.float32)
  with pytest.raises(ValueError, match=r"b8\.conv1\.weight.*\(64, 64, 1, 1\).*\(64, 64, 3, 3\)"):
    eg3d_convert.from_state_dict(bad, tiny_kwargs())
  extra = dict(sd, **{"backbone.mystery": np.zeros(3, np.float32)})
  with pytest.raises(ValueError, match="backbone.mystery"):
    eg3d_convert.from_state_dict(extra, tiny_kwargs())
  missing = {k: v for k, v in sd.items() if k != "decoder.net.0.bias"}
  with pytest.raises(ValueError, match="decoder.net.0.bias"):
    eg3d_convert.from_state_dict(missing, tiny_kwargs())
  filt = dict(sd)
  filt["backbone.synthesis.b8.resample_filter"] = np.ones((4, 4), np.float32)
  with pytest.raises(ValueError, match="standard"):
    eg3d_convert.from_state_dict(filt, tiny_kwargs())


class _Evil:
  def __reduce__(self):
    return (os.system, ("echo pwned > /tmp/jaxinv_pwned",))


def test_pickle_that_runs_a_shell_command_is_refused(tmp_path):
  path = tmp_path / "evil.pkl"
  path.write_bytes(pickle.dumps({"G_ema": _Evil()}))
  if os.path.exists("/tmp/jaxinv_pwned"):
    os.remove("/tmp/jaxinv_pwned")
  with pytest.raises(torchfile.UnsafePickleError, match="system"):
    eg3d_convert.from_pickle(path)
  assert not os.path.exists("/tmp/jaxinv_pwned")


def test_pickle_without_G_ema_and_corrupt_files(tmp_path):
  p = tmp_path / "noG.pkl"
  p.write_bytes(pickle.dumps({"G": 1, "D": None}))
  with pytest.raises(ValueError, match="G_ema"):
    eg3d_convert.from_pickle(p)
  data = (fixture_dir("eg3d/tiny") / "legacy.pkl").read_bytes()
  t = tmp_path / "trunc.pkl"
  t.write_bytes(data[: len(data) // 3])
  with pytest.raises((ValueError, torchfile.TorchFileError)):
    eg3d_convert.from_pickle(t)
  g = tmp_path / "garbage.pkl"
  g.write_bytes(b"\x80\x04this is not a pickle at all")
  with pytest.raises((ValueError, torchfile.TorchFileError)):
    eg3d_convert.from_pickle(g)
  pt = (fixture_dir("eg3d/tiny") / "state_dict.pt").read_bytes()
  tp = tmp_path / "trunc.pt"
  tp.write_bytes(pt[: len(pt) // 2])
  with pytest.raises((ValueError, torchfile.TorchFileError)):
    eg3d_convert.load(tp, tiny_kwargs())
  with pytest.raises(ValueError, match="init_kwargs"):
    eg3d_convert.load(fixture_dir("eg3d/tiny") / "state_dict.npz")
  with pytest.raises(FileNotFoundError):
    eg3d_convert.load(tmp_path / "absent.pkl")


def test_cli_convert_and_load_generator(tmp_path):
  from jaxinv.cli import main
  import jaxinv
  out = tmp_path / "g.npz"
  assert main(["convert", "eg3d", str(fixture_dir("eg3d/tiny") / "legacy.pkl"), str(out)]) == 0
  G = jaxinv.load_generator(str(out))
  _assert_identical(from_npz(), G)
  G2 = jaxinv.load_generator(str(fixture_dir("eg3d/tiny") / "legacy.pkl"))
  _assert_identical(from_npz(), G2)
