"""Meshes from tri-planes: the decoded density on a grid, marching cubes, vertex colours, PLY/OBJ.

EG3D's own shape export (``gen_samples.py --shapes``) samples the raw density ``sigma`` (the
decoder's first output, before the ray marcher's softplus) on a cube of side ``box_warp`` and
extracts the level set ``sigma = 10``; we do the same (``level``), pad the grid with a value below
the level on every side so that the surface is closed (watertight) even where the object touches
the cube, and colour each vertex with the decoder's RGB features at that vertex.

Colours follow ``image_raw``'s display convention: the decoder's first three features are read as
values in [-1, 1] and mapped to [0, 1] by ``(v + 1) / 2`` (the neural-rendered image is shown the
same way).

Marching cubes comes from scikit-image (``pip install "jaxinv[mesh]"``); PLY/OBJ are written here
(binary little-endian PLY with per-vertex uchar RGB; OBJ with the common ``v x y z r g b`` colour
extension), readable by trimesh, MeshLab, Blender and Open3D.
"""
from __future__ import annotations

import functools
import os

import jax
import jax.numpy as jnp
import numpy as np

from jaxinv import checks
from jaxinv.nn.decoder import OSGDecoder
from jaxinv.render.renderer import run_model

DEFAULT_LEVEL = 10.0   # EG3D's shape-export threshold on the raw density
POINTS_PER_CALL = 1 << 16


@functools.lru_cache(maxsize=None)
def _decode_fn(options, lr_mul: float):
  decoder = OSGDecoder(output_dim=32, lr_mul=lr_mul)

  def fn(decoder_params, planes, points):
    out = run_model(planes, lambda f, d: decoder.apply(decoder_params, f, d), points, points,
                    options)
    return out["sigma"][..., 0], out["rgb"][..., :3]
  return jax.jit(fn)


def decode_points(G, planes, points, *, chunk: int = POINTS_PER_CALL):
  """Raw density and RGB features of ``G``'s decoder at world points.

  Args:
    G: an ``EG3DGenerator`` (its decoder and render options are used).
    planes: ``[1, 3, H, W, C]`` tri-planes.
    points: ``[N, 3]`` world points.
  Returns:
    ``(sigma [N], rgb [N, 3])`` numpy float32 (``rgb`` as the decoder's features, about [0, 1],
    read like ``image_raw``'s values).
  """
  checks.check_shape(planes, "planes", (1, 3, None, None, None), "[1, 3, H, W, C]")
  points = np.asarray(points, np.float32)
  checks.check_shape(points, "points", (None, 3), "[N, 3]")
  cfg = G.config
  fn = _decode_fn(cfg.render_options, float(cfg.render_options.decoder_lr_mul))
  dec = {"params": G.params["params"]["decoder"]}
  n = points.shape[0]
  sig, rgb = [], []
  for i in range(0, n, chunk):
    p = points[i:i + chunk]
    pad = chunk - p.shape[0] if n > chunk else 0
    if pad:  # one compiled shape for every chunk
      p = np.concatenate([p, np.zeros((pad, 3), np.float32)])
    s, c = fn(dec, planes, jnp.asarray(p)[None])
    s, c = np.asarray(s[0]), np.asarray(c[0])
    sig.append(s[:s.shape[0] - pad]), rgb.append(c[:c.shape[0] - pad])
  return np.concatenate(sig), np.concatenate(rgb)


def grid_points(resolution: int, box_side: float) -> np.ndarray:
  """``[R^3, 3]`` points of a regular grid spanning ``[-box/2, box/2]^3``, x slowest ("ij")."""
  t = np.linspace(-box_side / 2, box_side / 2, resolution, dtype=np.float32)
  x, y, z = np.meshgrid(t, t, t, indexing="ij")
  return np.stack([x, y, z], axis=-1).reshape(-1, 3)


