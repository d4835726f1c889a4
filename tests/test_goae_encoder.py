"""GOAE's Swin-V2 latent encoder and AFA against fixtures/{goae_encoder,goae_afa}."""
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from conftest import assert_encoder_close, encoder_fixture, nchw_to_nhwc
from jaxinv.convert import goae as cgoae
from jaxinv.convert import reference
from jaxinv.models.encoders.goae import GOAEncoder, GOAEncoderConfig, CrossAttention
from jaxinv.nn import swin
from jaxinv.nn.swin import SwinV2Config
from _goae_helpers import random_variables, tiny_encoder_config

SWIN_TAPS = ("swin_x_fine", "swin_x_mid", "swin_x_coarse", "swin_x_query", "swin_x_base")


@functools.lru_cache(maxsize=None)
def _encoder_outputs():
  _, sd, io = encoder_fixture("goae_encoder")
  f = reference.load("goae_encoder", sd, features=True)
  return {k: np.asarray(v) for k, v in f(nchw_to_nhwc(io["x"])).items()}


@functools.lru_cache(maxsize=None)
def _afa_outputs():
  _, sd, io = encoder_fixture("goae_afa")
  f = reference.load("goae_afa", sd, features=True)
  args = [nchw_to_nhwc(io[k]) for k in ("img", "rec_img", "feature_map")]
  return {k: np.asarray(v) for k, v in f(*args).items()}


# ----------------------------------------------------------------------------- Swin buffers


def test_swin_buffers_equal_the_checkpoint_buffers():
  """relative_coords_table / relative_position_index / attn_mask recomputed bit-exactly."""
  _, sd, _ = encoder_fixture("goae_encoder")
  cfg = SwinV2Config()
  n = 0
  for i in range(4):
    r = cfg.resolution(i)
    for j in range(cfg.depths[i]):
      k = f"swin_model.layers.{i}.blocks.{j}"
      w, s = swin.block_geometry(r, cfg.window_size, j)
      np.testing.assert_array_equal(
          sd[f"{k}.attn.relative_coords_table"],
          swin.relative_coords_table(w, cfg.pretrained_window_sizes[i])[None])
      np.testing.assert_array_equal(sd[f"{k}.attn.relative_position_index"],
                                    swin.relative_position_index(w))
      assert (f"{k}.attn_mask" in sd) == bool(s)
      if s:
        np.testing.assert_array_equal(sd[f"{k}.attn_mask"], swin.shifted_window_mask(r, w, s))
        n += 1
  assert n == 2  # only stages 0 and 1 (maps larger than the window) shift


def test_block_geometry_follows_resolution():
  assert swin.block_geometry(64, 16, 1) == (16, 8)
  assert swin.block_geometry(64, 16, 2) == (16, 0)
  assert swin.block_geometry(16, 16, 1) == (16, 0)   # map == window: no shift
  assert swin.block_geometry(8, 16, 1) == (8, 0)     # window shrinks to the map


def test_window_partition_roundtrip_and_order():
  x = jnp.arange(2 * 8 * 8 * 3, dtype=jnp.float32).reshape(2, 8, 8, 3)
  w = swin.window_partition(x, 4)
  assert w.shape == (2, 4, 16, 3)
  # Window 1 is the top-right one; its first token is pixel (0, 4).
  np.testing.assert_array_equal(w[:, 1, 0], x[:, 0, 4])
  np.testing.assert_array_equal(swin.window_reverse(w, 4, 8, 8), x)


# -------------------------------------------------------------------------------- parity


@pytest.mark.slow
@pytest.mark.parametrize("name", ("ws", "ws_base") + SWIN_TAPS)
def test_encoder_matches_fixture(name):
  _, _, io = encoder_fixture("goae_encoder")
  assert_encoder_close(_encoder_outputs()[name], io[name], name)


