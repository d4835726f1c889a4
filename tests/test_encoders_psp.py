"""pSp-family encoders (pSp, e4e, PREIM3D W+): parity with the official PyTorch fixtures, the
resampling ops they use, e4e's progressive stages, and clear errors for bad inputs/checkpoints.

The fixtures are full size (pSp: 267 M weights); each network is converted and compiled once per
module (``_outputs``; only small outputs are kept) and shared by the tests below.
"""
from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from conftest import assert_encoder_close, encoder_fixture, nchw_to_nhwc
from jaxinv.convert import psp as psp_convert
from jaxinv.convert import reference
from jaxinv.models.encoders import psp as psp_models
from jaxinv.ops.resample import pixel_shuffle, resize_bilinear_align_corners


# ----------------------------------------------------------------------------------- ops

def _bilinear_align_corners_numpy(x, ho, wo):
  """Direct per-pixel evaluation of torch's align_corners=True bilinear formula (NCHW-free)."""
  b, h, w, c = x.shape
  out = np.zeros((b, ho, wo, c), np.float64)
  for i in range(ho):
    sy = i * (h - 1) / (ho - 1) if ho > 1 else 0.0
    y0 = int(np.floor(sy)); y1 = min(y0 + 1, h - 1); fy = sy - y0
    for j in range(wo):
      sx = j * (w - 1) / (wo - 1) if wo > 1 else 0.0
      x0 = int(np.floor(sx)); x1 = min(x0 + 1, w - 1); fx = sx - x0
      out[:, i, j] = ((1 - fy) * ((1 - fx) * x[:, y0, x0] + fx * x[:, y0, x1])
                      + fy * ((1 - fx) * x[:, y1, x0] + fx * x[:, y1, x1]))
  return out


@pytest.mark.parametrize("hw,out", [((4, 4), (8, 8)), ((5, 3), (9, 7)), ((16, 16), (32, 32)),
                                    ((6, 6), (4, 4)), ((1, 3), (2, 5))])
def test_resize_bilinear_align_corners_matches_formula(hw, out):
  x = np.random.default_rng(0).normal(size=(2, *hw, 3)).astype(np.float32)
  got = np.asarray(resize_bilinear_align_corners(jnp.asarray(x), out))
  np.testing.assert_allclose(got, _bilinear_align_corners_numpy(x, *out), atol=1e-5)
  # align_corners=True keeps the corner pixels exactly.
  np.testing.assert_allclose(got[:, [0, 0, -1, -1], [0, -1, 0, -1]],
                             x[:, [0, 0, -1, -1], [0, -1, 0, -1]], atol=1e-6)


@pytest.mark.parametrize("r", [1, 2, 3])
def test_pixel_shuffle_matches_torch_formula(r):
  rng = np.random.default_rng(1)
  b, c, h, w = 2, 3, 4, 5
  x_nchw = rng.normal(size=(b, c * r * r, h, w)).astype(np.float32)
  want = np.zeros((b, c, h * r, w * r), np.float32)
  for i in range(r):
    for j in range(r):
      want[:, :, i::r, j::r] = x_nchw[:, np.arange(c) * r * r + i * r + j]
  got = np.asarray(pixel_shuffle(jnp.asarray(nchw_to_nhwc(x_nchw)), r))
  np.testing.assert_array_equal(got, nchw_to_nhwc(want))


def test_pixel_shuffle_rejects_bad_channels():
  with pytest.raises(ValueError, match="not divisible"):
    pixel_shuffle(jnp.zeros((1, 2, 2, 6)), 2)


# ------------------------------------------------------------------- e4e progressive stages

def test_e4e_progressive_schedule():
  steps = psp_models.e4e_progressive_steps(14, progressive_start=20000, progressive_step_every=2000)
  assert len(steps) == 14 and steps[:3] == (0, 20000, 22000) and steps[-1] == 20000 + 12 * 2000
  assert psp_models.e4e_progressive_stage(0, steps) == 0
  assert psp_models.e4e_progressive_stage(19999, steps) == 0
  assert psp_models.e4e_progressive_stage(20000, steps) == 1
  assert psp_models.e4e_progressive_stage(23999, steps) == 2
  assert psp_models.e4e_progressive_stage(10**7, steps) == 13
  assert psp_models.e4e_progressive_stage(5, None) == psp_models.E4E_INFERENCE_STAGE
  assert psp_models.e4e_active_deltas(0, 14) == ()
  assert psp_models.e4e_active_deltas(3, 14) == (1, 2, 3)
  assert psp_models.e4e_active_deltas(psp_models.E4E_INFERENCE_STAGE, 14) == tuple(range(1, 14))
  with pytest.raises(ValueError, match="ascending"):
    psp_models.e4e_progressive_stage(3, (0, 10, 5))


