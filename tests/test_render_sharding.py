"""Batch-sharded forward passes on 8 fake CPU devices equal the single-device result.

Each check runs in a subprocess with ``--xla_force_host_platform_device_count=8`` so the rest of the
suite keeps one device.
"""
import os
import pathlib
import subprocess
import sys
import textwrap

import pytest

from jaxinv.parallel import sharding

REPO = pathlib.Path(__file__).resolve().parents[1]

_PRELUDE = """
import functools, numpy as np, jax, jax.numpy as jnp
assert jax.device_count() == 8, jax.devices()
from jaxinv.parallel import sharding
mesh = sharding.make_mesh()

def assert_batch_sharded(m, full):
  # each of the 8 devices holds exactly its own image of the batch (a replicated array would
  # also span 8 devices, but every shard would hold the whole batch)
  assert len(m.sharding.device_set) == 8, m.sharding
  full = np.asarray(full)
  rows = []
  for shard in m.addressable_shards:
    idx = range(*shard.index[0].indices(m.shape[0]))
    assert len(idx) == 1, (shard.index, m.sharding)
    rows.append(idx[0])
    np.testing.assert_allclose(np.asarray(shard.data), full[shard.index], atol=1e-4)
  assert sorted(rows) == list(range(8)), rows
"""

RENDER = _PRELUDE + """
from jaxinv.nn.decoder import OSGDecoder
from jaxinv.render import camera, rays, renderer
from jaxinv.render.options import RenderOptions
opts = RenderOptions(depth_resolution=6, depth_resolution_importance=6)
dec = OSGDecoder(output_dim=4)
params = dec.init(jax.random.PRNGKey(1), jnp.zeros((1, 3, 2, 8)))
planes = jax.random.normal(jax.random.PRNGKey(0), (8, 3, 16, 16, 8))
c = camera.Camera.look_at(np.linspace(-0.5, 0.5, 8), np.linspace(-0.2, 0.2, 8)).label

@jax.jit
def f(params, planes, c):
  o, d = rays.rays_from_label(c, 8)
  return renderer.render(planes, functools.partial(dec.apply, params), o, d, opts)

single = f(params, planes, c)
sp, sc = sharding.shard_batch((planes, c), mesh)
assert_batch_sharded(sp, planes)
multi = f(sharding.replicate(params, mesh), sp, sc)
for a, b in zip(single, multi):
  assert_batch_sharded(b, a)
  np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=1e-5)
print("OK")
"""

GENERATOR = _PRELUDE + """
from jaxinv.models.eg3d import tiny_eg3d
G = tiny_eg3d(neural_rendering_resolution=16)
z = jax.random.normal(jax.random.PRNGKey(0), (8, G.config.z_dim))
from jaxinv.render import camera
c = camera.Camera.look_at(np.linspace(-0.5, 0.5, 8), 0.0).label
single = G(z, c)
sz, sc = sharding.shard_batch((z, c), mesh)
Gr = sharding.replicate(G, mesh)
multi = jax.jit(lambda G, z, c: G(z, c))(Gr, sz, sc)
for k in single:
  assert_batch_sharded(multi[k], single[k])
  np.testing.assert_allclose(np.asarray(single[k]), np.asarray(multi[k]), atol=1e-4, err_msg=k)
print("OK")
"""


def _run(code):
  env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=8",
             JAX_PLATFORMS="cpu", PYTHONPATH=str(REPO))
  r = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True,
                     env=env, cwd=REPO, timeout=600)
  assert r.returncode == 0 and r.stdout.strip().endswith("OK"), r.stdout[-3000:] + r.stderr[-3000:]


def test_logical_rules_are_data():
  assert sharding.logical_to_spec(("batch", "height", None)) == sharding.PartitionSpec("data", None, None)
  custom = (("batch", None), ("height", "data"))
  assert sharding.logical_to_spec(("batch", "height"), custom) == sharding.PartitionSpec(None, "data")


def test_render_sharded_over_8_devices_equals_single_device():
  _run(RENDER)


@pytest.mark.slow
def test_generator_sharded_over_8_devices_equals_single_device():
  pytest.importorskip("jaxinv.models.eg3d")
  _run(GENERATOR)