@pytest.mark.slow
def test_encoder_base_rows_are_repeated_and_first_row_has_no_delta():
  out = _encoder_outputs()
  np.testing.assert_array_equal(out["ws_base"], np.broadcast_to(out["ws_base"][:, :1],
                                                                out["ws_base"].shape))
  np.testing.assert_array_equal(out["ws"][:, 0], out["ws_base"][:, 0])


@pytest.mark.slow
@pytest.mark.parametrize("name", ("feature_map_adain", "gamma", "beta", "feat_body8"))
def test_afa_matches_fixture(name):
  _, _, io = encoder_fixture("goae_afa")
  got = _afa_outputs()["feat_body" if name == "feat_body8" else name]
  assert_encoder_close(got, nchw_to_nhwc(io[name]), name)


@pytest.mark.slow
def test_afa_film_identity():
  out = _afa_outputs()
  _, _, io = encoder_fixture("goae_afa")
  fm = nchw_to_nhwc(io["feature_map"])
  np.testing.assert_allclose(out["feature_map_adain"], out["gamma"] * fm + out["beta"],
                             rtol=1e-6, atol=1e-5)


# -------------------------------------------------------------- small, fast property tests


def test_cross_attention_matches_manual_torch_semantics():
  rng = np.random.default_rng(0)
  q = rng.normal(size=(2, 3, 8)).astype(np.float32)
  kv = rng.normal(size=(2, 5, 8)).astype(np.float32)
  mod = CrossAttention(8, 2, 16)
  v = mod.init(jax.random.PRNGKey(0), q, kv)
  got = np.asarray(mod.apply(v, q, kv))
  p = jax.tree_util.tree_map(np.asarray, v["params"])
  m = p["multihead_attn"]

  def lin(x, d):
    return x @ d["kernel"] + d["bias"]

  qh = lin(q, m["q_proj"]).reshape(2, 3, 2, 4).transpose(0, 2, 1, 3)
  kh = lin(kv, m["k_proj"]).reshape(2, 5, 2, 4).transpose(0, 2, 1, 3)
  vh = lin(kv, m["v_proj"]).reshape(2, 5, 2, 4).transpose(0, 2, 1, 3)
  s = qh @ kh.transpose(0, 1, 3, 2) / 2.0
  a = np.exp(s - s.max(-1, keepdims=True))
  a /= a.sum(-1, keepdims=True)
  o = lin((a @ vh).transpose(0, 2, 1, 3).reshape(2, 3, 8), m["out_proj"])
  t = q + o
  t = (t - t.mean(-1, keepdims=True)) / np.sqrt(t.var(-1, keepdims=True) + 1e-5)
  want = t + lin(np.maximum(lin(t, p["linear1"]), 0), p["linear2"])
  np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


def test_tiny_encoder_shapes_and_finite_grads():
  cfg = tiny_encoder_config()
  model = GOAEncoder(cfg)
  x = jnp.asarray(np.random.default_rng(1).uniform(-1, 1, (2, 64, 64, 3)), jnp.float32)
  v = random_variables(model.init, x)

  def loss(v):
    out = model.apply(v, x, features=True)
    return jnp.sum(out["ws"] ** 2), out

  g, out = jax.jit(jax.grad(loss, has_aux=True))(v)
  assert out["ws"].shape == (2, 8, 16) and out["ws_base"].shape == (2, 8, 16)
  assert out["swin_x_fine"].shape == (2, 256, 8)
  assert out["swin_x_query"].shape == (2, 64, 4)   # [B, 8E, tokens of stage 3]
  assert out["swin_x_base"].shape == (2, 64, 4)
  leaves = jax.tree_util.tree_leaves(g)
  assert all(np.all(np.isfinite(np.asarray(a))) for a in leaves)
  gp = g["params"]
  assert float(jnp.abs(gp["swin_model"]["patch_embed_proj"]["kernel"]).sum()) > 0
  assert float(jnp.abs(gp["cross_att_fine"]["multihead_attn"]["k_proj"]["kernel"]).sum()) > 0


