"""ZIGNeRF inversion: one pass of the inverter, then a compositional scene you can turn, move, swap.

``invert(G, inverter, x, c=None)`` -> :class:`ZIGNeRFInversion`. The inverter predicts the four
codes (object shape / appearance, background shape / appearance) of the GIRAFFE generator ``G``
(``jaxinv.models.giraffe``).

**The pose at test time** (the paper leaves it open, RECIPES sec. 5.8.1). jaxinv's choice: a pose
head on the inverter (cos theta, sin theta, camera pitch; trained with an L1 term on the source
pose, ``configs/zignerf.py``); theta = atan2(sin, cos). With ``search=K`` the turn is then refined
by rendering the predicted codes at K turns spread over the full circle around the head's answer
(and the answer itself) and keeping the one whose render is closest (L1) to the input: it catches
front/back confusions the head makes on near-symmetric objects. ``bench/world_novel_view.py``
measures both. A known camera can be given instead (``c``): it is read as (turn, pitch) exactly as
the generator's cameras are built (:func:`pose_from_label`).

Cameras: G always renders from the orbit camera at yaw 0 and the pose's pitch, the object turned
by theta about the vertical axis. An EG3D-orbit camera at yaw ``y`` sees about what a turn of
``-y`` shows, so ``render(yaw=y)`` is the turn ``theta - y``: the same "novel view at a yaw
offset" the EG3D methods are measured on. ``render(rotation=r)`` sets the turn itself (any angle:
the 360 degrees an EG3D generator cannot reach).
"""
from __future__ import annotations

import dataclasses
import json
import math
import os
from typing import Any, Optional

import jax
import jax.numpy as jnp
import numpy as np

from jaxinv.models import giraffe as gm
from jaxinv.models.encoders import zignerf as zenc
from jaxinv.render import camera as camera_lib

_ASSETS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "assets")
CODE_PARTS = ("obj_shape", "obj_app", "bg_shape", "bg_app")


def toy_path(kind: str) -> str:
  """The built-in world model file: ``kind`` = "generator" (G and D) or "inverter"."""
  if kind not in ("generator", "inverter"):
    raise ValueError(f"kind must be 'generator' or 'inverter', got {kind!r}")
  path = os.path.join(_ASSETS, f"zignerf_{kind}.npz")
  if not os.path.exists(path):
    raise FileNotFoundError(f"the built-in ZIGNeRF {kind} is not in this installation ({path}); "
                            "train it with configs/zignerf.py (see its docstring)")
  return path


# ------------------------------------------------------------------ the inverter file

@dataclasses.dataclass(frozen=True)
class Inverter:
  """A loaded inverter: its module (sizes) and params."""
  module: zenc.ZIGNeRFInverter
  params: Any

  def __call__(self, x):
    return _apply_inverter(self.module, self.params, x)


def _apply_inverter(module, params, x):
  return _inverter_fn(module)(params, x)


_FNS: dict = {}


def _inverter_fn(module):
  if module not in _FNS:
    _FNS[module] = jax.jit(lambda p, x: module.apply({"params": p}, x))
  return _FNS[module]


def save_inverter(path: str, params, gcfg: gm.GiraffeConfig, channels, hidden: int) -> str:
  flat = gm._flatten(jax.tree_util.tree_map(lambda v: np.asarray(v, np.float32), params), "I")
  meta = dict(kind="zignerf_inverter", generator_config=json.loads(gcfg.to_json()),
              channels=list(channels), hidden=int(hidden))
  np.savez(path, __meta__=np.frombuffer(json.dumps(meta).encode(), np.uint8), **flat)
  return path


def load_inverter(path: str) -> tuple[Inverter, gm.GiraffeConfig]:
  """``(Inverter, the generator config it was trained for)``; every leaf checked."""
  meta, variables = gm.read_npz(path, "zignerf_inverter")
  try:
    gcfg = gm.GiraffeConfig(**meta["generator_config"])
    module = zenc.for_generator(gcfg, tuple(meta["channels"]), int(meta["hidden"]))
  except (KeyError, TypeError, ValueError) as e:
    raise ValueError(f"{path}: bad inverter metadata ({e})") from None
  if "I" not in variables:
    raise ValueError(f"{path}: no inverter entries (I::...)")
  r = gcfg.img_resolution
  template = jax.eval_shape(lambda: module.init(jax.random.PRNGKey(0), jnp.zeros((1, r, r, 3))))
  gm.check_variables(variables["I"], template["params"], path)
  return Inverter(module, variables["I"]), gcfg


