"""IR-SE blocks and the ArcFace IR-SE-50 backbone against fixtures/ir_se50 (pSp model_irse.py)."""
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from conftest import assert_encoder_close, encoder_fixture, nchw_to_nhwc
from jaxinv.convert import irse as cirse
from jaxinv.convert.common import KeyTracker
from jaxinv.nn.irse import (BottleneckIRSE, IRSEBody, IRSEInputLayer, irse50_units, irse_units,
                            irse_units_for_depth)


@functools.lru_cache(maxsize=None)
def _arcface():
  cfg, sd, io = encoder_fixture("ir_se50")
  model, variables = cirse.load_arcface(sd)
  fwd = jax.jit(lambda v, x: model.apply(v, x, return_prenorm=True))
  return sd, io, model, variables, fwd


def _sub(variables, name):
  return {c: variables[c][name] for c in ("params", "batch_stats")}


def test_unit_lists():
  u = irse50_units()
  assert len(u) == 24
  assert [x.depth for x in u] == [64] * 3 + [128] * 4 + [256] * 14 + [512] * 3
  assert [i for i, x in enumerate(u) if x.stride == 2] == [0, 3, 7, 21]
  assert [i for i, x in enumerate(u) if x.in_ch != x.depth] == [3, 7, 21]
  afa = irse_units(((64, 3), (128, 3), (256, 3)))
  assert [i for i, x in enumerate(afa) if x.in_ch != x.depth] == [3, 6]
  assert len(irse_units_for_depth(100)) == 49
  with pytest.raises(ValueError, match="num_layers"):
    irse_units_for_depth(34)


def test_bottleneck_shapes_and_shortcut_kinds():
  x = jnp.ones((1, 9, 9, 16))
  v_same = BottleneckIRSE(16, 2).init(jax.random.PRNGKey(0), x)
  assert "shortcut_conv" not in v_same["params"]
  assert BottleneckIRSE(16, 2).apply(v_same, x).shape == (1, 5, 5, 16)  # ceil(9/2), like torch
  v_conv = BottleneckIRSE(32, 2).init(jax.random.PRNGKey(0), x)
  assert v_conv["params"]["shortcut_conv"]["kernel"].shape == (1, 1, 16, 32)
  assert set(v_conv["batch_stats"]) == {"bn1", "bn2", "shortcut_bn"}


@pytest.mark.slow
def test_body_features_match_fixture():
  sd, io, model, variables, _ = _arcface()
  x = jnp.asarray(nchw_to_nhwc(io["x"]))

  @jax.jit
  def feats(v, x):
    h = IRSEInputLayer().apply(_sub(v, "input_layer"), x)
    return IRSEBody(irse50_units()).apply(_sub(v, "body"), h, return_indices=(2, 6, 20, -1))

  for i, f in zip((2, 6, 20, 23), feats(variables, x)):
    assert_encoder_close(f, nchw_to_nhwc(io[f"feat_body{i}"]), f"feat_body{i}")


@pytest.mark.slow
def test_embedding_matches_fixture():
  sd, io, model, variables, fwd = _arcface()
  emb, pre = fwd(variables, jnp.asarray(nchw_to_nhwc(io["x"])))
  assert_encoder_close(emb, io["embedding"], "embedding")
  assert_encoder_close(pre, io["embedding_prenorm"], "embedding_prenorm")
  np.testing.assert_allclose(np.linalg.norm(emb, axis=1), 1.0, atol=1e-6)


@pytest.mark.slow
def test_batch_size_independent():
  sd, io, model, variables, fwd = _arcface()
  x = jnp.asarray(nchw_to_nhwc(io["x"]))
  one, _ = fwd(variables, x[1:])
  both, _ = fwd(variables, x)
  np.testing.assert_allclose(one[0], both[1], atol=2e-6)


def test_return_indices_validated():
  body = IRSEBody(irse_units(((32, 2),), in_ch=32))
  x = jnp.ones((1, 8, 8, 32))
  v = body.init(jax.random.PRNGKey(0), x)
  a, b = body.apply(v, x, return_indices=(0, -1))
  assert a.shape == (1, 4, 4, 32) and b.shape == (1, 4, 4, 32)
  with pytest.raises(ValueError, match="out of range"):
    body.apply(v, x, return_indices=(2,))
  with pytest.raises(ValueError, match="channels"):
    body.apply(v, jnp.ones((1, 8, 8, 3)))


