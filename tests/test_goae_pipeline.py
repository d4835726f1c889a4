"""GOAE end to end on the ``tiny`` EG3D fixture generator (tiny encoder/AFA configurations)."""
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from _goae_helpers import random_variables, tiny_afa_config, tiny_encoder_config
from conftest import eg3d_fixture
from jaxinv.convert import eg3d as eg3d_convert
from jaxinv.inversion import goae as gi
from jaxinv.models.encoders.goae import AFA, GOAEncoder
from jaxinv.render.camera import Camera

NRR = 128  # enough rays that the surface hits tile the 256^2 XY plane (GOAE renders 128^2 too)


@functools.lru_cache(maxsize=None)
def _setup():
  cfg, sd, _ = eg3d_fixture("tiny")
  G = eg3d_convert.from_state_dict(sd, cfg["constructor_kwargs"])
  ecfg = tiny_encoder_config(w_dim=G.config.w_dim, ws_split=(1, 3, 3, 7))
  acfg = tiny_afa_config(feat_dim=gi._feature_channels(G))
  s = ecfg.swin.img_size
  img_res = G.config.img_resolution
  enc = random_variables(GOAEncoder(ecfg).init, jnp.zeros((1, s, s, 3)), seed=1)
  z = jnp.zeros((1, img_res, img_res, 3))
  afa = random_variables(AFA(acfg).init, z, z, jnp.zeros((1, 32, 32, acfg.feat_dim)), seed=2)
  goae = gi.GOAE(ecfg, acfg, enc, afa)
  # Target photo: the generator's own rendering of a random w, so the residual is meaningful.
  c = jnp.concatenate([Camera.look_at(yaw=0.25, pitch=0.05).label,
                       Camera.look_at(yaw=-0.3, pitch=-0.1).label])
  ws = G.mapping(jax.random.normal(jax.random.PRNGKey(3), (2, G.z_dim)), c)
  image = jnp.clip(G.synthesis(ws, c)["image"], -1, 1)
  return G, goae, image, c, ws


def test_split_backbone_equals_planes():
  G, _, _, _, ws = _setup()
  fm, partial = jax.jit(gi.backbone_head)(G, ws)
  assert fm.shape == (2, 32, 32, gi._feature_channels(G))
  planes = jax.jit(gi.backbone_tail)(G, ws, fm, partial)
  ref = np.asarray(G.planes(ws))
  np.testing.assert_allclose(planes, ref, atol=1e-5 * np.abs(ref).max())


def test_render_planes_equals_synthesis():
  G, _, _, c, ws = _setup()
  out = gi.render(G, ws, G.planes(ws), c)
  ref = G.synthesis(ws, c)
  for k in ("image", "image_raw", "image_depth", "weights_sum"):
    np.testing.assert_allclose(out[k], ref[k], atol=1e-4 * max(1.0, np.abs(ref[k]).max()),
                               err_msg=k)


@functools.lru_cache(maxsize=None)
def _forward_and_afa_grads():
  G, goae, image, c, _ = _setup()

  def loss(afa):
    out = gi.forward(gi.GOAE(goae.encoder_config, goae.afa_config, goae.encoder, afa), G, image,
                     c, neural_rendering_resolution=NRR)
    return jnp.mean(jnp.abs(out["image"] - image)), out

  return jax.jit(jax.grad(loss, has_aux=True))(goae.afa)


@pytest.mark.slow
def test_pipeline_end_to_end_with_afa_gradients():
  G, goae, image, c, _ = _setup()
  grads, out = _forward_and_afa_grads()
  b, r = 2, G.config.img_resolution
  assert out["ws"].shape == (b, G.num_ws, G.config.w_dim)
  assert out["image"].shape == out["image_w"].shape == (b, r, r, 3)
  assert out["image_depth"].shape == (b, NRR, NRR, 1)
  assert out["planes"].shape == out["planes_f"].shape == out["planes_w"].shape
  assert out["mask"].shape == (b, 256, 256)
  for k, v in out.items():
    assert np.all(np.isfinite(np.asarray(v))), k
  # w+ = encoder output + the generator's w_avg.
  enc = GOAEncoder(goae.encoder_config).apply(goae.encoder, gi.adaptive_avg_pool2d(image, 64))
  np.testing.assert_allclose(
      out["ws"], enc["ws"] + G.params["params"]["backbone"]["mapping"]["w_avg"], atol=1e-4)
  # FiLM on the 32x32 feature map, and the refined planes really differ from the w planes.
  np.testing.assert_allclose(out["feature_map_adain"],
                             out["gamma"] * out["feature_map"] + out["beta"], atol=1e-4)
  assert not np.allclose(out["planes_f"], out["planes_w"], atol=1e-3)
  # Mask: the rule applied to the refined rendering's depth from the input view; the random
  # generator's surface is patchy, but it covers part of the XY plane and misses the corners.
  m = np.asarray(out["mask"])
  origins, dirs = gi.rays_from_label(c, NRR)
  np.testing.assert_allclose(
      m, gi.visibility_mask(origins, dirs, out["image_depth"], 256, sigmas=(1.5, 1.5)), atol=1e-6)
  assert m.min() >= 0 and m.max() <= 1 + 1e-6
  assert np.all((m > 0.99).mean(axis=(1, 2)) > 0.05)
  assert np.all((m < 1e-6).mean(axis=(1, 2)) > 0.3)
  assert np.all(m[:, :8, :8] < 1e-6)
  mixed = np.asarray(out["planes"])
  np.testing.assert_array_equal(mixed[:, 1:], np.asarray(out["planes_f"])[:, 1:])
  mm = m[..., None]
  np.testing.assert_allclose(mixed[:, 0], mm * out["planes_f"][:, 0] + (1 - mm) * out["planes_w"][:, 0],
                             atol=1e-5)
  # Gradients reach every AFA parameter and are finite.
  leaves = jax.tree_util.tree_leaves_with_path(grads["params"])
  assert leaves
  for path, g in leaves:
    assert np.all(np.isfinite(np.asarray(g))), path
  dead = [jax.tree_util.keystr(p) for p, g in leaves if not np.any(np.asarray(g))]
  # A random tiny SE squeeze has a single ReLU unit, which may be dead; nothing else may be.
  assert all("['se']" in d for d in dead), f"AFA parameters without gradient: {dead}"
  gp = grads["params"]
  for g in (gp["input_layer"]["conv"]["kernel"], gp["output_conv0"]["weight"],
            gp["cross_att_gamma"]["multihead_attn"]["k_proj"]["kernel"],
            gp["cross_att_beta"]["linear2"]["bias"]):
    assert float(jnp.abs(g).sum()) > 0


