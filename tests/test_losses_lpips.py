"""LPIPS v0.1 (alex, vgg) against fixtures/lpips_{alex,vgg} (lpips==0.1.4), converters, gradients."""
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from conftest import assert_encoder_close, encoder_fixture, nchw_to_nhwc
from jaxinv.convert import lpips as clp
from jaxinv.convert import reference
from jaxinv.losses import lpips as lp

n2 = nchw_to_nhwc


@functools.lru_cache(maxsize=None)
def _setup(net):
  cfg, sd, io = encoder_fixture(f"lpips_{net}")
  v = clp.convert_lpips_module(sd, net)
  m = lp.LPIPS(net)
  full = jax.jit(lambda v, a, b: m.apply(v, a, b, True))
  diffs = jax.jit(lambda v, a, b: m.apply(v, a, b, method=lp.LPIPS.diffs))
  feats = jax.jit(lambda v, a: m.apply(v, a, method=lp.LPIPS.features))
  return sd, io, v, full, diffs, feats


@pytest.mark.parametrize("net", ["alex", pytest.param("vgg", marks=pytest.mark.slow)])
def test_matches_fixture(net):
  sd, io, v, full, diffs, feats = _setup(net)
  d, extra = full(v, n2(io["in0"]), n2(io["in1"]))
  assert_encoder_close(d, io["distance"].reshape(-1), "distance")
  for k in range(5):
    assert_encoder_close(extra["layer_distance"][:, k], io[f"layer_distance{k}"].reshape(-1),
                         f"layer_distance{k}")
    assert_encoder_close(extra["lin_map"][k], io[f"lin_map{k}"][:, 0], f"lin_map{k}")
  assert_encoder_close(jnp.mean(d), io["psp_criteria_loss"], "psp_criteria_loss")
  a, b = n2(io["small_in0"]), n2(io["small_in1"])
  assert_encoder_close(lp.scale_input(a), n2(io["small_scaled_in0"]), "small_scaled_in0")
  for k, (dk, fk) in enumerate(zip(diffs(v, a, b), feats(v, a))):
    assert_encoder_close(dk, n2(io[f"small_diff{k}"]), f"small_diff{k}")
    assert_encoder_close(fk, n2(io[f"small_feat0_{k}"]), f"small_feat0_{k}")
  ds, es = full(v, a, b)
  assert_encoder_close(ds, io["small_distance"].reshape(-1), "small_distance")
  for k in range(5):
    assert_encoder_close(es["layer_distance"][:, k], io[f"small_layer_distance{k}"].reshape(-1),
                         f"small_layer_distance{k}")


def test_reference_kind_and_batch_independence():
  sd, io, v, full, *_ = _setup("alex")
  f = reference.load("lpips_alex", sd)
  a, b = n2(io["in0"]), n2(io["in1"])
  both = f(a, b)
  assert both.shape == (2,)
  assert_encoder_close(both, io["distance"].reshape(-1), "distance")
  np.testing.assert_allclose(f(a[1:], b[1:])[0], both[1], rtol=1e-5)
  np.testing.assert_allclose(f(a, a), 0.0, atol=1e-7)


def test_precomputed_reference_taps_give_the_same_distance():
  # The optimisation baselines compute a fixed image's taps once (``normalized_features``) and
  # compare every step's image against them (``distance_between``): same value as the pair call.
  sd, io, v, full, *_ = _setup("alex")
  m = lp.LPIPS("alex")
  a, b = n2(io["in0"]), n2(io["in1"])
  na = m.apply(v, a, method=lp.LPIPS.normalized_features)
  nb = m.apply(v, b, method=lp.LPIPS.normalized_features)
  d = m.apply(v, na, nb, method=lp.LPIPS.distance_between)
  np.testing.assert_allclose(d, full(v, a, b)[0], rtol=1e-5, atol=1e-7)
  assert_encoder_close(d, io["distance"].reshape(-1), "distance")


def test_gradient_matches_finite_differences():
  sd, io, v, *_ = _setup("alex")
  rng = np.random.default_rng(0)
  a = jnp.asarray(n2(io["small_in0"])[:1])
  b = jnp.asarray(n2(io["small_in1"])[:1])
  with jax.enable_x64(True):
    v64 = jax.tree_util.tree_map(lambda t: jnp.asarray(t, jnp.float64), v)
    a64, b64 = jnp.asarray(a, jnp.float64), jnp.asarray(b, jnp.float64)
    loss = jax.jit(lambda x: lp.lpips_loss(v64, x, b64, "alex"))
    g = jax.jit(jax.grad(lambda x: lp.lpips_loss(v64, x, b64, "alex")))(a64)
    assert np.all(np.isfinite(g)) and float(jnp.abs(g).max()) > 0
    d = jnp.asarray(rng.standard_normal(a.shape))
    eps = 1e-6
    fd = (loss(a64 + eps * d) - loss(a64 - eps * d)) / (2 * eps)
    np.testing.assert_allclose(float(jnp.vdot(g, d)), float(fd), rtol=1e-5)
  # All-zero ReLU vectors (a constant black image) still give finite gradients.
  black = -jnp.ones((1, 64, 64, 3))
  gb = jax.jit(jax.grad(lambda x: lp.lpips_loss(v, x, black, "alex")))(black)
  assert np.all(np.isfinite(gb))


