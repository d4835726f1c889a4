"""``Inversion``: what ``jaxinv.invert`` returns, and everything a user does next with it.

An ``Inversion`` is an immutable pytree (leaves: the generator's parameters, ``ws``, ``c`` and the
method's tri-plane state; static: the method name), so it can be passed through ``jax.jit`` and
``jax.tree_util``. What each method keeps:

==============================  ===========================================================
method                          state
==============================  ===========================================================
psp, e4e, preim3d, w, wplus,    ``ws`` only: the render is ``G.synthesis(ws, c)``
nerf3de
pti                             ``ws`` (the pivot) and ``G`` = the **tuned** generator
triplanenet, triplane_opt       ``offsets`` dT; ``planes = G.planes(ws) + dT``
goae                            ``planes`` (the occlusion-aware mix) and
                                ``extra['feature_map_adain']`` (F*, the AFA-refined features)
==============================  ===========================================================

Editing (``edit``) follows each method's own rule:
- latent methods (and PTI, with its tuned generator): ``ws + alpha * direction``;
- TriPlaneNet / tri-plane optimisation keep the offsets (TriPlaneNet App. C, Eq. 16):
  ``T_edit = (G(w) + dT) + G(w_edit) - G(w) = G(w_edit) + dT``;
- GOAE (Eq. 9): ``F*_edit = F* + F(w_edit) - F(w)``, the backbone continues from ``F*_edit`` and
  the result is re-mixed with ``G.planes(w_edit)`` under a visibility mask recomputed from the
  input view (``jaxinv.inversion.goae.edit_forward``'s rule, here from the stored F*).

Cameras: ``c`` is ``[B, 25]`` (EG3D label), a single ``[25]`` label or a ``jaxinv.Camera``;
``yaw``/``pitch`` (radians) place cameras on the generator's look-at orbit
(``render_options.avg_camera_radius`` around ``avg_camera_pivot``).
"""
from __future__ import annotations

import dataclasses
import os
from typing import Any, Optional

import jax
import jax.numpy as jnp
import numpy as np

from jaxinv import checks
from jaxinv.render.camera import Camera

LATENT_METHODS = ("psp", "e4e", "preim3d", "w", "wplus", "nerf3de", "zignerf")
OFFSET_METHODS = ("triplanenet", "triplane_opt")
METHODS = LATENT_METHODS + OFFSET_METHODS + ("pti", "goae")


def camera_label(c, batch: int | None = None, name: str = "c") -> jnp.ndarray:
  """``c`` as ``[B, 25]`` float32: accepts ``[25]``, ``[B, 25]`` or a ``Camera``.

  A single camera is repeated to ``batch`` rows; ``batch=None`` keeps what was given.
  """
  if isinstance(c, Camera):
    c = c.label
  if isinstance(c, (list, tuple)):
    c = np.asarray(c, np.float32)
  if not hasattr(c, "shape"):
    raise TypeError(f"{name}: expected a camera label [25] / [B, 25] or a jaxinv.Camera, got "
                    f"{type(c).__name__}")
  if c.ndim == 1:
    checks.check_shape(c, name, (25,), "one camera label [25]")
    c = c[None]
  checks.check_shape(c, name, (None, 25), "camera labels [B, 25] (16 cam2world + 9 intrinsics)")
  checks.check_floating(c, name)
  checks.check_finite(c, name)
  c = jnp.asarray(c, jnp.float32)
  if batch is not None and c.shape[0] != batch:
    if c.shape[0] != 1:
      raise ValueError(f"{name}: {c.shape[0]} cameras for a batch of {batch} (give 1 or {batch})")
    c = jnp.broadcast_to(c, (batch, 25))
  return c


def orbit_label(G, yaw, pitch=0.0) -> np.ndarray:
  """Look-at cameras ``[N, 25]`` on ``G``'s default orbit at ``yaw``, ``pitch`` (radians)."""
  ro = G.config.render_options
  return Camera.look_at(yaw, pitch, radius=ro.avg_camera_radius, lookat=ro.avg_camera_pivot).label


