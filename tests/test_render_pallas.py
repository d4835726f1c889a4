"""The fused tri-plane ray-marching kernel (Pallas interpret mode on CPU) against independent references.

Three different computations are compared, so no test compares two copies of one formula:
  * the kernel (``raymarch.march``: one walk per block of rays, running transmittance),
  * its reference (``raymarch.march_reference``: batched jnp, cumprod), and the renderer's own XLA
    pieces (``triplane.sample_from_planes`` + ``OSGDecoder`` + ``marcher.composite``),
  * a float64 numpy brute force of the compositing (explicit product of transmittances per ray).
Sizes are odd on purpose (batch 3, 7 or 25 rays, 5 or 9 samples, 4 channels) and the inputs hold an
empty ray (misses the planes' cube: no weight, depth +inf) and opaque rays (total weight ~1).
"""
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxinv.nn.decoder import OSGDecoder, fused_weights
from jaxinv.ops.pallas import raymarch
from jaxinv.render import camera, marcher, rays, renderer, triplane
from jaxinv.render.options import PLANE_AXES_EG3D, RenderOptions

KW = dict(box_warp=1.0, plane_axes=PLANE_AXES_EG3D)
B, M, S, C, F = 3, 7, 9, 4, 3


def _decoder(c=C, f=F, seed=1):
  """An OSG-shaped MLP whose density follows feature channel 0 steeply: raw density ~ -95 at zero
  features (weight exactly 0: empty rays) and up to ~+100 where channel 0 is large (opaque rays).
  (numpy draws: no per-op compilation while building inputs.)"""
  rng = np.random.default_rng(seed)
  w_h = rng.normal(size=(c, 64)) * 0.3
  w_h[0, :8] = 4.0
  b_h = rng.normal(size=64) * 0.1
  b_h[:8] = -6.0
  w_o = rng.normal(size=(64, 1 + f)) * 0.2
  w_o[:8, 0] = 6.0
  b_o = rng.normal(size=1 + f) * 0.1
  b_o[0] = -95.0
  return raymarch.MLPDecoder(*(jnp.asarray(x, jnp.float32) for x in (w_h, b_h, w_o, b_o)))


def _raw_params(dec):
  """``OSGDecoder`` variables (raw, equalized-lr) whose effective weights are ``dec``."""
  return {"params": {"net_0": {"weight": dec.w_hidden * np.sqrt(dec.w_hidden.shape[0]),
                               "bias": dec.b_hidden},
                     "net_2": {"weight": dec.w_out * np.sqrt(64), "bias": dec.b_out}}}


def _planes(rng, shape):
  planes = rng.normal(size=shape) * 0.5
  planes[..., 0] = rng.uniform(0.0, 3.5, size=shape[:-1])
  return jnp.asarray(planes, jnp.float32)


def _inputs(b=B, m=M, s=S, c=C, h=6, w=5, seed=2):
  rng = np.random.default_rng(seed)
  planes = _planes(rng, (b, 3, h, w, c))
  origins = np.broadcast_to(np.array([0.0, 0.0, -2.0]), (b, m, 3))
  target = rng.uniform(-0.45, 0.45, size=(b, m, 3))
  target[0, 0] = [3.0, 0.0, 0.0]  # misses the cube: an empty ray
  dirs = target - origins
  dirs = dirs / np.linalg.norm(dirs, axis=-1, keepdims=True)
  depths = np.sort(rng.uniform(1.4, 2.6, size=(b, m, s, 1)), axis=2)
  return (planes, _decoder(c), jnp.asarray(origins, jnp.float32), jnp.asarray(dirs, jnp.float32),
          jnp.asarray(depths, jnp.float32))


def _march(white_back, with_weights):
  return jax.jit(functools.partial(raymarch.march, **KW, white_back=white_back,
                                   with_weights=with_weights, interpret=True, block_rays=16))


def _assert_close(a, r, atol, name):
  a, r = np.asarray(a), np.asarray(r)
  assert a.shape == r.shape, (name, a.shape, r.shape)
  assert np.array_equal(np.isinf(a), np.isinf(r)), name
  np.testing.assert_allclose(np.where(np.isinf(a), 0, a), np.where(np.isinf(r), 0, r), atol=atol,
                             rtol=0, err_msg=name)


def _brute_force_composite(colors, densities, depths, white_back):
  """float64 numpy, one ray at a time: transmittance as an explicit product."""
  colors, densities, depths = (np.asarray(x, np.float64) for x in (colors, densities, depths))
  b, m, s, f = colors.shape
  rgb, total, depth = np.zeros((b, m, f)), np.zeros((b, m, 1)), np.full((b, m, 1), np.inf)
  for i in range(b):
    for j in range(m):
      t, acc, dsum, wsum = 1.0, np.zeros(f), 0.0, 0.0
      for k in range(s - 1):
        sig = np.logaddexp(0.0, (densities[i, j, k, 0] + densities[i, j, k + 1, 0]) / 2 - 1)
        alpha = 1 - np.exp(-sig * (depths[i, j, k + 1, 0] - depths[i, j, k, 0]))
        wgt = alpha * t
        acc += wgt * (colors[i, j, k] + colors[i, j, k + 1]) / 2
        dsum += wgt * (depths[i, j, k, 0] + depths[i, j, k + 1, 0]) / 2
        wsum += wgt
        t *= 1 - alpha + 1e-10
      rgb[i, j] = acc + (1 - wsum if white_back else 0)
      total[i, j] = wsum
      if wsum > 0:
        depth[i, j] = dsum / wsum
  return rgb * 2 - 1, depth, total


