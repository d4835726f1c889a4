"""TriPlaneNet: the tri-plane offset U-Net against the official fixture, its converter, and the
inference pipeline (shapes, gradients through the renderer, mirror camera, editing rule)."""
from __future__ import annotations

import functools
import math

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from conftest import assert_encoder_close, encoder_fixture, nchw_to_nhwc
from jaxinv.convert import reference
from jaxinv.convert import triplanenet as tri_convert
from jaxinv.inversion import triplanenet as tpn
from jaxinv.models.encoders.triplanenet import offsets_to_planes
from jaxinv.nn.decoder import OSGDecoder
from jaxinv.render import camera
from jaxinv.render.options import RenderOptions
from jaxinv.render.rays import rays_from_label
from jaxinv.render.renderer import render

FIXTURE = "triplanenet_triplane_encoder"


# ------------------------------------------------------------------------------ U-Net parity

@functools.lru_cache(maxsize=None)
def _unet_outputs():
  _, sd, io = encoder_fixture(FIXTURE)
  model, variables = tri_convert.load_triplane_encoder_from_state_dict(sd)
  f = jax.jit(lambda v, x: model.apply(v, x, return_features=True))
  planes, feats = f(variables, jnp.asarray(nchw_to_nhwc(io["x_input"])))
  return np.asarray(planes), {k: np.asarray(v) for k, v in feats.items()}


@pytest.mark.slow
def test_offsets_parity_with_official():
  cfg, _, io = encoder_fixture(FIXTURE)
  planes, feats = _unet_outputs()
  assert planes.shape == (2, 3, 256, 256, 32)
  # Back to the upstream [B, 96, H, W] channel order: channel c = plane c // 32, feature c % 32.
  raw = planes.transpose(0, 1, 4, 2, 3).reshape(2, 96, 256, 256)
  np.testing.assert_array_equal(nchw_to_nhwc(raw), feats["raw"])
  views = {
      "triplane_offsets_stride4": raw[:, :, 1::4, 2::4],
      "triplane_offsets_crop_top_left": raw[:, :, :16, :16],
      "triplane_offsets_crop_bottom_right": raw[:, :, 240:, 240:],
      "triplane_offsets_channel_mean": raw.astype(np.float64).mean(axis=(2, 3)),
  }
  for name, got in views.items():
    assert_encoder_close(got, io[name], name)
  for io_name, feat in (("feat_c3", "c3"), ("feat_body23", "body23"), ("feat_up1", "up1"),
                        ("feat_up2", "up2")):
    assert_encoder_close(feats[feat], nchw_to_nhwc(io[io_name]), io_name)
  listed = {k for k, v in cfg["io"].items() if v["role"] == "output"}
  assert listed == set(views) | {"feat_c3", "feat_body23", "feat_up1", "feat_up2"}


def test_reference_kind_signature():
  _, sd, _ = encoder_fixture(FIXTURE)
  f = reference.load("triplanenet_offsets", sd)
  out = jax.eval_shape(f, jax.ShapeDtypeStruct((2, 256, 256, 6), jnp.float32))
  assert out.shape == (2, 3, 256, 256, 32) and out.dtype == jnp.float32


def test_offsets_to_planes_layout():
  raw = jnp.arange(2 * 4 * 5 * 96, dtype=jnp.float32).reshape(2, 4, 5, 96)
  p = np.asarray(offsets_to_planes(raw))
  assert p.shape == (2, 3, 4, 5, 32)
  assert p[1, 2, 3, 4, 7] == raw[1, 3, 4, 2 * 32 + 7]
  with pytest.raises(ValueError, match="96 channels"):
    offsets_to_planes(raw[..., :95])


# ----------------------------------------------------------------------------- converters