def _fake_torchvision(net, rng):
  sd = {}
  for c in lp.trunk_convs(net):
    sd[f"features.{c.index}.weight"] = rng.standard_normal((c.out_ch, c.in_ch, c.kernel, c.kernel)).astype(np.float32)
    sd[f"features.{c.index}.bias"] = rng.standard_normal(c.out_ch).astype(np.float32)
  sd["classifier.1.weight"] = np.zeros((4, 9216), np.float32)
  return sd


def test_published_file_layout_converts_like_module_dict():
  """torchvision trunk + lpips heads (the files users have) == the module's own state dict."""
  sd, io, v, *_ = _setup("alex")
  trunk = {f"features.{k.split('.')[2]}.{k.split('.')[3]}": a for k, a in sd.items()
           if k.startswith("net.slice")}
  trunk["classifier.6.bias"] = np.zeros(1000, np.float32)
  lins = {k: a for k, a in sd.items() if k.startswith("lin") and not k.startswith("lins")}
  v2 = clp.convert_lpips_files(trunk, lins, "alex")
  for p, q in zip(jax.tree_util.tree_leaves(v), jax.tree_util.tree_leaves(v2)):
    np.testing.assert_array_equal(p, q)


def test_files_roundtrip_through_torchfile(tmp_path):
  """The .pth readers: the published layouts written in torch's zip format (no torch needed)."""
  from jaxinv.convert.torchfile import save_state_dict
  rng = np.random.default_rng(0)
  trunk = _fake_torchvision("alex", rng)
  lins = {f"lin{k}.model.1.weight": rng.standard_normal((1, c, 1, 1)).astype(np.float32)
          for k, c in enumerate(lp.tap_channels("alex"))}
  save_state_dict(tmp_path / "alexnet-owt.pth", trunk)
  save_state_dict(tmp_path / "alex.pth", lins)
  v = clp.convert_files(tmp_path / "alexnet-owt.pth", tmp_path / "alex.pth", "alex")
  np.testing.assert_array_equal(v["params"]["lin2"], lins["lin2.model.1.weight"].reshape(-1))
  np.testing.assert_array_equal(v["params"]["trunk"]["features_3"]["kernel"],
                                trunk["features.3.weight"].transpose(2, 3, 1, 0))


def test_bad_input_and_wrong_checkpoints():
  sd, io, v, *_ = _setup("alex")
  x = jnp.zeros((1, 64, 64, 3))
  with pytest.raises(ValueError, match="channels-first"):
    lp.lpips_distance(v, jnp.zeros((1, 3, 64, 64)), jnp.zeros((1, 3, 64, 64)))
  with pytest.raises(ValueError, match=r"\[-1, 1\]"):
    lp.lpips_distance(v, x + 255.0, x)
  with pytest.raises(ValueError, match="at least"):
    lp.lpips_distance(v, jnp.zeros((1, 16, 16, 3)), jnp.zeros((1, 16, 16, 3)))
  with pytest.raises(ValueError, match="net must be"):
    lp.lpips_distance(v, x, x, net="squeeze")
  with pytest.raises(ValueError, match="vgg trunk"):
    clp.convert_lpips_files(_fake_torchvision("vgg", np.random.default_rng(0)), {}, "alex")
  missing = {k: a for k, a in sd.items() if k != "lin3.model.1.weight"}
  with pytest.raises(ValueError, match="lin3.model.1.weight"):
    clp.convert_lpips_module(missing, "alex")
  with pytest.raises(ValueError, match="not an lpips.LPIPS"):
    clp.convert_lpips_module({"input_layer.0.weight": np.zeros((64, 3, 3, 3))}, "alex")
  bad_scale = dict(sd, **{"scaling_layer.scale": np.ones((1, 3, 1, 1), np.float32)})
  with pytest.raises(ValueError, match="scaling_layer.scale"):
    clp.convert_lpips_module(bad_scale, "alex")


def test_cli_converts_published_files(tmp_path):
  from jaxinv.cli import main
  from jaxinv.convert.torchfile import save_state_dict
  rng = np.random.default_rng(0)
  trunk = _fake_torchvision("alex", rng)
  lins = {f"lin{k}.model.1.weight": rng.standard_normal((1, c, 1, 1)).astype(np.float32)
          for k, c in enumerate(lp.tap_channels("alex"))}
  save_state_dict(tmp_path / "alexnet-owt.pth", trunk)
  save_state_dict(tmp_path / "alex.pth", lins)
  out = tmp_path / "lpips_alex.npz"
  rc = main(["convert", "lpips-alex", str(tmp_path / "alexnet-owt.pth"), str(out),
             "--heads", str(tmp_path / "alex.pth")])
  assert rc in (0, None)
  net, v = clp.load_native_lpips(out)
  assert net == "alex"
  np.testing.assert_array_equal(v["params"]["lin4"], lins["lin4.model.1.weight"].reshape(-1))
  # A VGG trunk passed as alex is refused with a message, not a traceback.
  save_state_dict(tmp_path / "vgg16.pth", _fake_torchvision("vgg", rng))
  assert main(["convert", "lpips-alex", str(tmp_path / "vgg16.pth"), str(tmp_path / "o2.npz"),
               "--heads", str(tmp_path / "alex.pth")]) == 1
  # an existing output is never replaced without --overwrite
  assert main(["convert", "lpips-alex", str(tmp_path / "alexnet-owt.pth"), str(out),
               "--heads", str(tmp_path / "alex.pth")]) == 1