def test_unit_converter_matches_module_tree():
  """A hand-made upstream-named unit converts to exactly the tree the module initialises."""
  unit = irse_units(((32, 1),), in_ch=16)[0]
  rng = np.random.default_rng(0)
  sd = {}
  for k, s in [("shortcut_layer.0.weight", (32, 16, 1, 1)), ("res_layer.1.weight", (32, 16, 3, 3)),
               ("res_layer.2.weight", (32,)), ("res_layer.3.weight", (32, 32, 3, 3)),
               ("res_layer.5.fc1.weight", (2, 32, 1, 1)), ("res_layer.5.fc2.weight", (32, 2, 1, 1))]:
    sd[f"enc.body.0.{k}"] = rng.standard_normal(s).astype(np.float32)
  for bn, c in (("shortcut_layer.1", 32), ("res_layer.0", 16), ("res_layer.4", 32)):
    for p in ("weight", "bias", "running_mean"):
      sd[f"enc.body.0.{bn}.{p}"] = rng.standard_normal(c).astype(np.float32)
    sd[f"enc.body.0.{bn}.running_var"] = rng.uniform(0.5, 2, c).astype(np.float32)
    sd[f"enc.body.0.{bn}.num_batches_tracked"] = np.array(3)
  t = KeyTracker(sd, "unit")
  v = cirse.convert_irse_body(t, "enc.", (unit,))
  t.finish()
  x = jnp.asarray(rng.standard_normal((1, 6, 6, 16)).astype(np.float32))
  template = IRSEBody((unit,)).init(jax.random.PRNGKey(0), x)
  from jaxinv.convert.common import check_tree_matches
  check_tree_matches(template, v, "unit")
  y = IRSEBody((unit,)).apply(v, x)
  # Independent numpy forward of the same unit for the conv shortcut path.
  def bn(a, key):
    g = lambda p: sd[f"enc.body.0.{key}.{p}"]
    return (a - g("running_mean")) / np.sqrt(g("running_var") + 1e-5) * g("weight") + g("bias")
  def conv(a, w, stride, pad):
    out = jax.lax.conv_general_dilated(a, jnp.asarray(w), (stride, stride), [(pad, pad)] * 2,
                                       dimension_numbers=("NHWC", "OIHW", "NHWC"),
                                       precision=jax.lax.Precision.HIGHEST)
    return np.asarray(out)
  xn = np.asarray(x)
  sc = bn(conv(xn, sd["enc.body.0.shortcut_layer.0.weight"], 2, 0), "shortcut_layer.1")
  r = conv(bn(xn, "res_layer.0"), sd["enc.body.0.res_layer.1.weight"], 1, 1)
  r = np.where(r >= 0, r, sd["enc.body.0.res_layer.2.weight"] * r)
  r = bn(conv(r, sd["enc.body.0.res_layer.3.weight"], 2, 1), "res_layer.4")
  s = r.mean(axis=(1, 2))
  s = np.maximum(s @ sd["enc.body.0.res_layer.5.fc1.weight"][:, :, 0, 0].T, 0)
  s = 1 / (1 + np.exp(-(s @ sd["enc.body.0.res_layer.5.fc2.weight"][:, :, 0, 0].T)))
  assert_encoder_close(y, r * s[:, None, None, :] + sc, "unit vs numpy")


def test_converter_errors_name_the_problem():
  sd, *_ = _arcface()
  missing = dict(sd)
  del missing["body.5.res_layer.3.weight"]
  with pytest.raises(ValueError, match="body.5.res_layer.3.weight"):
    cirse.convert_arcface(missing)
  extra = dict(sd, **{"body.24.res_layer.0.weight": np.zeros(512, np.float32)})
  with pytest.raises(ValueError, match="body.24"):
    cirse.convert_arcface(extra)
  with pytest.raises(ValueError, match="not an IR-SE Backbone"):
    cirse.convert_arcface({"net.slice1.0.weight": np.zeros((64, 3, 11, 11), np.float32)})
  wrapped = {f"module.{k}": v for k, v in sd.items()}
  assert cirse.convert_arcface(wrapped)["params"]["body"]["unit_0"]["conv1"]["kernel"].shape == (3, 3, 64, 64)


def test_arcface_file_roundtrip(tmp_path):
  """model_ir_se50.pth (a plain state dict) -> native file -> same variables."""
  from jaxinv.convert.torchfile import save_state_dict
  sd, io, model, variables, fwd = _arcface()
  save_state_dict(tmp_path / "ir.pth", {k: np.asarray(a) for k, a in sd.items()})
  cirse.convert_file(tmp_path / "ir.pth", tmp_path / "ir.npz")
  _, v2 = cirse.load_native_arcface(tmp_path / "ir.npz")
  for a, b in zip(jax.tree_util.tree_leaves(variables), jax.tree_util.tree_leaves(v2)):
    np.testing.assert_array_equal(a, b)