def test_triplanenet_checkpoint_layout_and_errors():
  _, tri_sd, _ = encoder_fixture(FIXTURE)
  _, psp_sd, _ = encoder_fixture("triplanenet_psp_encoder")
  sd = {**{f"psp_encoder.{k}": v for k, v in psp_sd.items()},
        **{f"triplanenet_encoder.{k}": v for k, v in tri_sd.items()},
        "decoder.backbone.mapping.w_avg": np.zeros(512, np.float32)}
  ck = tri_convert.load_checkpoint({"state_dict": sd, "opts": {"n_styles": 14}, "step": 5})
  assert ck.psp_model.n_styles == 14 and ck.triplane_model.in_ch == 6
  assert set(ck.decoder_state_dict) == {"backbone.mapping.w_avg"}
  # v2 checkpoints (9-channel input + final_head_two) are refused by name.
  v2 = dict(sd, **{"triplanenet_encoder.final_head_two.0.weight": np.zeros((96, 120, 3, 3))})
  with pytest.raises(ValueError, match="v2"):
    tri_convert.load_checkpoint({"state_dict": v2})
  with pytest.raises(ValueError, match="triplanenet_encoder"):
    tri_convert.load_checkpoint({"state_dict": {k: v for k, v in sd.items()
                                                if not k.startswith("triplanenet_encoder.")}})
  bad = dict(tri_sd)
  bad["up3.conv.double_conv.1.weight"] = bad["up3.conv.double_conv.1.weight"][:, :200]
  with pytest.raises(ValueError, match=r"up3\.conv\.double_conv\.1\.weight.*\(256, 200, 3, 3\)"):
    reference.load("triplanenet_offsets", bad)
  with pytest.raises(ValueError, match="not a TriPlane_Encoder"):
    reference.load("triplanenet_offsets", psp_sd)
  with pytest.raises(ValueError, match="no config"):
    reference.load("triplanenet_offsets", tri_sd, n_styles=14)


def test_eg3d_checkpoint_reader():
  sd, kw, la = tri_convert.load_eg3d_checkpoint(
      {"G_ema": {"a": np.zeros(2)}, "init_kwargs": {"z_dim": 512}, "latent_avg": np.ones(512)})
  assert la.shape == (14, 512) and kw == {"z_dim": 512} and set(sd) == {"a"}
  with pytest.raises(ValueError, match="latent_avg"):
    tri_convert.load_eg3d_checkpoint({"G_ema": {}, "init_kwargs": {}})


# --------------------------------------------------------------------------------- pipeline

class _StubG:
  """A tiny tri-plane generator built from jaxinv's real renderer and OSG decoder.

  ``planes(ws)`` = fixed random planes + a ws-dependent per-channel shift; ``synthesis`` renders
  them (``image`` = ``image_raw`` at ``res`` pixels: no superresolution). Only what the TriPlaneNet
  pipeline uses: ``planes`` and ``synthesis(ws, c, *, planes, key, neural_rendering_resolution)``.
  """

  def __init__(self, base_planes, res=16):
    self.base = base_planes  # [1, 3, H, W, 32]
    self.res = res
    self.options = RenderOptions(depth_resolution=8, depth_resolution_importance=8)
    self.decoder = OSGDecoder()
    self.decoder_params = self.decoder.init(jax.random.PRNGKey(3), jnp.zeros((1, 3, 1, 32)))
    self.proj = jax.random.normal(jax.random.PRNGKey(4), (512, 32)) * 0.01

  def planes(self, ws):
    shift = jnp.mean(ws, axis=1) @ self.proj  # [B, 32]
    return self.base + shift[:, None, None, None, :]

  def synthesis(self, ws, c, *, planes=None, key=None, neural_rendering_resolution=None):
    r = neural_rendering_resolution or self.res
    planes = self.planes(ws) if planes is None else planes
    o, d = rays_from_label(c, r)
    dec = functools.partial(self.decoder.apply, self.decoder_params)
    feat, depth, _ = render(planes, dec, o, d, self.options, key=key)
    b = c.shape[0]
    img = feat[..., :3].reshape(b, r, r, 3)
    return {"image": img, "image_raw": img, "image_depth": depth.reshape(b, r, r, 1)}