def load_toy():
  """``(G, Inverter)``: the built-in world models."""
  G = gm.load(toy_path("generator"))
  inv, gcfg = load_inverter(toy_path("inverter"))
  if gcfg != G.config:
    raise ValueError("the built-in ZIGNeRF inverter was trained for another generator config")
  return G, inv


# ------------------------------------------------------------------ poses

def canonical_label(pitch) -> jax.Array:
  """G's camera: the orbit at yaw 0 and ``pitch [B]``."""
  pitch = jnp.asarray(pitch, jnp.float32).reshape(-1)
  cam2world = camera_lib.look_at_pose(jnp.full_like(pitch, math.pi / 2), math.pi / 2 + pitch)
  return camera_lib.matrices_to_label(cam2world, camera_lib.intrinsics_matrix())


def pose_from_label(c) -> tuple[jax.Array, jax.Array]:
  """``c [B, 25]`` -> (turn theta [B], pitch [B]) with ``gm.rotate_label(canonical_label(pitch),
  theta)`` having the same camera centre; an orbit camera at yaw y gives theta = -y."""
  c = jnp.asarray(c, jnp.float32)
  o = c[:, :16].reshape(-1, 4, 4)[:, :3, 3]
  theta = jnp.arctan2(-o[:, 0], o[:, 2])
  pitch = -(math.pi / 2) * o[:, 1] / jnp.linalg.norm(o, axis=-1)
  return theta, pitch


# ------------------------------------------------------------------ the result