@jax.tree_util.register_pytree_node_class
@dataclasses.dataclass(frozen=True)
class Inversion:
  """The result of ``jaxinv.invert``: a generator, codes, cameras and the method's tri-plane state.

  Attributes:
    G: the ``EG3DGenerator`` that renders the result (the tuned one for ``pti``).
    ws: ``[B, num_ws, 512]`` latent codes.
    c: ``[B, 25]`` the input images' cameras.
    method: the method name (static).
    planes: ``[B, 3, 256, 256, 32]`` final tri-planes where the method changes them (GOAE's mix),
      else None (computed from ``ws``/``offsets``).
    offsets: ``[B, 3, 256, 256, 32]`` tri-plane offsets (TriPlaneNet, tri-plane optimisation).
    extra: method state needed to edit (GOAE: ``feature_map_adain``) and diagnostics
      (``loss`` curves of the optimisation baselines).
    target: ``[B, S, S, 3]`` the input images in [-1, 1] at the generator's resolution.
  """
  G: Any
  ws: Any
  c: Any
  method: str
  planes: Optional[Any] = None
  offsets: Optional[Any] = None
  extra: Any = dataclasses.field(default_factory=dict)
  target: Optional[Any] = None

  def tree_flatten(self):
    return (self.G, self.ws, self.c, self.planes, self.offsets, self.extra, self.target), \
        self.method

  @classmethod
  def tree_unflatten(cls, method, children):
    G, ws, c, planes, offsets, extra, target = children
    return cls(G, ws, c, method, planes, offsets, extra, target)

  def replace(self, **changes) -> "Inversion":
    return dataclasses.replace(self, **changes)

  def __post_init__(self):
    if self.method not in METHODS:
      raise ValueError(f"method must be one of {METHODS}, got {self.method!r}")

  @property
  def batch_size(self) -> int:
    return int(np.shape(self.ws)[0])

  def __len__(self) -> int:
    return self.batch_size

  def __getitem__(self, i) -> "Inversion":
    """The ``i``-th sample (or a slice) as an ``Inversion`` of its own."""
    idx = slice(i, i + 1) if isinstance(i, (int, np.integer)) else i
    take = lambda x: None if x is None else x[idx]
    return Inversion(self.G, self.ws[idx], self.c[idx], self.method, take(self.planes),
                     take(self.offsets), jax.tree_util.tree_map(
                         lambda x: x[idx] if np.ndim(x) and np.shape(x)[0] == self.batch_size
                         else x, dict(self.extra)), take(self.target))

  # ------------------------------------------------------------------------- tri-planes
  def triplanes(self) -> jnp.ndarray:
    """The tri-planes every render reads, ``[B, 3, 256, 256, 32]``."""
    if self.planes is not None:
      return self.planes
    planes = self.G.planes(self.ws)
    return planes if self.offsets is None else planes + self.offsets

  # ------------------------------------------------------------------------- rendering
  def render(self, c=None, *, yaw=None, pitch=0.0, key=None, neural_rendering_resolution=None):
    """Renders the inversion from cameras ``c`` (default: the input cameras).

    Args:
      c: ``[B, 25]``, ``[25]`` (repeated for every sample) or a ``Camera``.
      yaw, pitch: radians on the generator's look-at orbit instead of ``c`` (scalars).
      key: renderer draws (None: deterministic).
      neural_rendering_resolution: override of the generator's.
    Returns:
      dict(image [B, H, W, 3], image_raw [B, R, R, 3], image_depth [B, R, R, 1]).
    """
    b = self.batch_size
    if yaw is not None:
      if c is not None:
        raise ValueError("render: give c or yaw/pitch, not both")
      if np.ndim(yaw) or np.ndim(pitch):
        raise ValueError("render: yaw and pitch must be scalars (radians); for several views "
                         "call render once per view or pass c")
      c = orbit_label(self.G, float(yaw), float(pitch))
    c = self.c if c is None else camera_label(c, b)
    nrr = neural_rendering_resolution
    if self.planes is None and self.offsets is None:
      out = self.G.synthesis(self.ws, c, key=key, neural_rendering_resolution=nrr)
    else:
      out = self.G.render_planes(self.triplanes(), self.ws, c, key=key,
                                 neural_rendering_resolution=nrr)
    return {k: out[k] for k in ("image", "image_raw", "image_depth")}

  def depth(self, c=None, *, yaw=None, pitch=0.0, neural_rendering_resolution=None):
    """``[B, R, R, 1]`` rendered depth (distance along each ray), as ``render(...)['image_depth']``."""
    return self.render(c, yaw=yaw, pitch=pitch,
                       neural_rendering_resolution=neural_rendering_resolution)["image_depth"]

  # ------------------------------------------------------------------------- geometry
  def mesh(self, resolution: int = 128, *, index: int = 0, level: float | None = None):
    """Marching-cubes mesh of sample ``index``'s density (see ``jaxinv.inversion.mesh``).

    ``level``: raw density of the surface; None = EG3D's 10 (or the middle of the density range
    when the density never reaches 10, as for untrained generators).

    Returns ``(vertices [V, 3], faces [F, 3], colors [V, 3] in [0, 1])`` as numpy arrays.
    """
    from jaxinv.inversion import mesh as mesh_lib
    if not 0 <= int(index) < self.batch_size:
      raise ValueError(f"index: {index} is outside the batch of {self.batch_size}")
    planes = self[int(index)].triplanes()
    return mesh_lib.extract_mesh(self.G, planes, resolution, level=level)

  def save_mesh(self, path, resolution: int = 128, *, index: int = 0,
                level: float | None = None) -> str:
    """Writes ``mesh(...)`` to ``path`` (``.ply`` or ``.obj``, with vertex colours)."""
    from jaxinv.inversion import mesh as mesh_lib
    ext = os.path.splitext(os.fspath(path))[1].lower()
    if ext not in (".ply", ".obj"):
      raise ValueError(f"path: mesh files must end in .ply or .obj, got {os.fspath(path)!r}")
    return mesh_lib.save_mesh(path, *self.mesh(resolution, index=index, level=level))

  def video(self, path, yaws=None, *, pitch: float = 0.0, index: int = 0, fps: int = 24,
            batch: int = 4) -> str:
    """A yaw sweep of sample ``index`` as ``.mp4`` (needs ``jaxinv[video]``) or ``.gif``.

    Args:
      yaws: radians per frame (default 48 frames from -0.6 to 0.6 and back).
      pitch: radians. ``batch``: frames rendered per call.
    Returns the path written (``.gif`` beside the requested ``.mp4`` when imageio/ffmpeg is
    missing).
    """
    path = os.fspath(path)
    ext = os.path.splitext(path)[1].lower()
    if ext not in (".mp4", ".gif"):
      raise ValueError(f"path: videos must end in .mp4 or .gif, got {path!r}")
    if yaws is None:
      yaws = 0.6 * np.sin(np.linspace(0, 2 * np.pi, 48, endpoint=False))
    yaws = np.asarray(yaws, np.float64).reshape(-1)
    if yaws.size == 0:
      raise ValueError("yaws: no frames")
    one = self[int(index)]
    batch = max(1, min(int(batch), len(yaws)))
    labels = orbit_label(self.G, yaws, np.full_like(yaws, pitch))
    frames = []
    for i in range(0, len(yaws), batch):
      cb = labels[i:i + batch]
      n = cb.shape[0]
      if n < batch:  # one compiled batch size
        cb = np.concatenate([cb, np.repeat(cb[-1:], batch - n, 0)])
      rep = jax.tree_util.tree_map(lambda x: jnp.repeat(x, batch, 0) if np.ndim(x) else x,
                                   one.replace(G=None, extra={}))
      rep = rep.replace(G=self.G, c=jnp.asarray(cb))
      frames.extend(to_uint8(rep.render()["image"])[:n])
    return write_video(path, frames, fps)

  # ------------------------------------------------------------------------- files
  def save(self, path, *, generator_source: str = "") -> str:
    """Writes the inversion's state to ``path`` (``.npz``; no pickles).

    Stored: ``ws``, ``c``, the method, ``planes`` / ``offsets`` / array-valued ``extra`` entries
    and ``target``. The generator is stored only for ``pti`` (its tuned weights, in the native
    EG3D format beside ``path`` as ``<stem>_generator.npz``); otherwise ``generator_source``
    (e.g. the checkpoint path) is recorded so :meth:`load` can be told which one to use.
    """
    import json
    path = os.fspath(path)
    if not path.endswith(".npz"):
      raise ValueError(f"path: inversion files end in .npz, got {path!r}")
    arrays = {"ws": np.asarray(self.ws), "c": np.asarray(self.c)}
    for name in ("planes", "offsets", "target"):
      v = getattr(self, name)
      if v is not None:
        arrays[name] = np.asarray(v)
    for k, v in dict(self.extra).items():
      if hasattr(v, "shape"):
        arrays[f"extra/{k}"] = np.asarray(v)
    meta = {"format": "jaxinv-inversion", "version": 1, "method": self.method,
            "generator_source": generator_source}
    if self.method == "pti":
      from jaxinv.convert import eg3d as eg3d_convert
      gpath = path[:-4] + "_generator.npz"
      eg3d_convert.save(self.G, gpath)
      meta["generator_file"] = os.path.basename(gpath)
    np.savez(path, meta=np.asarray(json.dumps(meta)), **arrays)
    return path

  @classmethod
  def load(cls, path, G=None) -> "Inversion":
    """Reads :meth:`save`'s file; ``G``: the generator (not needed for ``pti`` files, which carry
    their tuned generator)."""
    path = os.fspath(path)
    meta, arrays = read_inversion_file(path)
    if meta.get("method") == "zignerf":
      raise ValueError(f"inversion: {path} is a ZIGNeRF inversion; read it with "
                       f"jaxinv.inversion.zignerf.ZIGNeRFInversion.load")
    if meta["method"] == "pti" and G is None:
      from jaxinv.convert import eg3d as eg3d_convert
      G = eg3d_convert.load_native_generator(os.path.join(os.path.dirname(path),
                                                          meta["generator_file"]))
    if G is None:
      raise ValueError(f"inversion: {path} needs its generator (G=...; recorded source: "
                       f"{meta.get('generator_source') or 'unknown'})")
    get = lambda k: None if k not in arrays else jnp.asarray(arrays[k])
    extra = {k[len("extra/"):]: jnp.asarray(v) for k, v in arrays.items() if k.startswith("extra/")}
    inv = cls(G, get("ws"), get("c"), meta["method"], get("planes"), get("offsets"), extra,
              get("target"))
    checks.check_shape(inv.ws, "ws", (None, G.num_ws, G.config.w_dim), "[B, num_ws, w_dim]")
    return inv

  @staticmethod
  def generator_source(path) -> str:
    """The ``generator_source`` recorded in a saved inversion (``''`` when none)."""
    import json
    with np.load(os.fspath(path), allow_pickle=False) as f:
      return json.loads(str(f["meta"])).get("generator_source", "")

  # ------------------------------------------------------------------------- editing
  def edit(self, direction, alpha=1.0) -> "Inversion":
    """A new ``Inversion`` edited along ``direction`` by ``alpha`` (the method's own rule).

    Args:
      direction: ``[512]`` (every w), ``[num_ws, 512]`` or ``[B, num_ws, 512]``; an
        ``EditDirection`` from ``jaxinv.inversion.directions`` is accepted too.
      alpha: scalar strength.
    """
    d = getattr(direction, "vector", direction)
    d = jnp.asarray(d, jnp.float32)
    nws, wd = np.shape(self.ws)[1:]
    if d.ndim == 1:
      checks.check_shape(d, "direction", (wd,), f"[{wd}]")
      d = jnp.broadcast_to(d, (nws, wd))
    if d.ndim == 2:
      checks.check_shape(d, "direction", (nws, wd), f"[{nws}, {wd}]")
      d = d[None]
    checks.check_shape(d, "direction", (None, nws, wd), f"[B, {nws}, {wd}]")
    if np.ndim(alpha):
      raise ValueError(f"alpha: expected a scalar, got shape {np.shape(alpha)}")
    ws_edit = self.ws + jnp.asarray(alpha, jnp.float32) * d
    if self.method == "goae":
      return self.replace(ws=ws_edit, **_goae_edit(self, ws_edit))
    # Latent methods and PTI re-render from the edited codes (PTI with its tuned G); tri-plane
    # offsets ride on the edited backbone planes (T_edit = G(w_edit) + dT).
    return self.replace(ws=ws_edit)


