"""Identity loss / ID metric (pSp IDLoss, PREIM3D variants) and the ir_se50 reference kinds."""
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from conftest import assert_encoder_close, encoder_fixture, nchw_to_nhwc
from jaxinv.convert import irse as cirse
from jaxinv.convert import reference
from jaxinv.losses import arcface as idl
from jaxinv.ops.pooling import adaptive_avg_pool2d, adaptive_pool_matrix


@functools.lru_cache(maxsize=None)
def _setup():
  cfg, sd, io = encoder_fixture("ir_se50")
  _, variables = cirse.load_arcface(sd)
  return sd, io, variables


def _torch_adaptive_windows(n_in, n_out):
  """Independent statement of torch's rule: start = floor(i*n/m), end = ceil((i+1)*n/m)."""
  import math
  return [(math.floor(i * n_in / n_out), math.ceil((i + 1) * n_in / n_out)) for i in range(n_out)]


@pytest.mark.parametrize("n_in,n_out", [(188, 112), (16, 7), (7, 7), (5, 3), (256, 112)])
def test_adaptive_pool_windows(n_in, n_out):
  m = adaptive_pool_matrix(n_in, n_out)
  x = np.random.default_rng(0).standard_normal((1, n_in, 3, 2)).astype(np.float32)
  y = np.asarray(adaptive_avg_pool2d(jnp.asarray(x), (n_out, 3)))
  for i, (lo, hi) in enumerate(_torch_adaptive_windows(n_in, n_out)):
    np.testing.assert_allclose(y[0, i], x[0, lo:hi].mean(axis=0), rtol=1e-5, atol=1e-6)
  assert np.allclose(m.sum(axis=1), 1.0)


def test_pooled_image_matches_fixture():
  _, io, _ = _setup()
  pooled = idl.psp_id_preprocess(jnp.asarray(nchw_to_nhwc(io["idloss_x256"])))
  assert_encoder_close(pooled, nchw_to_nhwc(io["idloss_pooled112"]), "idloss_pooled112")


@pytest.mark.slow
def test_reference_kinds_match_fixture():
  sd, io, _ = _setup()
  f = reference.load("ir_se50", sd)
  assert_encoder_close(f(nchw_to_nhwc(io["x"])), io["embedding"], "embedding")
  g = reference.load("ir_se50_idloss", sd)
  assert_encoder_close(g(nchw_to_nhwc(io["idloss_x256"])), io["idloss_embedding"], "idloss_embedding")


@functools.lru_cache(maxsize=None)
def _jitted():
  from jaxinv.models.encoders.arcface import ArcFaceBackbone
  return (jax.jit(ArcFaceBackbone().apply),
          jax.jit(jax.value_and_grad(idl.id_loss, argnums=(1, 2)), static_argnames="crop"))


@pytest.mark.slow
def test_id_loss_value_convention_and_gradient():
  sd, io, v = _setup()
  x = jnp.asarray(nchw_to_nhwc(io["idloss_x256"]))
  _, vg = _jitted()
  # pSp: mean over the batch of 1 - <F(y_hat), F(y)>, with the fixture's embeddings.
  e = io["idloss_embedding"]
  val, (g, gt) = vg(v, x[::-1], x)
  np.testing.assert_allclose(val, np.mean(1 - np.sum(e * e[::-1], axis=1)), rtol=1e-4, atol=1e-6)
  assert np.all(np.isfinite(g)) and float(jnp.abs(g).max()) > 0
  # Outside the crop box nothing reaches the network.
  assert float(jnp.abs(g[:, :35]).max()) == 0.0 and float(jnp.abs(g[:, :, 220:]).max()) == 0.0
  # The target side is detached, as in pSp.
  assert float(jnp.abs(gt).max()) == 0.0
  # ID metric: the same cosine, per pair.
  sim = jax.jit(idl.id_similarity)(v, x, x[::-1])
  np.testing.assert_allclose(sim, np.sum(e * e[::-1], axis=1), rtol=1e-4, atol=1e-6)