@pytest.fixture(scope="module")
def inputs():
  return _inputs()


def test_inputs_hold_empty_and_opaque_rays(inputs):
  _, _, total, _ = jax.jit(functools.partial(raymarch.march_reference, **KW))(*inputs)
  total = np.asarray(total)
  assert total[0, 0, 0] == 0.0  # the ray outside the cube
  assert (total > 0.999).sum() >= 3 and ((total > 0.01) & (total < 0.99)).sum() >= 2, total[..., 0]


@pytest.mark.parametrize("white_back", [False, True])
def test_kernel_matches_reference_forward(inputs, white_back):
  got = _march(white_back, True)(*inputs)
  ref = raymarch.march_reference(*inputs, **KW, white_back=white_back, with_weights=True)
  # Raw densities reach ~100 here, so float32 rounding of the decoder's 64-term sums (a different
  # summation order in the kernel's dot) moves alphas by ~1e-5; the composite sums differ likewise.
  for name, a, r in zip(("rgb", "depth", "weights_sum", "weights"), got, ref):
    _assert_close(a, r, 2e-5 if name != "depth" else 1e-4, name)
  rgb, depth, total, _ = got
  assert np.isinf(np.asarray(depth)[0, 0, 0])
  if white_back:  # an empty ray shows the background: white, 1 after the [-1, 1] mapping
    np.testing.assert_allclose(np.asarray(rgb)[0, 0], 1.0, atol=1e-6)
  if white_back:
    return
  # Without weights requested the kernel returns the same composite and no weights.
  rgb2, depth2, total2, w2 = _march(white_back, False)(*inputs)
  assert w2 is None
  for a, r in ((rgb2, rgb), (depth2, depth), (total2, total)):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(r))


def test_reference_matches_brute_force_and_renderer_pieces(inputs):
  planes, dec, o, d, t = inputs
  b, m, s, _ = t.shape
  # The renderer's XLA pieces, decoding through the Flax OSGDecoder with equivalent raw params.
  points = (o[:, :, None] + t * d[:, :, None]).reshape(b, m * s, 3)
  feats = triplane.sample_from_planes(planes, points, 1.0, PLANE_AXES_EG3D)
  params = _raw_params(dec)
  out = OSGDecoder(output_dim=F).apply(params, feats)
  colors, dens = out["rgb"].reshape(b, m, s, F), out["sigma"].reshape(b, m, s, 1)
  for white_back in (False, True):
    ref = raymarch.march_reference(planes, dec, o, d, t, **KW, white_back=white_back,
                                   with_weights=True)
    pieces = marcher.composite(colors, dens, t, white_back=white_back)
    _assert_close(ref[0], pieces[0], 1e-5, "rgb vs renderer")
    _assert_close(ref[1], pieces[1], 1e-4, "depth vs renderer")
    _assert_close(ref[3], pieces[2], 1e-5, "weights vs renderer")
    brute = _brute_force_composite(colors, dens, t, white_back)
    _assert_close(ref[0], brute[0], 1e-5, "rgb vs float64 brute force")
    _assert_close(ref[2], brute[2], 1e-5, "total vs float64 brute force")
    # float32 alphas below ~6e-8 round to exactly 0 (no weight, depth +inf) where float64 keeps a
    # tiny weight and a finite depth: compare depths where the float64 weight is not negligible.
    seen = np.asarray(brute[2]) > 1e-6
    _assert_close(np.asarray(ref[1])[seen], brute[1][seen], 1e-4, "depth vs float64 brute force")
  # fused_weights applies exactly the gains of OSGDecoder's equalized layers.
  fw = fused_weights(params)
  for a, r in zip(fw, dec):
    np.testing.assert_allclose(np.asarray(a), np.asarray(r), rtol=1e-6)


def test_kernel_gradients_equal_autodiff_of_reference(inputs):
  cot = jnp.asarray(np.random.default_rng(5).normal(size=(B, M, F)), jnp.float32)

  def loss(fn, planes, dec, o, d, t):
    rgb, depth, total, _ = fn(planes, dec, o, d, t)
    return (jnp.sum(rgb * cot) + jnp.sum(total * 0.7)
            + jnp.sum(jnp.where(jnp.isinf(depth), 0.0, depth) * 0.1))

  kernel = functools.partial(raymarch.march, **KW, interpret=True, block_rays=16)
  reference = functools.partial(raymarch.march_reference, **KW)
  args = range(5)
  g_k = jax.jit(jax.grad(functools.partial(loss, kernel), argnums=tuple(args)))(*inputs)
  g_r = jax.jit(jax.grad(functools.partial(loss, reference), argnums=tuple(args)))(*inputs)
  names = ("planes", "decoder", "origins", "directions", "depths")
  for name, a, r in zip(names, g_k, g_r):
    for x, y in zip(jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(r)):
      assert np.all(np.isfinite(np.asarray(x))), name
      scale = max(1.0, float(np.abs(np.asarray(y)).max()))
      np.testing.assert_allclose(np.asarray(x), np.asarray(y), atol=1e-5 * scale, err_msg=name)
  # Gradients reach the planes' texels (the scatter-add of the bilinear weights) and every input.
  assert float(jnp.abs(g_k[0]).sum()) > 0 and float(jnp.abs(g_k[2]).sum()) > 0