def _goae_edit(inv: Inversion, ws_edit) -> dict:
  """GOAE's Eq. 9 from the stored F*: new mixed planes and F*_edit."""
  from jaxinv.inversion import goae as gi
  fm_star = inv.extra["feature_map_adain"]
  out = _goae_edit_jit(inv.G, inv.ws, ws_edit, fm_star, inv.c)
  extra = dict(inv.extra, feature_map_adain=out["feature_map_adain"], mask=out["mask"])
  del gi
  return dict(planes=out["planes"], extra=extra)


def _goae_edit_fn(G, ws, ws_edit, fm_star, c):
  from jaxinv.inversion import goae as gi
  fm_rec, _ = gi.backbone_head(G, ws)
  fm_edit, partial_edit = gi.backbone_head(G, ws_edit)
  planes_w_edit = gi.backbone_tail(G, ws_edit, fm_edit, partial_edit)
  fm_new = fm_star + (fm_edit - fm_rec)
  planes_f = gi.backbone_tail(G, ws, fm_new, partial_edit)
  out_f = gi.render_planes(G, planes_f, ws, c)
  mask = gi.visibility_mask(out_f["ray_origins"], out_f["ray_directions"], out_f["image_depth"],
                            planes_f.shape[2], G.config.render_options.box_warp)
  return dict(planes=gi.mix_triplanes(planes_f, planes_w_edit, mask), mask=mask,
              feature_map_adain=fm_new)


