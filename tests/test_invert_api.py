"""``jaxinv.invert`` end to end on the tiny EG3D (random weights) with tiny stand-in encoders:
every method, single image and batch, uint8 and float input; rendering, editing rules; bad input.

The stand-in encoders (``_invert_helpers``) have the released networks' call signatures; the real
architectures are tested against the official fixtures elsewhere. LPIPS is not used (L2-only
baselines); the optimisation baselines go through ``jaxinv.invert`` in ``test_invert_optimize`` and ``test_invert_cli``.
"""
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from PIL import Image

import jaxinv
from _invert_helpers import goae_model, psp_checkpoint, setup, triplanenet_checkpoint
from jaxinv.inversion.result import Inversion

K = 6


def _uint8(target):
  return np.asarray(np.clip(np.rint((np.asarray(target) + 1) * 127.5), 0, 255), np.uint8)


def _weights(method):
  G, _, _ = setup()
  enc = {"psp": psp_checkpoint(), "e4e": psp_checkpoint(), "preim3d": psp_checkpoint(),
         "triplanenet": triplanenet_checkpoint(), "goae": goae_model()}.get(method)
  if method == "nerf3de":
    n3 = pytest.importorskip("jaxinv.inversion.nerf3de")
    from jaxinv.models.encoders.nerf3de import NeRF3DEConfig
    model = n3.NeRF3DE.build(NeRF3DEConfig(backbone="small", input_size=64))
    enc = (model, model.init(jax.random.PRNGKey(7)))
  return {"generator": G, "encoder": enc}


@functools.lru_cache(maxsize=None)
def _pair(method):
  """(inversion of one uint8 image, inversion of the float batch of two)."""
  G, c, target = setup()
  w = _weights(method)
  one = jaxinv.invert(_uint8(target)[0], c[0], method=method, weights=w)
  two = jaxinv.invert(target, c, method=method, weights=w)
  return one, two


@pytest.mark.parametrize("method", ["psp", "e4e", "preim3d", "triplanenet", "goae", "nerf3de"])
def test_encoder_methods_single_and_batch(method):
  G, c, target = setup()
  one, two = _pair(method)
  assert isinstance(one, Inversion) and one.method == method
  assert one.ws.shape == (1, G.num_ws, 512) and two.ws.shape == (2, G.num_ws, 512)
  assert two.c.shape == (2, 25)
  np.testing.assert_allclose(two.c, c)
  # uint8 of the same picture: the same codes up to the 8-bit rounding of the input.
  np.testing.assert_allclose(one.ws[0], two.ws[0], atol=0.05 * float(jnp.abs(two.ws).max()))
  if method == "triplanenet":
    assert two.offsets.shape == (2, 3, 256, 256, 32)
  if method == "goae":
    assert two.planes.shape == (2, 3, 256, 256, 32) and "feature_map_adain" in two.extra


def test_render_depth_views_and_slices():
  G, c, target = setup()
  _, inv = _pair("psp")
  out = inv.render()
  assert out["image"].shape == (2, 128, 128, 3) and out["image_depth"].shape == (2, 16, 16, 1)
  ref = G.synthesis(inv.ws, c)
  np.testing.assert_allclose(out["image"], ref["image"], atol=1e-5)
  side = inv.render(yaw=0.4, pitch=0.1)["image"]
  assert side.shape == (2, 128, 128, 3) and not np.allclose(side, out["image"])
  np.testing.assert_allclose(inv.render(jaxinv.Camera.look_at(0.4, 0.1))["image"], side, atol=1e-6)
  assert inv.depth().shape == (2, 16, 16, 1)
  assert inv[1].ws.shape == (1, G.num_ws, 512) and len(inv) == 2
  leaves = jax.tree_util.tree_leaves(inv)
  assert leaves and all(hasattr(x, "shape") for x in leaves)
  with pytest.raises(ValueError, match="c or yaw"):
    inv.render(c, yaw=0.1)
  with pytest.raises(ValueError, match="3 cameras for a batch of 2"):
    inv.render(jnp.concatenate([c, c[:1]]))