@jax.tree_util.register_pytree_node_class
@dataclasses.dataclass(frozen=True)
class ZIGNeRFInversion:
  """The result of a ZIGNeRF inversion (``jaxinv.invert(..., method="zignerf")``).

  Attributes:
    G: the ``Giraffe`` generator.
    codes: dict of ``obj_shape [B, N, Ds]``, ``obj_app [B, N, Da]``, ``bg_shape [B, Dbs]``,
      ``bg_app [B, Dba]``.
    rotation: ``[B, N]`` object turns (radians) of the input view.
    pitch: ``[B]`` camera pitch of the input view.
    translation: ``[B, N, 3]`` object offsets (0 unless moved).
    target: ``[B, R, R, 3]`` the input images at G's resolution (or None).
  """
  G: Any
  codes: Any
  rotation: Any
  pitch: Any
  translation: Any
  target: Optional[Any] = None
  method: str = "zignerf"

  def tree_flatten(self):
    return (self.G, self.codes, self.rotation, self.pitch, self.translation, self.target), None

  @classmethod
  def tree_unflatten(cls, _, children):
    return cls(*children)

  def replace(self, **changes) -> "ZIGNeRFInversion":
    return dataclasses.replace(self, **changes)

  @property
  def batch_size(self) -> int:
    return int(np.shape(self.pitch)[0])

  def __len__(self) -> int:
    return self.batch_size

  @property
  def c(self) -> jax.Array:
    """``[B, 25]``: the camera that sees the unturned scene as the input view sees it."""
    return gm.rotate_label(canonical_label(self.pitch), self.rotation[:, 0])

  def render(self, c=None, *, rotation=None, yaw=None, pitch=None, translation=None) -> dict:
    """Renders the scene: dict(image [B, R, R, 3] in [-1, 1], depth, masks (per object),
    features, weights_sum).

    Args:
      c: an EG3D camera ``[25]`` / ``[B, 25]``, read as (turn, pitch) by :func:`pose_from_label`
        (then ``rotation`` / ``yaw`` / ``pitch`` must be None).
      rotation: the object turn in radians, absolute (``[B]``, ``[B, N]`` or a number; 2 pi = 0).
      yaw: a camera-yaw offset from the input view (the turn becomes ``rotation_in - yaw``).
      pitch: the camera pitch (default: the input's).
      translation: ``[B, N, 3]`` object offsets (default: the result's).
    """
    b, n = self.batch_size, self.rotation.shape[1]
    if c is not None:
      if rotation is not None or yaw is not None or pitch is not None:
        raise ValueError("render: pass either c or rotation / yaw / pitch, not both")
      if isinstance(c, camera_lib.Camera):
        c = c.label
      c = jnp.asarray(c, jnp.float32).reshape(-1, 25) if np.ndim(c) == 1 else c
      camera_lib.validate_label(c)
      c = jnp.asarray(c, jnp.float32)
      if c.shape[0] == 1 and b > 1:
        c = jnp.broadcast_to(c, (b, 25))
      theta, pitch = pose_from_label(c)
      rot = jnp.broadcast_to(theta[:, None], (b, n))
    else:
      if rotation is not None and yaw is not None:
        raise ValueError("render: pass rotation or yaw, not both")
      rot = self.rotation
      if rotation is not None:
        rot = _broadcast(rotation, (b, n), "rotation")
      if yaw is not None:
        rot = self.rotation - _broadcast(yaw, (b, 1), "yaw")
      pitch = self.pitch if pitch is None else _broadcast(pitch, (b,), "pitch")
    t = self.translation if translation is None else _broadcast(translation, (b, n, 3),
                                                                "translation")
    return self.G(self.codes, canonical_label(pitch), rot, t)

  def depth(self, **kw) -> jax.Array:
    return self.render(**kw)["depth"]

  # ---------------------------------------------------------------- composition
  def mix(self, other: "ZIGNeRFInversion", parts=("bg_shape", "bg_app")) -> "ZIGNeRFInversion":
    """Style mixing: this result with the code ``parts`` taken from ``other`` (same batch)."""
    unknown = sorted(set(parts) - set(CODE_PARTS))
    if unknown:
      raise ValueError(f"parts: unknown {unknown}; choose from {CODE_PARTS}")
    if not isinstance(other, ZIGNeRFInversion) or other.batch_size != self.batch_size:
      raise ValueError("other: expected a ZIGNeRFInversion of the same batch size")
    codes = {k: (other.codes[k] if k in parts else v) for k, v in self.codes.items()}
    return self.replace(codes=codes)

  def swap_background(self, other: "ZIGNeRFInversion") -> "ZIGNeRFInversion":
    """This object in ``other``'s background."""
    return self.mix(other, ("bg_shape", "bg_app"))

  def swap_object(self, other: "ZIGNeRFInversion") -> "ZIGNeRFInversion":
    """``other``'s object (shape and appearance, at this result's pose) in this background."""
    return self.mix(other, ("obj_shape", "obj_app"))

  def move(self, translation) -> "ZIGNeRFInversion":
    """The objects moved by ``translation [B, N, 3]`` (or ``[3]``), world units."""
    t = _broadcast(translation, self.translation.shape, "translation")
    return self.replace(translation=self.translation + t)

  def video(self, path, rotations=None, *, fps: int = 24, index: int = 0) -> str:
    """A full turn of the object (``rotations`` in radians, default 48 over 2 pi): .mp4 or .gif."""
    from jaxinv.inversion.result import to_uint8, write_video
    if rotations is None:
      rotations = np.linspace(0.0, 2 * math.pi, 48, endpoint=False)
    one = self[index]
    frames = [to_uint8(one.render(rotation=float(one.rotation[0, 0]) + float(r))["image"])[0]
              for r in rotations]
    return write_video(str(path), frames, fps=fps)

  # ---------------------------------------------------------------- files
  def save(self, path, *, generator_source: str = "") -> str:
    """Writes the codes, turns, pitch, translation (and target) to ``path`` (``.npz``, no
    pickles); the generator is recorded by ``generator_source`` only (:meth:`load` takes it)."""
    path = os.fspath(path)
    if not path.endswith(".npz"):
      raise ValueError(f"path: inversion files end in .npz, got {path!r}")
    arrays = {f"codes/{k}": np.asarray(v) for k, v in self.codes.items()}
    arrays.update(rotation=np.asarray(self.rotation), pitch=np.asarray(self.pitch),
                  translation=np.asarray(self.translation))
    if self.target is not None:
      arrays["target"] = np.asarray(self.target)
    meta = {"format": "jaxinv-inversion", "version": 1, "method": self.method,
            "generator_source": generator_source,
            "generator_config": json.loads(self.G.config.to_json())}
    np.savez(path, meta=np.asarray(json.dumps(meta)), **arrays)
    return path

  @classmethod
  def load(cls, path, G=None) -> "ZIGNeRFInversion":
    """Reads :meth:`save`'s file. ``G``: its generator (default: the built-in world G); a
    generator of another config is refused."""
    from jaxinv.inversion.result import read_inversion_file
    path = os.fspath(path)
    meta, arrays = read_inversion_file(path, "jaxinv ZIGNeRF inversion")
    try:
      if meta.get("method") != "zignerf":
        raise ValueError(f"its method is {meta.get('method')!r}")
      codes = {k: jnp.asarray(arrays[f"codes/{k}"]) for k in CODE_PARTS}
      rotation, pitch = jnp.asarray(arrays["rotation"]), jnp.asarray(arrays["pitch"])
      translation = jnp.asarray(arrays["translation"])
    except (KeyError, ValueError) as e:
      raise ValueError(f"inversion: {path} is not a jaxinv ZIGNeRF inversion file ({e})") from None
    if G is None:
      G = gm.load(toy_path("generator"))
    if json.loads(G.config.to_json()) != meta.get("generator_config"):
      raise ValueError(f"inversion: {path} was made with another generator config than G's")
    b, n = pitch.shape[0], G.config.n_objects
    expect = {"rotation": (rotation, (b, n)), "translation": (translation, (b, n, 3)),
              "obj_shape": (codes["obj_shape"], (b, n, G.config.obj_shape_dim)),
              "obj_app": (codes["obj_app"], (b, n, G.config.obj_app_dim)),
              "bg_shape": (codes["bg_shape"], (b, G.config.bg_shape_dim)),
              "bg_app": (codes["bg_app"], (b, G.config.bg_app_dim))}
    for name, (a, shape) in expect.items():
      if tuple(a.shape) != shape or not bool(jnp.all(jnp.isfinite(a))):
        raise ValueError(f"inversion: {path}: {name} must be finite with shape {shape}, got "
                         f"{tuple(a.shape)}")
    target = jnp.asarray(arrays["target"]) if "target" in arrays else None
    return cls(G, codes, rotation, pitch, translation, target)

  def __getitem__(self, i) -> "ZIGNeRFInversion":
    idx = slice(i, i + 1) if isinstance(i, (int, np.integer)) else i
    return ZIGNeRFInversion(self.G, {k: v[idx] for k, v in self.codes.items()}, self.rotation[idx],
                            self.pitch[idx], self.translation[idx],
                            None if self.target is None else self.target[idx])