def test_kernel_lowers_for_the_triton_gpu_backend(inputs):
  """Cross-platform lowering on this CPU host: the kernel becomes a Triton custom call for CUDA."""
  fn = jax.jit(functools.partial(raymarch.march, **KW, with_weights=True, block_rays=16))
  text = fn.trace(*inputs).lower(lowering_platforms=("cuda",)).as_text()
  assert "__gpu$xla.gpu.triton" in text and "eg3d_triplane_raymarch" in text


def test_kernel_refuses_bad_blocks(inputs):
  with pytest.raises(ValueError, match="block_rays"):
    raymarch.march(*inputs, **KW, interpret=True, block_rays=24)


# ------------------------------------------------------------------ through the renderer

OPTS = RenderOptions(depth_resolution=5, depth_resolution_importance=3)
R_PIX = 5  # 25 rays per image


@pytest.fixture(scope="module")
def scene():
  params = _raw_params(_decoder())
  planes = _planes(np.random.default_rng(3), (B, 3, 8, 8, C))
  c = camera.Camera.look_at(np.array([0.3, -0.2, 0.1]), np.array([0.0, 0.1, -0.1])).label
  return planes, params, c


@functools.lru_cache(maxsize=None)
def _render_fn(kernel, white_back, grad):
  opts = OPTS.replace(white_back=white_back)
  cot = jnp.asarray(np.random.default_rng(7).normal(size=(B, R_PIX * R_PIX, F)), jnp.float32)

  def f(planes, params, c):
    o, d = rays.rays_from_label(c, R_PIX)
    dec = fused_weights(params) if kernel == "pallas" else functools.partial(
        OSGDecoder(output_dim=F).apply, params)
    return renderer.render(planes, dec, o, d, opts, kernel=kernel, block_rays=16)

  if not grad:
    return jax.jit(f)

  def loss(planes, params, c):
    out = f(planes, params, c)
    rgb, depth, wsum = out
    return jnp.sum(rgb * cot) + jnp.sum(depth * 0.3) + jnp.sum(wsum), out
  return jax.jit(jax.grad(loss, argnums=(0, 1), has_aux=True))


def _check_renderer_outputs(got, ref):
  for name, a, r in zip(("rgb", "depth", "weights_sum"), got, ref):
    _assert_close(a, r, 2e-5, name)
  wsum = np.asarray(ref[2])
  assert wsum.max() > 0.99 and wsum.min() < 0.01, wsum[..., 0]


def test_renderer_pallas_equals_xla_white_background(scene):
  _check_renderer_outputs(_render_fn("pallas", True, False)(*scene),
                          _render_fn("xla", True, False)(*scene))


def test_renderer_pallas_values_and_gradients_equal_xla(scene):
  g_p, out_p = _render_fn("pallas", False, True)(*scene)
  g_x, out_x = _render_fn("xla", False, True)(*scene)
  _check_renderer_outputs(out_p, out_x)
  for a, r in zip(jax.tree_util.tree_leaves(g_p), jax.tree_util.tree_leaves(g_x)):
    scale = max(1.0, float(np.abs(np.asarray(r)).max()))
    np.testing.assert_allclose(np.asarray(a), np.asarray(r), atol=2e-5 * scale)
  assert float(jnp.abs(g_p[0]).sum()) > 0


def test_renderer_kernel_switch_errors():
  planes = jnp.zeros((1, 3, 4, 4, C))
  o = jnp.zeros((1, 4, 3))
  with pytest.raises(ValueError, match="render_kernel"):
    renderer.render(planes, lambda f, d: None, o, o, OPTS, kernel="cuda")
  with pytest.raises(TypeError, match="MLPDecoder"):
    renderer.render(planes, lambda f, d: None, o, o, OPTS, kernel="pallas")
  assert renderer.resolve_kernel("auto") == ("xla" if jax.default_backend() != "gpu" else
                                             renderer.resolve_kernel("auto"))


@pytest.mark.skipif(jax.default_backend() == "gpu", reason="the probe succeeds on a GPU")
def test_auto_probe_falls_back_to_xla_with_a_warning():
  """'auto' on a GPU probes the compiled kernel once; where it cannot run it warns and uses XLA
  (here on CPU, where a non-interpret pallas_call cannot lower), also under a transfer guard."""
  with jax.transfer_guard("disallow"):
    with pytest.warns(UserWarning, match="does not run here") as record:
      ok = renderer._pallas_works_here.__wrapped__()
  assert ok is False
  assert "transfer" not in str(record[0].message).lower(), record[0].message
