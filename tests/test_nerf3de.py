"""NeRF-3DE on EG3D: the two encoders' shapes and the inference pipeline end to end on the tiny
EG3D generator, with finite gradients for both encoders."""
from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxinv.inversion import nerf3de as n3
from jaxinv.models.encoders.nerf3de import NeRF3DEConfig, base_encoder, refining_encoder
from jaxinv.render.camera import mirror_label

SMALL = NeRF3DEConfig(input_size=32, backbone="small", small_widths=(16, 32), small_stem=16)


@functools.lru_cache(maxsize=None)
def _generator():
  from jaxinv.models.eg3d import tiny_eg3d
  return tiny_eg3d(neural_rendering_resolution=16)


def _cameras(b=2):
  front = np.array([1, 0, 0, 0, 0, -1, 0, 0, 0, 0, -1, 2.7, 0, 0, 0, 1,
                    4.2647, 0, 0.5, 0, 4.2647, 0.5, 0, 0, 1], np.float32)
  c = np.tile(front, (b, 1))
  return jnp.asarray(c)


def test_encoder_shapes_and_config_checks():
  x = jnp.zeros((2, 32, 32, 3))
  base, ref = base_encoder(SMALL), refining_encoder(SMALL)
  vb = base.init(jax.random.PRNGKey(0), x)
  vr = ref.init(jax.random.PRNGKey(1), jnp.zeros((2, 32, 32, 6)))
  assert base.apply(vb, x).shape == (2, 512)
  assert ref.apply(vr, jnp.zeros((2, 32, 32, 6))).shape == (2, 14, 512)
  with pytest.raises(ValueError, match="6"):
    ref.apply(vr, x)
  with pytest.raises(ValueError, match="256"):
    NeRF3DEConfig(input_size=64, backbone="irse50")
  with pytest.raises(ValueError, match="backbone"):
    NeRF3DEConfig(backbone="resnet")
  # The full-size refiner is ReStyle-pSp's 6-channel GradualStyleEncoder with 14 styles.
  full = jax.eval_shape(lambda: refining_encoder(NeRF3DEConfig()).init(
      jax.random.PRNGKey(0), jnp.zeros((1, 256, 256, 6))))
  assert full["params"]["input_layer"]["conv"]["kernel"].shape == (3, 3, 6, 64)
  assert "style_13" in full["params"]


@pytest.mark.slow
def test_pipeline_end_to_end_on_tiny_eg3d_with_finite_gradients():
  G = _generator()
  model = n3.NeRF3DE.build(SMALL)
  params = model.init(jax.random.PRNGKey(0), w_avg=jnp.full((512,), 0.1))
  c = _cameras()
  x = jnp.tanh(jax.random.normal(jax.random.PRNGKey(1), (2, 128, 128, 3)))

  def loss(p, G):
    out = n3.invert(model, p, G, x, c, iterations=1)
    xs = n3.to_encoder_size(x, SMALL.input_size)
    return jnp.mean((out["image_resized"] - xs) ** 2) + jnp.mean(out["w_base"] ** 2), out

  (value, out), grads = jax.jit(jax.value_and_grad(loss, has_aux=True))(params, G)
  assert out["ws"].shape == (2, 14, 512) and out["w_base"].shape == (2, 512)
  assert len(out["ws_steps"]) == 2 and len(out["images"]) == 2
  assert out["image"].shape == (2, 128, 128, 3)
  # The base code is one w repeated; the refinement moves the rows apart.
  np.testing.assert_array_equal(np.asarray(out["ws_steps"][0][:, 0]), np.asarray(out["w_base"]))
  np.testing.assert_array_equal(np.asarray(out["ws_steps"][0][:, 3]), np.asarray(out["w_base"]))
  assert np.std(np.asarray(out["ws"]), axis=1).max() > 0
  assert np.isfinite(float(value))
  for group in ("base", "refiner"):
    leaves = jax.tree_util.tree_leaves(grads[group])
    assert all(np.all(np.isfinite(np.asarray(g))) for g in leaves), group
    assert sum(float(jnp.sum(jnp.abs(g))) for g in leaves) > 0, group
  # ReStyle: the render fed back to the refiner is detached (no gradient through x_hat).
  xs = n3.to_encoder_size(x, SMALL.input_size)
  g = jax.grad(lambda xh: jnp.sum(n3.refine_step(model, params, xs, xh, out["ws_steps"][0])))(xs)
  assert float(jnp.sum(jnp.abs(g))) == 0.0


def test_invert_checks_inputs():
  model = n3.NeRF3DE.build(SMALL)
  params = model.init(jax.random.PRNGKey(0))

  class _NoG:
    num_ws = 14

  with pytest.raises(ValueError, match="iterations"):
    n3.invert(model, params, _NoG(), jnp.zeros((1, 32, 32, 3)), _cameras(1), iterations=-1)
  with pytest.raises(ValueError, match="c"):
    n3.invert(model, params, _NoG(), jnp.zeros((1, 32, 32, 3)), _cameras(2))
  assert mirror_label(_cameras(1)).shape == (1, 25)
