"""The fused compositing kernel (interpret mode on CPU) against its pure-jnp reference."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxinv.ops.pallas import raymarch
from jaxinv.render import marcher


def _inputs(b, m, s, c, seed=0):
  k1, k2, k3 = jax.random.split(jax.random.PRNGKey(seed), 3)
  colors = jax.random.uniform(k1, (b, m, s, c))
  dens = jax.random.normal(k2, (b, m, s, 1)) * 4
  dens = dens.at[0, 0].set(-200.0)  # an empty ray (depth becomes +inf before the clamp)
  dens = dens.at[0, 1].set(60.0)  # an opaque ray
  depths = jnp.sort(jax.random.uniform(k3, (b, m, s, 1)), axis=2) + 2.0
  return colors, dens, depths


@pytest.mark.parametrize("shape,block", [((1, 5, 6, 3), 4), ((2, 7, 9, 32), 8)])
@pytest.mark.parametrize("white_back", [False, True])
def test_kernel_matches_reference(shape, block, white_back):
  args = _inputs(*shape)
  got = raymarch.composite(*args, white_back=white_back, interpret=True, block_rays=block)
  ref = raymarch.composite_reference(*args, white_back=white_back)
  for name, a, r in zip(("rgb", "depth", "weights"), got, ref):
    a, r = np.asarray(a), np.asarray(r)
    assert a.shape == r.shape, name
    assert np.array_equal(np.isinf(a), np.isinf(r)), name
    np.testing.assert_allclose(np.where(np.isinf(a), 0, a), np.where(np.isinf(r), 0, r), atol=2e-6,
                               err_msg=name)
  assert np.isinf(np.asarray(got[1])[0, 0, 0])


def test_reference_equals_the_renderer_marcher():
  args = _inputs(2, 4, 6, 3, seed=1)
  for a, r in zip(raymarch.composite_reference(*args), marcher.composite(*args)):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(r))


def test_renderer_with_fused_composite_interpret(monkeypatch):
  import functools
  from jaxinv.nn.decoder import OSGDecoder
  from jaxinv.render import camera, rays, renderer
  from jaxinv.render.options import RenderOptions
  # Route the renderer's kernel call through interpret mode so it runs on CPU.
  monkeypatch.setattr(raymarch, "composite",
                      functools.partial(raymarch.composite, interpret=True, block_rays=16))
  opts = RenderOptions(depth_resolution=5, depth_resolution_importance=3)
  planes = jax.random.normal(jax.random.PRNGKey(0), (1, 3, 8, 8, 4))
  dec = OSGDecoder(output_dim=3)
  params = dec.init(jax.random.PRNGKey(1), jnp.zeros((1, 3, 2, 4)))
  o, d = rays.rays_from_label(camera.Camera.look_at(0.2, 0.0).label, 4)
  a = renderer.render(planes, functools.partial(dec.apply, params), o, d, opts)
  b = renderer.render(planes, functools.partial(dec.apply, params), o, d, opts, fused_composite=True)
  for x, y in zip(a, b):
    np.testing.assert_allclose(np.asarray(x), np.asarray(y), atol=2e-6)
