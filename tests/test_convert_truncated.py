"""A truncated native .npz (or torch zip) is diagnosed as truncated, by every loader."""
import numpy as np
import pytest

from jaxinv.convert import common


@pytest.fixture
def truncated(tmp_path):
  path = tmp_path / "gen.npz"
  common.save_native(path, "eg3d", {"z_dim": 4},
                     {"params": {"w": np.ones((64, 64), np.float32), "b": np.zeros(3)}})
  data = path.read_bytes()
  path.write_bytes(data[: len(data) * 2 // 3])
  return path


def test_eg3d_load_says_truncated(truncated):
  from jaxinv.convert import eg3d
  with pytest.raises(ValueError, match="truncated") as e:
    eg3d.load(truncated)
  assert "init_kwargs" not in str(e.value)
  with pytest.raises(ValueError, match="truncated"):
    eg3d.load(truncated, init_kwargs={"z_dim": 4})


def test_other_loaders_say_truncated(truncated):
  import jaxinv
  from jaxinv.convert import goae
  with pytest.raises(ValueError, match="truncated"):
    jaxinv.load_generator(truncated)
  with pytest.raises(ValueError, match="truncated"):
    jaxinv.load_encoder(truncated)
  with pytest.raises(ValueError, match="truncated"):
    goae.load_any(truncated, goae.ENCODER_KIND)


def test_intact_and_non_zip_files_pass_the_check(tmp_path, truncated):
  ok = tmp_path / "ok.npz"
  common.save_native(ok, "demo", {}, {"a": np.zeros(2)})
  common.check_zip_intact(ok)
  assert common.is_native(ok)
  other = tmp_path / "x.pkl"
  other.write_bytes(b"\x80\x02}q\x00.")
  common.check_zip_intact(other)
  assert not common.is_native(other)