def test_shifted_block_jit_equals_eager():
  blk = swin.SwinBlock(8, 2, resolution=8, window=4, pretrained_window=3, block_index=1)
  x = jnp.asarray(np.random.default_rng(2).normal(size=(1, 8, 8, 8)), jnp.float32)
  v = random_variables(blk.init, x)
  np.testing.assert_allclose(jax.jit(blk.apply)(v, x), blk.apply(v, x), rtol=1e-5, atol=1e-5)
  # The shift must matter (a block that ignored it would equal the unshifted one).
  blk0 = swin.SwinBlock(8, 2, resolution=8, window=4, pretrained_window=3, block_index=0)
  assert not np.allclose(blk0.apply(v, x), blk.apply(v, x), atol=1e-3)


# ------------------------------------------------------------------ bad input / checkpoints


def test_encoder_rejects_bad_input():
  _, sd, _ = encoder_fixture("goae_encoder")
  f = reference.load("goae_encoder", sd)
  with pytest.raises(ValueError, match="channels-first"):
    f(np.zeros((1, 3, 256, 256), np.float32))
  with pytest.raises(ValueError, match="spatial size"):
    f(np.zeros((1, 128, 128, 3), np.float32))
  with pytest.raises(TypeError, match="floating"):
    f(np.zeros((1, 256, 256, 3), np.uint8))
  with pytest.raises(ValueError, match=r"\[-1, 1\]"):
    f(np.full((1, 256, 256, 3), 255.0, np.float32))


def test_encoder_checkpoint_mismatches_are_named():
  _, sd, _ = encoder_fixture("goae_encoder")
  _, afa_sd, _ = encoder_fixture("goae_afa")
  with pytest.raises(ValueError, match="not a GOAE encoder"):
    cgoae.convert_encoder(afa_sd)
  missing = dict(sd)
  del missing["cross_att_fine.linear2.bias"]
  with pytest.raises(ValueError, match="cross_att_fine.linear2.bias"):
    cgoae.convert_encoder(missing)
  extra = dict(sd, **{"swin_model.head.weight": np.zeros((1000, 1024), np.float32)})
  with pytest.raises(ValueError, match="swin_model.head.weight"):
    cgoae.convert_encoder(extra)
  bad = dict(sd)
  bad["mapper_base_channel.2.weight"] = np.zeros((512, 512), np.float32)
  with pytest.raises(ValueError, match=r"mapper_base_channel.2.weight.*\(512, 512\)"):
    cgoae.convert_encoder(bad)
  # A checkpoint built with another window: the shipped buffers betray it.
  with pytest.raises(ValueError, match="window configuration|relative_coords_table"):
    cgoae.convert_encoder(sd, GOAEncoderConfig(swin=SwinV2Config(pretrained_window_sizes=(16,) * 4)))
  prefixed = {f"module.{k}": v for k, v in sd.items()}
  assert "params" in cgoae.convert_encoder(prefixed)


def test_afa_checkpoint_mismatches_are_named():
  _, sd, _ = encoder_fixture("goae_afa")
  _, enc_sd, _ = encoder_fixture("goae_encoder")
  with pytest.raises(ValueError, match="looks like the GOAE \\*encoder\\*"):
    cgoae.convert_afa(enc_sd)
  missing = dict(sd)
  del missing["body.4.res_layer.1.weight"]
  with pytest.raises(ValueError, match="body.4.res_layer.1.weight"):
    cgoae.convert_afa(missing)
  extra = dict(sd, **{"body.9.res_layer.0.weight": np.zeros((256,), np.float32)})
  with pytest.raises(ValueError, match="body"):
    cgoae.convert_afa(extra)
  bad = dict(sd)
  bad["output_layer.2.weight"] = np.zeros((512, 256, 3, 3), np.float32)
  with pytest.raises(ValueError, match="output_layer.2.weight"):
    cgoae.convert_afa(bad)