def test_n_styles_for_resolution():
  assert psp_models.n_styles_for_resolution(1024) == 18
  assert psp_models.n_styles_for_resolution(256) == 14
  with pytest.raises(ValueError, match="power of two"):
    psp_models.n_styles_for_resolution(500)


# ------------------------------------------------------------------------ fixture parity

# fixture -> (encoder type, {io name: feature name returned by the model})
_CASES = {
    "psp_gradual_style_encoder": (psp_convert.PSP, {"feat_c1": "c1", "feat_c2": "c2",
                                                    "feat_c3": "c3", "feat_p2": "p2"}),
    "triplanenet_psp_encoder": (psp_convert.PSP, {"feat_c3": "c3"}),
    "preim3d_e4e_encoder": (psp_convert.E4E, {"feat_c3": "c3", "w0": "w0"}),
    "preim3d_wplus_encoder": (psp_convert.WPLUS, {"feat_body23": "body", "feat_pool7": "pool7",
                                                  "feat_fc512": "fc512"}),
}


def _load(fixture: str):
  """(model, variables) of one fixture. Not cached: a full-size network's variables (pSp: 1 GB)
  live only as long as the test that needs them, so the module's memory stays at one network."""
  _, sd, _ = encoder_fixture(fixture)
  return psp_convert.load_encoder_from_state_dict(sd, _CASES[fixture][0])


@functools.lru_cache(maxsize=None)
def _outputs(fixture: str):
  """Codes and features (small numpy arrays) of the fixture's input, computed once per module;
  for e4e also the stage-0 codes."""
  _, _, io = encoder_fixture(fixture)
  model, variables = _load(fixture)
  x = jnp.asarray(nchw_to_nhwc(io["x"]))
  codes, feats = jax.jit(lambda v, x: model.apply(v, x, return_features=True))(variables, x)
  out = {k: np.asarray(v) for k, v in feats.items()}
  if fixture == "preim3d_e4e_encoder":
    out["stage0"] = np.asarray(jax.jit(lambda v, x: model.apply(v, x, stage=0))(variables, x))
  return np.asarray(codes), out


@pytest.mark.slow
@pytest.mark.parametrize("fixture", list(_CASES))
def test_parity_with_official(fixture):
  cfg, _, io = encoder_fixture(fixture)
  codes, feats = _outputs(fixture)
  assert_encoder_close(codes, io["codes"], f"{fixture}/codes")
  for io_name, feat_name in _CASES[fixture][1].items():
    assert_encoder_close(feats[feat_name], nchw_to_nhwc(io[io_name]),
                         f"{fixture}/{io_name}")
  listed = {k for k, v in cfg["io"].items() if v["role"] == "output"}
  assert listed == {"codes"} | set(_CASES[fixture][1]), "a listed fixture array is not compared"


@pytest.mark.slow
def test_e4e_rows_are_w0_plus_deltas():
  # Inference form: row 0 is w0, every other row is w0 + its own (input-dependent) delta.
  codes, feats = _outputs("preim3d_e4e_encoder")
  np.testing.assert_array_equal(codes[:, 0], feats["w0"])
  assert np.abs(codes[:, 1:] - feats["w0"][:, None]).max(axis=-1).min() > 1e-3


@pytest.mark.slow
def test_e4e_stage0_is_w0_everywhere():
  _, _, io = encoder_fixture("preim3d_e4e_encoder")
  _, feats = _outputs("preim3d_e4e_encoder")
  assert_encoder_close(feats["stage0"], np.repeat(io["w0"][:, None], 14, axis=1), "stage0")


@pytest.mark.parametrize("kind,fixture,shape", [
    ("psp", "psp_gradual_style_encoder", (2, 18, 512)),
    ("psp", "triplanenet_psp_encoder", (2, 14, 512)),
    ("e4e", "preim3d_e4e_encoder", (2, 14, 512)),
    ("preim3d_wplus", "preim3d_wplus_encoder", (2, 14, 512))])
def test_reference_kinds_signature(kind, fixture, shape):
  # The kinds wrap the same model.apply the parity tests check; tracing (no compile) pins the
  # stable signature: NHWC [B,256,256,3] in, [B,n_styles,512] out.
  _, sd, _ = encoder_fixture(fixture)
  f = reference.load(kind, sd)
  out = jax.eval_shape(f, jax.ShapeDtypeStruct((2, 256, 256, 3), jnp.float32))
  assert out.shape == shape and out.dtype == jnp.float32


# ------------------------------------------------------------------------------ bad input