_goae_edit_jit = jax.jit(_goae_edit_fn)


# ----------------------------------------------------------------------------- image output

def read_inversion_file(path, what: str = "jaxinv inversion") -> tuple[dict, dict]:
  """``(meta, arrays)`` of an inversion ``.npz`` (``Inversion.save`` / ``ZIGNeRFInversion.save``):
  no pickles; a missing file, a foreign or damaged one is a clear error naming ``path``."""
  import json
  path = os.fspath(path)
  if not os.path.isfile(path):
    raise FileNotFoundError(f"inversion: no such file: {path}")
  try:
    with np.load(path, allow_pickle=False) as f:
      meta = json.loads(str(f["meta"]))
      arrays = {k: f[k] for k in f.files if k != "meta"}
  except (KeyError, ValueError, OSError) as e:
    raise ValueError(f"inversion: {path} is not a {what} file: {e}") from None
  if not isinstance(meta, dict) or meta.get("format") != "jaxinv-inversion":
    raise ValueError(f"inversion: {path} is not a {what} file")
  return meta, arrays


def to_uint8(images) -> np.ndarray:
  """``[..., 3]`` in [-1, 1] -> uint8 (round, clip)."""
  return np.clip(np.rint((np.asarray(images, np.float32) + 1) * 127.5), 0, 255).astype(np.uint8)