def test_afa_rejects_bad_input():
  _, sd, _ = encoder_fixture("goae_afa")
  f = reference.load("goae_afa", sd)
  img = np.zeros((1, 64, 64, 3), np.float32)
  with pytest.raises(ValueError, match="feature_map: expected 512 channels"):
    f(img, img, np.zeros((1, 8, 8, 64), np.float32))
  with pytest.raises(ValueError, match="channels-first"):
    f(np.zeros((1, 3, 64, 64), np.float32), img, np.zeros((1, 8, 8, 512), np.float32))
  with pytest.raises(ValueError, match="rec_img"):
    f(img, np.zeros((1, 32, 32, 3), np.float32), np.zeros((1, 8, 8, 512), np.float32))
  with pytest.raises(ValueError, match="batch sizes differ"):
    f(img, img, np.zeros((2, 8, 8, 512), np.float32))


# ------------------------------------------------------------------ released files / CLI


def test_afa_pt_file_converts_to_native_and_back(tmp_path):
  """A zip-format .pt (as torch.save writes) -> `jaxinv convert goae-afa` -> native -> same tree."""
  from test_convert_common import _Storage, _tensor, _zip_bytes
  import collections
  from jaxinv.cli import main as cli_main
  from jaxinv.convert import common

  _, sd, _ = encoder_fixture("goae_afa")
  storages, obj = [], collections.OrderedDict()
  for i, (k, v) in enumerate(sd.items()):
    if v.dtype != np.float32:  # num_batches_tracked: eval BN ignores it
      continue
    s = _Storage(str(i), np.ascontiguousarray(v).ravel())
    storages.append(s)
    obj[k] = _tensor(s, v.shape)
  src = tmp_path / "afa_FFHQ.pt"
  src.write_bytes(_zip_bytes(obj, storages))
  dst = tmp_path / "afa.npz"
  assert cli_main(["convert", "goae-afa", str(src), str(dst)]) == 0
  config, variables = cgoae.load_any(dst, cgoae.AFA_KIND)
  assert config == cgoae.AFAConfig()
  want = common.flatten_tree(cgoae.convert_afa(sd))
  got = common.flatten_tree(variables)
  assert sorted(got) == sorted(want)
  for k in want:
    np.testing.assert_array_equal(got[k], want[k])
  with pytest.raises(ValueError, match="goae_afa"):
    cgoae.load_any(dst, cgoae.ENCODER_KIND)
  # The encoder converter refuses the AFA file by name.
  assert cli_main(["convert", "goae-encoder", str(src), str(tmp_path / "e.npz")]) == 1


def test_encoder_native_roundtrip_keeps_config(tmp_path):
  from jaxinv.convert import common
  cfg = tiny_encoder_config()
  v = random_variables(GOAEncoder(cfg).init, jnp.zeros((1, 64, 64, 3)))
  p = tmp_path / "enc.npz"
  common.save_native(p, cgoae.ENCODER_KIND, cgoae._config_to_json(cfg), v)
  cfg2, v2 = cgoae.load_any(p, cgoae.ENCODER_KIND)
  assert cfg2 == cfg
  assert jax.tree_util.tree_structure(v2) == jax.tree_util.tree_structure(
      jax.tree_util.tree_map(np.asarray, v))


def test_load_encoder_points_goae_files_to_load_goae(tmp_path):
  import jaxinv.api
  from jaxinv.convert import common
  cfg = tiny_encoder_config()
  v = random_variables(GOAEncoder(cfg).init, jnp.zeros((1, 64, 64, 3)))
  p = tmp_path / "enc.npz"
  common.save_native(p, cgoae.ENCODER_KIND, cgoae._config_to_json(cfg), v)
  with pytest.raises(ValueError, match="load_goae"):
    jaxinv.api.load_encoder(p)