def test_edit_rules_and_alpha_zero_identity():
  G, c, _ = setup()
  d = jax.random.normal(jax.random.PRNGKey(9), (512,))
  for method in ("psp", "triplanenet", "goae"):
    _, inv = _pair(method)
    same = inv.edit(d, 0.0)
    np.testing.assert_array_equal(same.ws, inv.ws)
    a, b = same.triplanes(), inv.triplanes()
    np.testing.assert_allclose(a, b, atol=1e-4 * float(jnp.abs(b).max()), err_msg=method)
    moved = inv.edit(d, 2.0)
    np.testing.assert_allclose(moved.ws, inv.ws + 2.0 * d, atol=1e-5)
    if method == "triplanenet":  # the offsets ride on the edited backbone planes
      np.testing.assert_allclose(moved.triplanes(), G.planes(moved.ws) + inv.offsets, atol=1e-5)
  with pytest.raises(ValueError, match="direction"):
    inv.edit(jnp.zeros((3, 512)), 1.0)
  with pytest.raises(ValueError, match="alpha"):
    inv.edit(d, jnp.ones(2))


def test_inputs_paths_pil_and_lists(tmp_path):
  G, c, target = setup()
  u8 = _uint8(target)
  p = tmp_path / "a.png"
  Image.fromarray(u8[0]).save(p)
  w = _weights("psp")
  ref = jaxinv.invert(u8[:1], c[:1], method="psp", weights=w).ws
  for image in (str(p), Image.fromarray(u8[0]), [p], [u8[0]]):
    np.testing.assert_allclose(jaxinv.invert(image, c[0], method="psp", weights=w).ws, ref,
                               atol=1e-5)
  # Another size is resized to the generator's.
  small = np.asarray(Image.fromarray(u8[0]).resize((64, 64)))
  assert jaxinv.invert(small, c[0], method="psp", weights=w).ws.shape == ref.shape


def test_bad_input_is_named(tmp_path):
  G, c, target = setup()
  w = _weights("psp")
  inv = functools.partial(jaxinv.invert, weights=w)
  cases = [
      (dict(image=target, pose=c, method="nope"), ValueError, "method: expected one of"),
      (dict(image=target, pose=c, method="zignerf", weights=dict(generator=str(tmp_path / "g.npz"),
                                                                  encoder=str(tmp_path / "i.npz"))),
       FileNotFoundError, "weights.generator: no such file"),
      (dict(image=np.transpose(np.asarray(target), (0, 3, 1, 2)), pose=c, method="psp"),
       ValueError, "image.*channels-first"),
      (dict(image=target * 3, pose=c, method="psp"), ValueError, r"image: values must lie in \[-1"),
      (dict(image=np.zeros((1, 8, 8, 3), np.int16), pose=c[:1], method="psp"), TypeError,
       "image: expected uint8 or float"),
      (dict(image=np.zeros((8, 8), np.uint8), pose=c[:1], method="psp"), ValueError, "image"),
      (dict(image=target[:, :, :100], pose=c, method="psp"), ValueError, "image: expected square"),
      (dict(image=target, pose=c[:, :16], method="psp"), ValueError, "pose"),
      (dict(image=target, pose=jnp.concatenate([c, c]), method="psp"), ValueError,
       "pose: 4 cameras for a batch of 2"),
      (dict(image=target, pose="front", method="psp"), TypeError, "pose"),
      (dict(image=str(tmp_path / "missing.png"), pose=c[0], method="psp"), FileNotFoundError,
       "image: no such file"),
      (dict(image=target, pose=c, method="psp", steps=3), TypeError, "unknown option"),
      (dict(image=target, pose=c, method="w", stepz=3), TypeError, r"unknown option\(s\) \['stepz'\]"),
      (dict(image=target, pose=c, method="pti", pivot="nope", pivot_steps=K, steps=K),
       ValueError, "pivot"),
      (dict(image=[], pose=c, method="psp"), ValueError, "image: empty list"),
      (dict(image=object(), pose=c, method="psp"), TypeError, "image: expected a path"),
  ]
  for kw, err, msg in cases:
    with pytest.raises(err, match=msg):
      inv(**kw)
  (tmp_path / "text.png").write_text("not an image")
  with pytest.raises(ValueError, match="image: .* not an image"):
    inv(str(tmp_path / "text.png"), c[0], method="psp")
  with pytest.raises(ValueError, match="needs its encoder"):
    jaxinv.invert(target, c, method="goae", weights={"generator": G})
  with pytest.raises(TypeError, match=r"weights: unknown key\(s\) \['decoder'\]"):
    jaxinv.invert(target, c, method="psp", weights={"generator": G, "decoder": 1})
  with pytest.raises(FileNotFoundError, match="weights.generator"):
    jaxinv.invert(target, c, method="w", weights={"generator": str(tmp_path / "g.pkl")})
  with pytest.raises(TypeError, match="weights.encoder"):
    jaxinv.invert(target, c, method="psp", weights={"generator": G, "encoder": 3})
  with pytest.raises(TypeError, match="key"):
    jaxinv.invert(target, c, method="psp", weights=w, key=3)