@pytest.mark.slow
def test_bad_images_are_refused():
  model, variables = _load("preim3d_wplus_encoder")
  with pytest.raises(ValueError, match="channels-first"):
    model.apply(variables, jnp.zeros((1, 3, 256, 256)))
  with pytest.raises(ValueError, match="multiple of 16"):
    model.apply(variables, jnp.zeros((1, 250, 250, 3)))


def _small_sd(fixture):
  return dict(encoder_fixture(fixture)[1])


def test_mismatched_checkpoints_are_refused():
  sd = _small_sd("psp_gradual_style_encoder")
  with pytest.raises(ValueError, match="18 style heads, but n_styles=14"):
    reference.load("psp", sd, n_styles=14)
  with pytest.raises(ValueError, match="missing 'linear.weight'"):
    reference.load("preim3d_wplus", sd)
  with pytest.raises(ValueError, match="not a pSp/e4e encoder"):
    reference.load("e4e", _small_sd("preim3d_wplus_encoder"))
  broken = dict(sd)
  broken["styles.4.linear.weight"] = broken["styles.4.linear.weight"][:, :256]
  with pytest.raises(ValueError, match=r"styles\.4\.linear\.weight.*\(512, 256\)"):
    reference.load("psp", broken)
  missing = {k: v for k, v in sd.items() if k != "latlayer2.bias"}
  with pytest.raises(ValueError, match="missing key 'latlayer2.bias'"):
    reference.load("psp", missing)
  extra = dict(sd, **{"styles.0.extra.weight": np.zeros(3, np.float32)})
  with pytest.raises(ValueError, match=r"not mapped: styles\.0\.extra\.weight"):
    reference.load("psp", extra)
  with pytest.raises(ValueError, match="takes only n_styles"):
    reference.load("psp", sd, input_nc=3)


def test_released_checkpoint_layout(tmp_path):
  """A pSp/e4e/PREIM3D-style checkpoint dict: encoder.* converted, decoder.* ignored, latent_avg."""
  sd = _small_sd("preim3d_wplus_encoder")
  la = np.arange(14 * 512, dtype=np.float32).reshape(1, 14, 512)
  ck = {"state_dict": {**{f"encoder.{k}": v for k, v in sd.items()},
                       "decoder.backbone.mapping.w_avg": np.zeros(512, np.float32)},
        "latent_avg": la, "opts": {"encoder_type": "WPlusEncoder", "stylegan_size": 256}}
  out = psp_convert.load_checkpoint(ck)
  assert out.encoder_type == psp_convert.WPLUS and out.model.n_styles == 14
  np.testing.assert_array_equal(out.latent_avg, la[0])
  # A key that is neither encoder nor decoder is refused by name.
  ck["state_dict"]["discriminator.fc.weight"] = np.zeros(2, np.float32)
  with pytest.raises(ValueError, match="discriminator.fc.weight"):
    psp_convert.load_checkpoint(ck)
  with pytest.raises(ValueError, match="'state_dict'"):
    psp_convert.load_checkpoint({"G_ema": {}})
  with pytest.raises(ValueError, match="unsupported encoder_type"):
    psp_convert.load_checkpoint({"state_dict": ck["state_dict"]}, encoder_type="resnet")


def test_latent_avg_shapes():
  a = np.ones(512, np.float32)
  assert psp_convert.normalize_latent_avg(a, 18).shape == (18, 512)
  assert psp_convert.normalize_latent_avg(a[None], 14).shape == (14, 512)
  assert psp_convert.normalize_latent_avg(np.ones((14, 512)), 14).shape == (14, 512)
  with pytest.raises(ValueError, match="does not fit 14 styles"):
    psp_convert.normalize_latent_avg(np.ones((18, 512)), 14)


def test_native_round_trip(tmp_path):
  sd = _small_sd("preim3d_wplus_encoder")
  la = np.random.default_rng(0).normal(size=(14, 512)).astype(np.float32)
  ck = psp_convert.load_checkpoint({"state_dict": {f"encoder.{k}": v for k, v in sd.items()},
                                    "latent_avg": la, "opts": {"encoder_type": "WPlusEncoder"}})
  psp_convert.save_native_encoder(tmp_path / "wplus.npz", ck)
  back = psp_convert.load_native_encoder(tmp_path / "wplus.npz")
  assert back.encoder_type == ck.encoder_type and back.model == ck.model
  np.testing.assert_array_equal(back.latent_avg, la)
  a, b = jax.tree_util.tree_leaves(ck.variables), jax.tree_util.tree_leaves(back.variables)
  assert len(a) == len(b) and all(np.array_equal(x, y) for x, y in zip(a, b))
  from jaxinv import api
  via_api = api.load_encoder(tmp_path / "wplus.npz")
  assert via_api.model == ck.model and via_api.latent_avg.shape == (14, 512)