@pytest.mark.slow
def test_edit_rule_and_novel_views():
  G, goae, image, c, _ = _setup()
  out = gi.invert(goae, G, image, c, neural_rendering_resolution=NRR)
  ws = out["ws"]
  # Unchanged latent: the edit path reproduces the reconstruction's mixed planes and image.
  # (The mask is a discontinuous function of depth -- texel floor, threshold -- so two compiled
  # graphs may disagree on a few border texels; compare planes where the masks agree.)
  same = gi.edit(goae, G, ws, ws, image, c, neural_rendering_resolution=NRR)
  scale = np.abs(np.asarray(out["planes"])).max()
  np.testing.assert_allclose(same["planes"][:, 1:], out["planes"][:, 1:], atol=1e-5 * scale)
  agree = np.abs(np.asarray(same["mask"]) - np.asarray(out["mask"])) < 1e-6
  assert agree.mean() > 0.99
  np.testing.assert_allclose(np.asarray(same["planes"])[:, 0][agree],
                             np.asarray(out["planes"])[:, 0][agree], atol=1e-5 * scale)
  ref = gi.render(G, ws, out["planes"], c, neural_rendering_resolution=NRR)
  assert float(np.mean(np.abs(np.asarray(same["image"]) - np.asarray(ref["image"])))) < 1e-3
  # F*_edit = F* + F(w_edit) - F(w).
  ws_edit = ws + 0.5 * jax.random.normal(jax.random.PRNGKey(7), (1, 1, ws.shape[-1]))
  edited = gi.edit(goae, G, ws, ws_edit, image, c, neural_rendering_resolution=NRR)
  f_w, _ = gi.backbone_head(G, ws)
  f_edit, _ = gi.backbone_head(G, ws_edit)
  np.testing.assert_allclose(edited["feature_map_adain"],
                             out["feature_map_adain"] + f_edit - f_w, atol=1e-4)
  assert not np.allclose(edited["image"], same["image"], atol=1e-3)
  # Any camera: a novel view of the mixed planes renders finite images.
  novel = gi.render(G, ws, out["planes"], Camera.look_at(yaw=[0.6, -0.6]).label)
  assert np.all(np.isfinite(np.asarray(novel["image"])))


def test_canonical_latents_use_the_frontal_pose():
  G, _, _, _, _ = _setup()
  z = jax.random.normal(jax.random.PRNGKey(5), (2, G.z_dim))
  np.testing.assert_array_equal(
      gi.canonical_latents(G, z), G.mapping(z, np.repeat(gi.C_FRONT[None], 2, axis=0)))
  assert not np.allclose(gi.canonical_latents(G, z), G.mapping(z, _setup()[3]), atol=1e-4)
  # The frontal camera looks at the origin from +z.
  np.testing.assert_allclose(gi.C_FRONT[[3, 7, 11]], [0, 0, 2.7])


def test_pipeline_rejects_bad_input():
  G, goae, image, c, _ = _setup()
  with pytest.raises(ValueError, match="spatial size"):
    gi.invert(goae, G, image[:, :64, :64], c)
  with pytest.raises(ValueError, match="channels-first"):
    gi.invert(goae, G, jnp.transpose(image, (0, 3, 1, 2)), c)
  with pytest.raises(ValueError, match="c: expected shape"):
    gi.invert(goae, G, image, c[:, :16])
  wrong_afa = gi.GOAE(goae.encoder_config, tiny_afa_config(feat_dim=32), goae.encoder, goae.afa)
  with pytest.raises(ValueError, match="32-channel feature maps"):
    gi.invert(wrong_afa, G, image, c)
  wrong_enc = gi.GOAE(tiny_encoder_config(w_dim=16), goae.afa_config, goae.encoder, goae.afa)
  with pytest.raises(ValueError, match="the encoder predicts ws"):
    gi.invert(wrong_enc, G, image, c)
  with pytest.raises(ValueError, match="ws"):
    gi.render(G, jnp.zeros((2, 3, 512)), jnp.zeros((2, 3, 256, 256, 32)), c)