def depth_to_uint8(depth) -> np.ndarray:
  """``[H, W, 1]`` depth -> uint8 ``[H, W, 3]`` (near = bright, min-max over the image)."""
  d = np.asarray(depth, np.float32)[..., 0]
  lo, hi = float(d.min()), float(d.max())
  near = (hi - d) / max(hi - lo, 1e-8)
  return np.repeat(np.rint(near * 255).astype(np.uint8)[..., None], 3, axis=-1)


def write_video(path: str, frames, fps: int = 24) -> str:
  """Writes uint8 ``[H, W, 3]`` frames to ``path`` (.mp4 via imageio-ffmpeg, else .gif)."""
  if path.lower().endswith(".mp4"):
    try:
      import imageio.v2 as imageio
      import imageio_ffmpeg  # noqa: F401  (without it imageio picks a non-video writer)
      with imageio.get_writer(path, fps=fps, codec="libx264", quality=8, macro_block_size=1) as w:
        for f in frames:
          w.append_data(f)
      return path
    except ImportError:
      path = path[:-4] + ".gif"
  from PIL import Image
  ims = [Image.fromarray(np.asarray(f)) for f in frames]
  ims[0].save(path, save_all=True, append_images=ims[1:], duration=int(1000 / fps), loop=0)
  return path