def _broadcast(x, shape, name):
  a = jnp.asarray(x, jnp.float32)
  if not bool(jnp.all(jnp.isfinite(a))):
    raise ValueError(f"{name}: must be finite")
  if a.ndim == len(shape) - 1 and len(shape) > 1 and a.shape == shape[:-1]:
    a = a[..., None]
  try:
    return jnp.broadcast_to(a, shape)
  except ValueError:
    raise ValueError(f"{name}: shape {a.shape} does not broadcast to {shape}") from None


# ------------------------------------------------------------------ inversion

def _search_fn(G, codes, theta, pitch, x, k: int):
  """Best turn among theta + 2 pi j / k (j < k) by L1 to ``x``."""
  b, n = theta.shape
  c = canonical_label(pitch)

  def err(offset):
    out = G(codes, c, theta + offset)
    return jnp.mean(jnp.abs(out["image"] - x), axis=(1, 2, 3))
  offsets = jnp.arange(k, dtype=jnp.float32) * (2 * math.pi / k)
  errs = jnp.stack([err(o) for o in offsets])                    # [k, B]
  best = jnp.argmin(errs, axis=0)
  return theta + offsets[best][:, None]


def invert(G: gm.Giraffe, inverter: Inverter, x, c=None, *, search: int = 0) -> ZIGNeRFInversion:
  """Inverts images ``x [B, R, R, 3]`` in [-1, 1] at G's resolution.

  Args:
    G, inverter: the generator and its inverter (``load_toy()``).
    c: None (pose from the inverter's head) or cameras ``[B, 25]`` (:func:`pose_from_label`).
    search: 0, or K >= 2 turns to try (see the module docstring).
  """
  r = G.config.img_resolution
  if x.ndim != 4 or x.shape[1:] != (r, r, 3):
    raise ValueError(f"image: expected [B, {r}, {r}, 3] at the generator's resolution, got "
                     f"{tuple(x.shape)}")
  if isinstance(search, bool) or not isinstance(search, (int, np.integer)) or search < 0 or \
      search == 1:
    raise ValueError(f"search: expected 0 (off) or an int >= 2, got {search!r}")
  pred = inverter(x)
  codes = {k: pred[k] for k in CODE_PARTS}
  b, n = x.shape[0], G.config.n_objects
  if c is None:
    pose = pred["pose"]
    theta = jnp.arctan2(pose[..., 1], pose[..., 0])
    pitch = jnp.mean(pose[..., 2], axis=1)
  else:
    th, pitch = pose_from_label(c)
    theta = jnp.broadcast_to(th[:, None], (b, n))
  if search:
    theta = _search_fn(G, codes, theta, pitch, x, int(search))
  theta = jnp.mod(theta, 2 * math.pi)
  return ZIGNeRFInversion(G, codes, theta, pitch, jnp.zeros((b, n, 3)), x)
