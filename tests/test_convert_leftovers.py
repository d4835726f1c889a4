"""Issue 16 item 9: one implementation of each converter helper, weights passed into jit (not
baked in as constants), and no cached array that a caller could mutate."""
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxinv.convert import common, eg3d, goae, irse, lpips, psp, triplanenet
from jaxinv.ops import interpolate


def test_cached_interpolation_matrix_is_read_only():
  m = interpolate.bilinear_matrix(4, 8, False)
  assert not m.flags.writeable
  with pytest.raises(ValueError):
    m[0, 0] = 5.0
  assert interpolate.bilinear_matrix(4, 8, False)[0, 0] != 5.0


def test_helpers_live_in_one_place():
  assert irse.strip_prefix is common.strip_prefix and goae.strip_prefix is common.strip_prefix
  assert psp.conv_with_bias is common.conv_with_bias is triplanenet.conv_with_bias
  assert psp.jit_apply is common.jit_apply is irse.jit_apply is lpips.jit_apply
  for mod, name in ((eg3d, "_plain"), (goae, "_strip"), (psp, "_conv_with_bias"),
                    (triplanenet, "_conv"), (common, "_jsonable")):
    assert not hasattr(mod, name), f"{mod.__name__}.{name} is back"
  assert common.strip_prefix({"module.a": 1, "module.b": 2}) == {"a": 1, "b": 2}
  assert common.strip_prefix({"module.a": 1, "b": 2}) == {"module.a": 1, "b": 2}
  assert common.strip_prefix({"facenet.a": 1}, ("module.", "facenet.")) == {"a": 1}
  assert common.to_plain({"a": (np.int64(3), [np.float32(0.5)])}) == {"a": [3, [0.5]]}


def test_jit_apply_passes_weights_in():
  model = nn.Dense(256)
  x = jnp.ones((1, 256))
  variables = model.init(jax.random.PRNGKey(0), x)
  f = common.jit_apply(model, variables)
  np.testing.assert_allclose(np.asarray(f(x)), np.asarray(model.apply(variables, x)), rtol=1e-6)
  hlo = f.jitted.lower(f.variables, x).as_text()
  baked = jax.jit(lambda x: model.apply(variables, x)).lower(x).as_text()
  assert len(hlo) < 10_000 < len(baked), (len(hlo), len(baked))


def test_state_dict_writer_round_trip(tmp_path):
  """torchfile.save_state_dict: the torch zip layout the converter tests write instead of torch."""
  import collections
  import zipfile

  from jaxinv.convert import torchfile
  sd = collections.OrderedDict([
      ("w", np.arange(6, dtype=np.float32).reshape(2, 3)), ("t", np.arange(6.0).reshape(2, 3).T),
      ("n", np.array(3, np.int64)), ("h", np.ones(4, np.float16)), ("be", np.arange(3, dtype=">f4")),
      ("m", np.array([True, False]))])
  path = tmp_path / "sd.pth"
  torchfile.save_state_dict(path, {"state_dict": sd, "opts": {"n_styles": 18}})
  with zipfile.ZipFile(path) as zf:
    names = zf.namelist()
    assert "archive/data.pkl" in names and "archive/version" in names
    assert all(i.compress_type == zipfile.ZIP_STORED for i in zf.infolist())
  ck = torchfile.load(path)
  assert ck["opts"] == {"n_styles": 18}
  out = torchfile.load_state_dict(path)
  assert list(out) == list(sd)
  for k, a in sd.items():
    assert out[k].shape == a.shape and out[k].dtype == a.dtype.newbyteorder("<"), k
    np.testing.assert_array_equal(out[k], a)
  with pytest.raises(ValueError, match="dtype"):
    torchfile.save_state_dict(tmp_path / "x.pth", {"c": np.zeros(2, np.complex64)})