class _TinyPsp(nn.Module):
  """Stand-in for the 14-style pSp encoder (same call signature, tiny)."""
  n_styles: int = 14

  @nn.compact
  def __call__(self, x):
    f = x.reshape(x.shape[0], 8, 32, 8, 32, 3).mean(axis=(2, 4)).reshape(x.shape[0], -1)
    return nn.Dense(self.n_styles * 512)(f).reshape(-1, self.n_styles, 512)


class _TinyOffsets(nn.Module):
  """Stand-in for the tri-plane U-Net: [B,256,256,6] -> [B,3,32,32,32] offsets."""

  @nn.compact
  def __call__(self, x):
    f = x.reshape(x.shape[0], 32, 8, 32, 8, 6).mean(axis=(2, 4))
    return offsets_to_planes(nn.Conv(96, (3, 3), padding=1)(f) * 0.1)


def _symmetric_planes(key, hw=32, c=32):
  """Planes invariant under reflecting either plane axis, hence under x -> -x on every plane."""
  p = jax.random.normal(key, (1, 3, hw, hw, c))
  p = p + p[:, :, ::-1]
  return 0.5 * (p + p[:, :, :, ::-1])


def _camera(yaw, pitch=math.pi / 2, b=1):
  c2w = camera.look_at_pose(jnp.full((b,), yaw), jnp.full((b,), pitch))
  return camera.matrices_to_label(c2w, camera.intrinsics_matrix())


@functools.lru_cache(maxsize=None)
def _pipeline():
  G = _StubG(_symmetric_planes(jax.random.PRNGKey(0)))
  psp, offs = _TinyPsp(), _TinyOffsets()
  x = jnp.zeros((2, 256, 256, 3))
  params = {"psp": psp.init(jax.random.PRNGKey(1), x),
            "triplane": offs.init(jax.random.PRNGKey(2), jnp.zeros((2, 256, 256, 6))),
            "latent_avg": jnp.zeros((14, 512))}
  return G, psp, offs, params


def _inputs(b=2):
  x = jax.random.uniform(jax.random.PRNGKey(7), (b, 256, 256, 3), minval=-1, maxval=1)
  return x, _camera(math.pi / 2 + 0.3, b=b)


def test_pipeline_gradients_and_detached_first_pass():
  G, psp, offs, params = _pipeline()
  x, c = _inputs()

  def losses(p):
    out = tpn.forward(G, psp, offs, p, x, c)
    final = jnp.mean((out["y_hat_resized"] - x) ** 2)
    return final + jnp.mean((out["y_hat_initial"] - x) ** 2), final

  # One compile for both gradients: of the full loss, and of the final render's loss alone.
  g_all, g_final = jax.jit(lambda p: (jax.grad(lambda q: losses(q)[0])(p),
                                      jax.grad(lambda q: losses(q)[1])(p)))(params)
  for part in ("psp", "triplane"):
    leaves = jax.tree_util.tree_leaves(g_all[part])
    assert all(np.isfinite(np.asarray(a)).all() for a in leaves)
    assert max(float(jnp.abs(a).max()) for a in leaves) > 0, f"no gradient reaches {part}"
  # Upstream detaches the first pass: the final render's loss must not reach the pSp encoder.
  assert max(float(jnp.abs(a).max()) for a in jax.tree_util.tree_leaves(g_final["psp"])) == 0
  assert max(float(jnp.abs(a).max()) for a in jax.tree_util.tree_leaves(g_final["triplane"])) > 0


