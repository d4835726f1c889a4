"""Meshes from tri-planes: an analytic ball through EG3D's decoder, watertight, right radius, files
that trimesh reads back (PLY and OBJ), and clear errors."""
import numpy as np
import pytest

import jax.numpy as jnp

from jaxinv.inversion import mesh as mesh_lib
from jaxinv.inversion.result import Inversion
from jaxinv.models.eg3d import EG3DConfig, EG3DGenerator, TINY_INIT_KWARGS

RADIUS = 0.3
RES = 64  # plane texels per side (the decoder only needs bilinear reads)


def _ball_generator_and_planes():
  """Planes + decoder whose raw density is ``10 + 100 (RADIUS^2 - |p|^2)`` (level 10: the ball).

  Plane features (channel 0): XY plane x^2 + y^2, XZ plane z^2, ZX plane 0, so the decoder's plane
  mean is |p|^2 / 3. The hidden unit 0 computes softplus(10 - |p|^2) ~= 10 - |p|^2 (error < 1e-4),
  and sigma = 100 * (h - 10) + 10 + 100 RADIUS^2. Only the decoder's parameters are needed.
  """
  cfg = EG3DConfig.from_init_kwargs(TINY_INIT_KWARGS)
  t = ((2 * np.arange(RES) + 1) / RES - 1) / 2  # world coordinate of each texel centre (box 1)
  planes = np.zeros((1, 3, RES, RES, 32), np.float32)
  planes[0, 0, :, :, 0] = t[None, :] ** 2 + t[:, None] ** 2  # [grid-y=y, grid-x=x]
  planes[0, 1, :, :, 0] = (t[:, None] ** 2) * np.ones((1, RES))  # grid-y = z
  w0 = np.zeros((32, 64), np.float32)
  w0[0, 0] = -3 * np.sqrt(32)
  b0 = np.zeros(64, np.float32)
  b0[0] = 10.0
  w2 = np.zeros((64, 33), np.float32)
  w2[0, 0] = 100 * np.sqrt(64)
  w2[0, 1] = 0.5 * np.sqrt(64)  # some colour variation (red channel)
  b2 = np.zeros(33, np.float32)
  b2[0] = -1000 + 10 + 100 * RADIUS ** 2
  dec = {"net_0": {"weight": w0, "bias": b0}, "net_2": {"weight": w2, "bias": b2}}
  G = EG3DGenerator(cfg, {"params": {"decoder": dec}})
  return G, jnp.asarray(planes)


def test_ball_mesh_radius_and_watertight(tmp_path):
  trimesh = pytest.importorskip("trimesh")
  G, planes = _ball_generator_and_planes()
  v, f, col = mesh_lib.extract_mesh(G, planes, resolution=48)
  r = np.linalg.norm(v, axis=1)
  spacing = 1 / 47
  assert abs(r.mean() - RADIUS) < 0.25 * spacing, r.mean()
  assert r.max() - r.min() < 1.5 * spacing
  assert col.shape == v.shape and col.min() >= 0 and col.max() <= 1
  m = trimesh.Trimesh(v, f, process=True)
  assert m.is_watertight
  np.testing.assert_allclose(m.volume, 4 / 3 * np.pi * RADIUS ** 3, rtol=0.03)
  # Outward normals: the density decreases outwards.
  assert m.volume > 0

  # Through Inversion.save_mesh: PLY and OBJ that trimesh reads back.
  inv = Inversion(G, jnp.zeros((1, 14, 512)), jnp.zeros((1, 25)), "goae", planes=planes)
  for ext in (".ply", ".obj"):
    path = inv.save_mesh(tmp_path / f"ball{ext}", resolution=32)
    back = trimesh.load(path, process=False, force="mesh")
    v2, f2, c2 = inv.mesh(resolution=32)
    assert back.vertices.shape == v2.shape and back.faces.shape == f2.shape
    np.testing.assert_allclose(back.vertices, v2, atol=1e-5)
    np.testing.assert_array_equal(back.faces, f2)
    assert back.is_watertight
    if ext == ".ply":
      got = np.asarray(back.visual.vertex_colors)[:, :3]
      np.testing.assert_array_equal(got, np.rint(c2 * 255).astype(np.uint8))


def test_mesh_errors(tmp_path):
  G, planes = _ball_generator_and_planes()
  with pytest.raises(ValueError, match="level=1000000.0: .*never crosses"):
    mesh_lib.extract_mesh(G, planes, resolution=16, level=1e6)
  with pytest.raises(ValueError, match="resolution"):
    mesh_lib.extract_mesh(G, planes, resolution=4)
  inv = Inversion(G, jnp.zeros((1, 14, 512)), jnp.zeros((1, 25)), "goae", planes=planes)
  with pytest.raises(ValueError, match=r"path: .*\.ply or \.obj"):
    inv.save_mesh(tmp_path / "ball.stl", resolution=16)
  with pytest.raises(ValueError, match="index"):
    inv.mesh(resolution=16, index=3)
  with pytest.raises(ValueError, match="faces"):
    mesh_lib.save_mesh(tmp_path / "x.ply", np.zeros((3, 3)), np.array([[0, 1, 5]]))