def extract_mesh(G, planes, resolution: int = 128, *, level: float | None = None,
                 box_side: float | None = None):
  """Marching cubes on the decoded density of ``planes``.

  Args:
    G: the generator whose decoder reads the planes.
    planes: ``[1, 3, H, W, C]`` (one sample).
    resolution: grid points per side (EG3D exports 512; 128 is quick).
    level: density level of the surface (raw ``sigma``). None: EG3D's 10 where the density
      reaches it, else the middle of the sampled density range (untrained / toy generators).
    box_side: side of the sampled cube (default the planes' ``box_warp``).
  Returns:
    ``(vertices [V, 3] world units, faces [F, 3] int, colors [V, 3] float in [0, 1])``.
  Raises:
    ImportError: scikit-image is missing; ValueError: the density never crosses ``level``.
  """
  try:
    from skimage import measure
  except ImportError as e:  # pragma: no cover - exercised only without the extra
    raise ImportError('mesh extraction needs scikit-image: pip install "jaxinv[mesh]"') from e
  if int(resolution) != resolution or resolution < 8:
    raise ValueError(f"resolution must be an int >= 8, got {resolution!r}")
  resolution = int(resolution)
  box = float(G.config.render_options.box_warp if box_side is None else box_side)
  sigma, _ = decode_points(G, planes, grid_points(resolution, box))
  vol = sigma.reshape(resolution, resolution, resolution)
  lo, hi = float(vol.min()), float(vol.max())
  if level is None:
    level = DEFAULT_LEVEL if lo < DEFAULT_LEVEL < hi else 0.5 * (lo + hi)
  if not lo < level < hi:
    raise ValueError(f"level={level}: the decoded density spans [{lo:.4g}, {hi:.4g}] and never "
                     "crosses it; pass a level inside that range")
  # A border below the level closes the surface where the object meets the cube.
  vol = np.pad(vol, 1, mode="constant", constant_values=min(lo, level) - 1.0)
  spacing = box / (resolution - 1)
  verts, faces, _, _ = measure.marching_cubes(vol, level=level, spacing=(spacing,) * 3)
  verts = (verts - spacing - box / 2).astype(np.float32)  # undo the pad, centre the cube
  faces = faces[:, ::-1]  # counter-clockwise seen from outside (outward normals)
  _, rgb = decode_points(G, planes, verts)
  colors = np.clip((rgb + 1.0) / 2.0, 0.0, 1.0).astype(np.float32)
  return verts, faces.astype(np.int64), colors


def save_mesh(path, vertices, faces, colors=None) -> str:
  """Writes a triangle mesh as ``.ply`` (binary) or ``.obj``; returns the path.

  Args:
    vertices: ``[V, 3]``; faces: ``[F, 3]`` vertex indices; colors: ``[V, 3]`` in [0, 1] or None.
  """
  path = os.fspath(path)
  ext = os.path.splitext(path)[1].lower()
  v = np.asarray(vertices, np.float32)
  f = np.asarray(faces, np.int64)
  checks.check_shape(v, "vertices", (None, 3), "[V, 3]")
  checks.check_shape(f, "faces", (None, 3), "[F, 3]")
  if f.size and (f.min() < 0 or f.max() >= v.shape[0]):
    raise ValueError(f"faces: indices must lie in [0, {v.shape[0]}), got [{f.min()}, {f.max()}]")
  if colors is not None:
    checks.check_shape(colors, "colors", (v.shape[0], 3), "[V, 3] in [0, 1]")
    col = np.clip(np.rint(np.asarray(colors, np.float64) * 255), 0, 255).astype(np.uint8)
  if ext == ".ply":
    props = ["property float x", "property float y", "property float z"]
    vdt = [("x", "<f4"), ("y", "<f4"), ("z", "<f4")]
    if colors is not None:
      props += ["property uchar red", "property uchar green", "property uchar blue"]
      vdt += [("red", "u1"), ("green", "u1"), ("blue", "u1")]
    header = "\n".join(["ply", "format binary_little_endian 1.0", "comment written by jaxinv",
                        f"element vertex {v.shape[0]}", *props, f"element face {f.shape[0]}",
                        "property list uchar int vertex_indices", "end_header"]) + "\n"
    vert = np.empty(v.shape[0], dtype=vdt)
    vert["x"], vert["y"], vert["z"] = v[:, 0], v[:, 1], v[:, 2]
    if colors is not None:
      vert["red"], vert["green"], vert["blue"] = col[:, 0], col[:, 1], col[:, 2]
    face = np.empty(f.shape[0], dtype=[("n", "u1"), ("idx", "<i4", (3,))])
    face["n"], face["idx"] = 3, f
    with open(path, "wb") as fh:
      fh.write(header.encode("ascii"))
      fh.write(vert.tobytes())
      fh.write(face.tobytes())
  elif ext == ".obj":
    with open(path, "w") as fh:
      fh.write("# written by jaxinv\n")
      if colors is None:
        np.savetxt(fh, v, fmt="v %.6f %.6f %.6f")
      else:
        np.savetxt(fh, np.concatenate([v, col / 255.0], axis=1),
                   fmt="v %.6f %.6f %.6f %.4f %.4f %.4f")
      np.savetxt(fh, f + 1, fmt="f %d %d %d")
  else:
    raise ValueError(f"path: mesh files must end in .ply or .obj, got {path!r}")
  return path