def test_mirror_camera_renders_the_flipped_image_of_a_symmetric_scene():
  G = _StubG(_symmetric_planes(jax.random.PRNGKey(5)), res=24)
  ws = jnp.zeros((1, 14, 512))
  c = _camera(math.pi / 2 + 0.4, math.pi / 2 - 0.2)
  syn = jax.jit(lambda planes, c: G.synthesis(ws, c, planes=planes))
  a = syn(G.planes(ws), c)
  m = syn(G.planes(ws), camera.mirror_label(c))
  assert float(jnp.abs(a["image"] - a["image"][:, :, ::-1]).max()) > 1e-2  # not trivially symmetric
  np.testing.assert_allclose(m["image"], a["image"][:, :, ::-1], atol=2e-5)
  np.testing.assert_allclose(m["image_depth"], a["image_depth"][:, :, ::-1], atol=2e-4)
  # Breaking the symmetry of the scene breaks the identity (the test can fail).
  skewed = G.planes(ws) + jax.random.normal(jax.random.PRNGKey(6), G.base.shape)
  a2, m2 = syn(skewed, c), syn(skewed, camera.mirror_label(c))
  assert float(jnp.abs(m2["image"] - a2["image"][:, :, ::-1]).max()) > 1e-3


def test_mirror_label_matches_triplanenet_flip_yaw():
  # TriPlaneNet's dataset flips the signs of pose entries [0,1], [0,2], [1,0], [2,0], [0,3].
  c = np.asarray(_camera(math.pi / 2 + 0.3, math.pi / 2 - 0.1))
  pose = c[0, :16].reshape(4, 4).copy()
  for i, j in ((0, 1), (0, 2), (1, 0), (2, 0), (0, 3)):
    pose[i, j] *= -1
  want = np.concatenate([pose.reshape(-1), c[0, 16:]])
  np.testing.assert_allclose(np.asarray(camera.mirror_label(c))[0], want, atol=1e-6)


def test_editing_rule():
  G, _, _, _ = _pipeline()
  ws = jax.random.normal(jax.random.PRNGKey(8), (2, 14, 512))
  ws_edit = ws + 0.5
  dT = jax.random.normal(jax.random.PRNGKey(9), (2, 3, 32, 32, 32))
  literal = (G.planes(ws) + dT) + G.planes(ws_edit) - G.planes(ws)
  np.testing.assert_allclose(tpn.edit_planes(G, ws, dT, ws_edit), literal, atol=1e-5)
  out = jax.jit(lambda c: tpn.render_edit(G, ws, dT, ws_edit, c))(_camera(math.pi / 2, b=2))
  assert out["image"].shape == (2, 16, 16, 3)


def test_pipeline_refuses_bad_input():
  G, psp, offs, params = _pipeline()
  x, c = _inputs()
  with pytest.raises(ValueError, match="channels-first"):
    tpn.forward(G, psp, offs, params, jnp.transpose(x, (0, 3, 1, 2)), c)
  with pytest.raises(ValueError, match="c"):
    tpn.forward(G, psp, offs, params, x, c[:, :16])
  with pytest.raises(ValueError, match=r"\[-1, 1\]"):
    tpn.forward(G, psp, offs, params, x * 3, c)


# ------------------------------------------------------------- on the tiny EG3D fixture generator

@functools.lru_cache(maxsize=None)
def _tiny_eg3d():
  from conftest import eg3d_fixture
  from jaxinv.convert import eg3d as eg3d_convert
  cfg, sd, _ = eg3d_fixture("tiny")
  G = eg3d_convert.from_state_dict(sd, cfg["constructor_kwargs"])
  return G.replace(neural_rendering_resolution=16)


class _TinyOffsets256(nn.Module):
  """Stand-in for the U-Net at EG3D's plane size: [B,256,256,6] -> [B,3,256,256,32]."""

  @nn.compact
  def __call__(self, x):
    return offsets_to_planes(nn.Conv(96, (1, 1))(x) * 0.1)