def test_id_loss_gradient_matches_finite_differences_tiny():
  """The loss path (crop, adaptive pool, network, cosine, detach) on a tiny IR-SE embedder, fp64."""
  from jaxinv.models.encoders.arcface import l2_normalize
  from jaxinv.nn.irse import IRSEBody, irse_units
  body = IRSEBody(irse_units(((32, 2),), in_ch=32))
  rng = np.random.default_rng(0)
  with jax.enable_x64(True):
    x = jnp.asarray(rng.uniform(-1, 1, (2, 256, 256, 3)))
    y = jnp.asarray(rng.uniform(-1, 1, (2, 256, 256, 3)))
    proj = jnp.asarray(rng.standard_normal((3, 32)))
    v = jax.tree_util.tree_map(lambda a: jnp.asarray(a, jnp.float64),
                               body.init(jax.random.PRNGKey(0), jnp.zeros((1, 28, 28, 32))))

    def embed(img):
      h = idl.psp_id_preprocess(img)[:, ::4, ::4, :] @ proj  # [B, 28, 28, 32]
      return l2_normalize(body.apply(v, h).mean(axis=(1, 2)))

    def loss(a):
      return idl.id_loss_from_embeddings(embed(a), embed(y))

    g = jax.jit(jax.grad(loss))(x)
    loss = jax.jit(loss)
    d = jnp.asarray(rng.standard_normal(x.shape))
    eps = 1e-5
    fd = (loss(x + eps * d) - loss(x - eps * d)) / (2 * eps)
    np.testing.assert_allclose(float(jnp.vdot(g, d)), float(fd), rtol=1e-5)


@pytest.mark.slow
def test_multi_view_and_eg3d_crop():
  sd, io, v = _setup()
  embed, _ = _jitted()
  x = jnp.asarray(nchw_to_nhwc(io["idloss_x256"]))
  views = jnp.stack([x[::-1], x, x[::-1] * 0.5], axis=1)  # [B, 3, H, W, 3]
  mv = jax.jit(idl.multi_view_id_loss, static_argnames="crop")(v, x, x[::-1], views, 0.7, 0.3)
  e = lambda a: np.asarray(embed(v, idl.eg3d_id_preprocess(a)))
  ey = e(x)
  cos = lambda a: np.sum(e(a) * ey, axis=1)
  expected = 0.7 * np.mean(1 - cos(x[::-1])) + 0.3 * np.mean([1 - cos(views[:, i]) for i in range(3)])
  np.testing.assert_allclose(mv, expected, rtol=1e-4, atol=1e-6)
  # The EG3D path is a plain adaptive pool of the whole frame (no crop).
  np.testing.assert_allclose(idl.eg3d_id_preprocess(x), adaptive_avg_pool2d(x, 112))


def test_bad_inputs_are_refused():
  v = {"params": {}, "batch_stats": {}}
  x = jnp.zeros((1, 256, 256, 3))
  with pytest.raises(ValueError, match="channels-first"):
    idl.id_loss(v, jnp.zeros((1, 3, 256, 256)), jnp.zeros((1, 3, 256, 256)))
  with pytest.raises(ValueError, match=r"\[-1, 1\]"):
    idl.id_loss(v, x + 200.0, x)
  with pytest.raises(ValueError, match="256x256"):
    idl.id_loss(v, jnp.zeros((1, 128, 128, 3)), jnp.zeros((1, 128, 128, 3)))
  with pytest.raises(ValueError, match="crop"):
    idl.id_embed(v, x, crop="dlib")
  with pytest.raises(ValueError, match="same shape"):
    idl.id_loss(v, x, jnp.zeros((2, 256, 256, 3)))
  with pytest.raises(ValueError, match="config"):
    reference.load("ir_se50", {}, n_styles=3)