@pytest.mark.slow
def test_synthesize_planes_equals_synthesis_on_tiny_eg3d():
  G = _tiny_eg3d()
  ws = G.mapping(jax.random.normal(jax.random.PRNGKey(0), (2, G.z_dim)), _camera(math.pi / 2, b=2))
  c = _camera(math.pi / 2 + 0.2, b=2)
  ref = G.synthesis(ws, c)
  got = jax.jit(tpn.synthesize_planes)(G, ws, c, G.planes(ws))
  for k in ("image", "image_raw", "image_depth"):
    np.testing.assert_allclose(got[k], ref[k], atol=1e-5, err_msg=k)
  syn = jax.jit(tpn.synthesize_planes)
  shifted = syn(G, ws, c, G.planes(ws) + 0.5)
  assert float(jnp.abs(shifted["image_raw"] - ref["image_raw"]).max()) > 1e-3
  # Mirror camera with the real generator's decoder and renderer: a scene symmetric under
  # x -> -x renders, from the mirrored label, the flipped neural image and depth (the
  # superresolution CNN is not mirror-symmetric, so it is left out of the comparison).
  sym = jnp.concatenate([_symmetric_planes(jax.random.PRNGKey(k), 256) for k in (1, 2)]) * 3
  a, m = syn(G, ws, c, sym), syn(G, ws, camera.mirror_label(c), sym)
  # Importance sampling turns last-bit differences of the mirrored rays into slightly different
  # fine samples on a few rays (max ~3e-3 here), so the bound is on the mean, plus a loose max.
  asym = float(jnp.mean(jnp.abs(a["image_raw"] - a["image_raw"][:, :, ::-1])))
  err = np.abs(np.asarray(m["image_raw"]) - np.asarray(a["image_raw"])[:, :, ::-1])
  # Measured on CPU: mean 3.7e-5, max 2.5e-3; a non-symmetric result differs by ~0.15 on average.
  assert asym > 1e-2 and err.mean() < 3e-4 and err.max() < 1e-2, (asym, err.mean(), err.max())
  derr = np.abs(np.asarray(m["image_depth"]) - np.asarray(a["image_depth"])[:, :, ::-1])
  assert derr.mean() < 3e-4 and derr.max() < 1e-2, (derr.mean(), derr.max())


@pytest.mark.slow
def test_pipeline_end_to_end_on_tiny_eg3d():
  G = _tiny_eg3d()
  psp, offs = _TinyPsp(), _TinyOffsets256()
  x, c = _inputs(b=1)
  params = {"psp": psp.init(jax.random.PRNGKey(1), x),
            "triplane": offs.init(jax.random.PRNGKey(2), jnp.zeros((1, 256, 256, 6))),
            "latent_avg": jnp.zeros((G.num_ws, 512))}

  def loss(p, G):
    out = tpn.forward(G, psp, offs, p, x, c, mirror=True)
    rec = jnp.mean((out["y_hat_resized"] - x) ** 2) + jnp.mean((out["y_hat_initial"] - x) ** 2)
    sym = jnp.mean((out["y_hat_mirror_resized"] - x[:, :, ::-1]) ** 2)
    return rec + sym, out

  (val, out), g = jax.jit(jax.value_and_grad(loss, has_aux=True))(params, G)
  np.testing.assert_allclose(out["planes"], G.planes(out["ws"]) + out["offsets"], atol=1e-5)
  np.testing.assert_allclose(out["c_mirror"], camera.mirror_label(c))
  assert out["planes"].shape == out["offsets"].shape == (1, 3, 256, 256, 32)
  assert out["y_hat"].shape == (1, 128, 128, 3) and out["y_hat_resized"].shape == (1, 256, 256, 3)
  assert out["depth"].shape == (1, 16, 16, 1) and np.isfinite(float(val))
  for part in ("psp", "triplane"):
    leaves = jax.tree_util.tree_leaves(g[part])
    assert all(np.isfinite(np.asarray(a)).all() for a in leaves)
    assert max(float(jnp.abs(a).max()) for a in leaves) > 0, f"no gradient reaches {part}"
