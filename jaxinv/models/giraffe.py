"""A GIRAFFE-style compositional generator (ZIGNeRF's G), pure-functional.

``G(codes, c, rotation=...)`` renders ``n_objects`` objects and a background, each its own feature
field with a shape and an appearance code, composited and volume-rendered to a low-resolution
feature image, then turned into RGB by the 2D neural renderer (``jaxinv.nn.giraffe``).

Maths (ZIGNeRF eqs. 1-6, GIRAFFE's released defaults where the paper is silent):

* **Object transforms.** Object i is placed by T_i = (s_i, t_i, R_i): a world point x is seen
  by its field at ``p = R_i^-1 (x - t_i) / s_i`` with direction ``R_i^-1 d`` (GIRAFFE's
  ``k(x) = R diag(s) x + t``; ZIGNeRF's printed ``tau = R sI t`` is read as this).
  ``R_i`` turns about the world's vertical (y) axis by ``rotation`` radians (any angle: 2 pi is
  the identity); the scale is isotropic. The object's density is zero outside its box
  ``|p|_inf <= 1 + box_pad`` (as GIRAFFE).
* **Background.** Its own (smaller) field, in world coordinates scaled by ``1 / scene_radius``.
  Rays are sampled between where they enter and leave the scene sphere (radius ``scene_radius``
  around the origin); the background's last sample is opaque (NeRF's infinite last interval), so
  every ray's weights sum to exactly 1.
* **Composition** (GIRAFFE): ``sigma = sum_i sigma_i``, ``f = sum_i sigma_i f_i / sigma``, with
  densities ``softplus(raw)``.
* **Volume rendering:** alpha_k = 1 - exp(-sigma_k delta_k), delta_k = t_{k+1} - t_k,
  w_k = alpha_k prod_{j<k} (1 - alpha_j); feature image F = sum_k w_k f_k (eq. 5). Depth is
  sum_k w_k t_k; object i's mask is sum_k w_k sigma_ik / sigma_k (its share of what the ray hit).
* **Camera** ``c [B, 25]``: the EG3D label (``jaxinv.render.rays``), so the generator sees the
  same cameras as the EG3D models; ZIGNeRF's camera xi is the orbit pitch.

Codes are a dict ``obj_shape [B, N, Ds]``, ``obj_app [B, N, Da]``, ``bg_shape [B, Dbs]``,
``bg_app [B, Dba]`` (``split_codes`` / ``join_codes`` convert to and from one flat vector).
"""
from __future__ import annotations

import dataclasses
import json
import math
import os

import jax
import jax.numpy as jnp
import numpy as np

from jaxinv import checks
from jaxinv.nn import giraffe as layers
from jaxinv.render.rays import rays_from_label


@dataclasses.dataclass(frozen=True)
class GiraffeConfig:
  """Sizes of one GIRAFFE generator (model code never reads experiment configs: this is its own)."""
  obj_shape_dim: int = 14
  obj_app_dim: int = 5
  bg_shape_dim: int = 1
  bg_app_dim: int = 4
  n_objects: int = 1
  hidden: int = 64
  num_layers: int = 4
  skip: int | None = 2
  bg_hidden: int = 32
  bg_num_layers: int = 2
  feature_dim: int = 32
  freq_points: int = 6
  freq_dirs: int = 2
  samples: int = 24
  feature_resolution: int = 16
  img_resolution: int = 64
  renderer_channels: int = 64
  renderer_min_channels: int = 16
  spectral_norm: bool = True
  scene_radius: float = 0.5
  object_scale: float = 0.5
  box_pad: float = 0.1

  def __post_init__(self):
    ups = math.log2(self.img_resolution / self.feature_resolution)
    if ups < 0 or ups != int(ups):
      raise ValueError(f"img_resolution {self.img_resolution} must be feature_resolution "
                       f"{self.feature_resolution} times a power of two")
    if self.n_objects < 1 or self.samples < 2:
      raise ValueError("need n_objects >= 1 and samples >= 2")

  @property
  def code_dims(self) -> dict:
    return dict(obj_shape=self.obj_shape_dim, obj_app=self.obj_app_dim,
                bg_shape=self.bg_shape_dim, bg_app=self.bg_app_dim)

  @property
  def code_size(self) -> int:
    """Length of the flat code vector (``join_codes``)."""
    return self.n_objects * (self.obj_shape_dim + self.obj_app_dim) + self.bg_shape_dim + \
        self.bg_app_dim

  def to_json(self) -> str:
    return json.dumps(dataclasses.asdict(self), sort_keys=True)

  @classmethod
  def from_json(cls, s: str) -> "GiraffeConfig":
    return cls(**json.loads(s))


# ------------------------------------------------------------------ codes and transforms

def split_codes(z, config: GiraffeConfig) -> dict:
  """Flat codes ``[B, code_size]`` (objects' shape, objects' appearance, bg shape, bg app) -> dict."""
  n, ds, da = config.n_objects, config.obj_shape_dim, config.obj_app_dim
  b = z.shape[0]
  o = 0
  obj_shape = z[:, o:o + n * ds].reshape(b, n, ds); o += n * ds
  obj_app = z[:, o:o + n * da].reshape(b, n, da); o += n * da
  bg_shape = z[:, o:o + config.bg_shape_dim]; o += config.bg_shape_dim
  bg_app = z[:, o:o + config.bg_app_dim]
  return dict(obj_shape=obj_shape, obj_app=obj_app, bg_shape=bg_shape, bg_app=bg_app)


def join_codes(codes: dict) -> jax.Array:
  b = codes["bg_app"].shape[0]
  return jnp.concatenate([codes["obj_shape"].reshape(b, -1), codes["obj_app"].reshape(b, -1),
                          codes["bg_shape"], codes["bg_app"]], axis=-1)


def sample_codes(key, batch: int, config: GiraffeConfig) -> dict:
  """Codes ~ N(0, I) (the prior of every part)."""
  return split_codes(jax.random.normal(key, (batch, config.code_size)), config)


def rotation_y(theta) -> jax.Array:
  """Rotations about the world's vertical axis: ``[...] -> [..., 3, 3]`` (right-handed, y up)."""
  cs, sn = jnp.cos(theta), jnp.sin(theta)
  z, o = jnp.zeros_like(theta), jnp.ones_like(theta)
  return jnp.stack([jnp.stack([cs, z, sn], -1), jnp.stack([z, o, z], -1),
                    jnp.stack([-sn, z, cs], -1)], -2)


def rotate_label(c, theta) -> jax.Array:
  """The camera that sees the *unrotated* scene as ``c`` sees the scene turned by ``theta``:
  cam2world -> R_y(theta)^-1 cam2world. ``c [B, 25]``, theta ``[B]``."""
  c = jnp.asarray(c, jnp.float32)
  b = c.shape[0]
  r = jnp.swapaxes(rotation_y(jnp.broadcast_to(jnp.asarray(theta, jnp.float32), (b,))), -1, -2)
  r4 = jnp.zeros((b, 4, 4), jnp.float32).at[:, :3, :3].set(r).at[:, 3, 3].set(1.0)
  cam = r4 @ c[:, :16].reshape(b, 4, 4)
  return jnp.concatenate([cam.reshape(b, 16), c[:, 16:]], axis=-1)


def _object_transform(rotation, translation, scale, config):
  """Per-object (R [B, N, 3, 3], t [B, N, 3], s [B, N]) with defaults broadcast."""
  return rotation_y(rotation), translation, scale * config.object_scale


# ------------------------------------------------------------------ the generator

class _Modules:
  """The Flax modules of one config (cached; they hold no parameters themselves)."""

  def __init__(self, config: GiraffeConfig):
    self.obj = layers.FeatureField(config.hidden, config.num_layers, config.skip,
                                   config.feature_dim, config.freq_points, config.freq_dirs)
    self.bg = layers.FeatureField(config.bg_hidden, config.bg_num_layers, None,
                                  config.feature_dim, config.freq_points, config.freq_dirs)
    self.renderer = layers.NeuralRenderer(
        int(round(math.log2(config.img_resolution / config.feature_resolution))),
        config.renderer_channels, config.renderer_min_channels, config.spectral_norm)


_MODULES: dict = {}


def modules(config: GiraffeConfig) -> _Modules:
  if config not in _MODULES:
    _MODULES[config] = _Modules(config)
  return _MODULES[config]


def _sphere_interval(o, d, radius):
  """Entry/exit distances of unit rays through a sphere at the origin; rays that miss get both
  at their closest point (one degenerate sample there)."""
  b = jnp.sum(o * d, -1)
  disc = b * b - (jnp.sum(o * o, -1) - radius * radius)
  root = jnp.sqrt(jnp.maximum(disc, 0.0))
  near = jnp.maximum(-b - root, 0.0)
  far = jnp.maximum(-b + root, near)
  return near, far


def init(config: GiraffeConfig, key) -> dict:
  """Variables ``dict(params=..., batch_stats=...)`` (batch_stats: the spectral-norm vectors)."""
  m = modules(config)
  k1, k2, k3 = jax.random.split(key, 3)
  p = jnp.zeros((1, 4, 3))
  obj = m.obj.init(k1, p, p, jnp.zeros((1, config.obj_shape_dim)), jnp.zeros((1, config.obj_app_dim)))
  bg = m.bg.init(k2, p, p, jnp.zeros((1, config.bg_shape_dim)), jnp.zeros((1, config.bg_app_dim)))
  r = config.feature_resolution
  # update_stats=True so that every spectral-norm entry (u and sigma) exists from the start.
  ren = m.renderer.init(k3, jnp.zeros((1, r, r, config.feature_dim)), update_stats=True)
  return dict(params=dict(obj=obj["params"], bg=bg["params"], renderer=ren["params"]),
              batch_stats=dict(renderer=ren.get("batch_stats", {})))


def render_features(config: GiraffeConfig, params, codes: dict, c, rotation=None,
                    translation=None, scale=None, u=None) -> dict:
  """Composited feature image and the 3D quantities, before the 2D renderer.

  Args:
    codes: the codes dict (``split_codes``).
    c: [B, 25] camera labels.
    rotation: [B, N] object turns about the vertical axis in radians (default 0).
    translation: [B, N, 3] world offsets (default 0); scale: [B, N] (default 1, times
      ``config.object_scale``).
    u: [B, r*r, S] uniform draws in [0, 1) placing each sample in its depth bin (stratified
      sampling in training); None = bin centres.
  Returns:
    dict(features [B, r, r, M_f], depth [B, r, r, 1], masks [B, r, r, N] (each object's share),
    weights_sum [B, r, r, 1]).
  """
  b, n, r, s = codes["bg_app"].shape[0], config.n_objects, config.feature_resolution, config.samples
  rotation = jnp.zeros((b, n)) if rotation is None else jnp.broadcast_to(rotation, (b, n))
  translation = jnp.zeros((b, n, 3)) if translation is None else jnp.broadcast_to(
      translation, (b, n, 3))
  scale = jnp.ones((b, n)) if scale is None else jnp.broadcast_to(scale, (b, n))
  m = modules(config)
  origins, dirs = rays_from_label(c, r)                          # [B, M, 3], M = r * r
  near, far = _sphere_interval(origins, dirs, config.scene_radius)
  frac = (jnp.arange(s, dtype=jnp.float32)[None, None] + (0.5 if u is None else u)) / s
  # The last sample sits on the far boundary: the opaque backdrop.
  frac = frac.at[..., -1].set(1.0)
  t = near[..., None] + (far - near)[..., None] * frac            # [B, M, S]
  x = origins[:, :, None] + t[..., None] * dirs[:, :, None]        # [B, M, S, 3]
  mm = origins.shape[1]
  rot, trans, sc = _object_transform(rotation, translation, scale, config)
  rinv = jnp.swapaxes(rot, -1, -2)                                # [B, N, 3, 3]
  xf = x.reshape(b, 1, mm * s, 3)
  p_obj = jnp.einsum("bnij,bnpj->bnpi", rinv, xf - trans[:, :, None]) / sc[..., None, None]
  d_obj = jnp.einsum("bnij,bmj->bnmi", rinv, dirs)
  d_obj = jnp.broadcast_to(d_obj[:, :, :, None], (b, n, mm, s, 3)).reshape(b, n, mm * s, 3)

  def obj_field(p, d, zs, za):
    return m.obj.apply({"params": params["obj"]}, p, d, zs, za)

  sig_o, f_o = jax.vmap(obj_field, in_axes=(1, 1, 1, 1), out_axes=(1, 1))(
      p_obj, d_obj, codes["obj_shape"], codes["obj_app"])          # [B, N, P], [B, N, P, F]
  inside = jnp.all(jnp.abs(p_obj) <= 1.0 + config.box_pad, axis=-1)
  sig_o = jnp.where(inside, jax.nn.softplus(sig_o), 0.0)
  d_world = jnp.broadcast_to(dirs[:, :, None], x.shape).reshape(b, mm * s, 3)
  sig_b, f_b = m.bg.apply({"params": params["bg"]}, xf[:, 0] / config.scene_radius, d_world,
                          codes["bg_shape"], codes["bg_app"])
  sig_b = jax.nn.softplus(sig_b).reshape(b, mm, s)
  sig_o = sig_o.reshape(b, n, mm, s)
  f_o = f_o.reshape(b, n, mm, s, -1)
  f_b = f_b.reshape(b, mm, s, -1)
  # Volume rendering with the backdrop opaque at the last sample.
  sigma = jnp.sum(sig_o, axis=1) + sig_b                          # [B, M, S]
  delta = jnp.concatenate([t[..., 1:] - t[..., :-1], jnp.zeros_like(t[..., :1])], -1)
  alpha = 1.0 - jnp.exp(-sigma * delta)
  alpha = alpha.at[..., -1].set(1.0)
  trans_ = jnp.cumprod(jnp.concatenate([jnp.ones_like(alpha[..., :1]), 1.0 - alpha[..., :-1]], -1),
                       axis=-1)
  w = alpha * trans_                                              # [B, M, S]
  # Each component's share of a sample; at the last sample only the backdrop counts.
  safe = jnp.maximum(sigma, 1e-10)
  share_o = sig_o / safe[:, None]
  share_o = share_o.at[..., -1].set(0.0)
  share_b = 1.0 - jnp.sum(share_o, axis=1)
  feat = jnp.sum(share_o[..., None] * f_o, axis=1) + share_b[..., None] * f_b
  features = jnp.sum(w[..., None] * feat, axis=2)                  # [B, M, F]
  depth = jnp.sum(w * t, axis=-1)
  masks = jnp.sum(w[:, None] * share_o, axis=-1)                   # [B, N, M]
  return dict(features=features.reshape(b, r, r, -1), depth=depth.reshape(b, r, r, 1),
              masks=jnp.moveaxis(masks, 1, -1).reshape(b, r, r, n),
              weights_sum=jnp.sum(w, -1).reshape(b, r, r, 1))


def generate(config: GiraffeConfig, variables, codes: dict, c, rotation=None, translation=None,
             scale=None, u=None, update_stats: bool = False):
  """``G``: feature fields -> volume rendering -> neural renderer.

  Returns ``(out, batch_stats)``: out = dict(image [B, R, R, 3] in [-1, 1], features, depth,
  masks, weights_sum as :func:`render_features`); batch_stats = the spectral-norm vectors (updated
  by one power iteration when ``update_stats``, as in training; else unchanged).
  """
  out = render_features(config, variables["params"], codes, c, rotation, translation, scale, u)
  ren_vars = {"params": variables["params"]["renderer"],
              "batch_stats": variables["batch_stats"]["renderer"]}
  if update_stats:
    image, new = modules(config).renderer.apply(ren_vars, out["features"], update_stats=True,
                                                mutable=["batch_stats"])
    stats = dict(renderer=new["batch_stats"])
  else:
    image = modules(config).renderer.apply(ren_vars, out["features"], update_stats=False)
    stats = variables["batch_stats"]
  return dict(out, image=image), stats


def stratified_draws(key, batch: int, config: GiraffeConfig) -> jax.Array:
  """``u [B, r*r, S]`` for :func:`generate` (training)."""
  return jax.random.uniform(key, (batch, config.feature_resolution ** 2, config.samples))


@jax.tree_util.register_pytree_node_class
class Giraffe:
  """A generator value: config (static) + variables. ``G(codes, c, rotation=...)["image"]``."""

  def __init__(self, config: GiraffeConfig, variables):
    self.config = config
    self.variables = variables

  def tree_flatten(self):
    return (self.variables,), self.config

  @classmethod
  def tree_unflatten(cls, config, children):
    return cls(config, children[0])

  def __call__(self, codes, c, rotation=None, translation=None, scale=None) -> dict:
    if not isinstance(codes, dict):
      codes = split_codes(jnp.asarray(codes, jnp.float32), self.config)
    return _generate_jit(self, codes, jnp.asarray(c, jnp.float32), rotation, translation, scale)


@jax.jit
def _generate_jit(G, codes, c, rotation, translation, scale):
  return generate(G.config, G.variables, codes, c, rotation, translation, scale)[0]


SEP = "::"   # Flax's spectral-norm stats have "/" inside their names


def _flatten(tree, prefix: str) -> dict:
  return {prefix + SEP + SEP.join(str(getattr(k, "key", k)) for k in kp): np.asarray(v)
          for kp, v in jax.tree_util.tree_leaves_with_path(tree)}


def save(G: Giraffe, path: str, discriminator=None, extra: dict | None = None) -> str:
  """Writes ``G`` (and optionally its discriminator's variables) as a plain ``.npz``, no pickles:
  ``G::...`` and ``D::...`` leaves plus a ``__meta__`` JSON (kind, config, ``extra``)."""
  flat = _flatten(G.variables, "G")
  if discriminator is not None:
    flat.update(_flatten(discriminator, "D"))
  meta = dict(kind="giraffe", config=json.loads(G.config.to_json()), **(extra or {}))
  np.savez(path, __meta__=np.frombuffer(json.dumps(meta).encode(), np.uint8), **flat)
  return path


def _unflatten(flat: dict) -> dict:
  out: dict = {}
  for k, v in flat.items():
    d = out
    parts = k.split(SEP)
    for p in parts[:-1]:
      d = d.setdefault(p, {})
    d[parts[-1]] = jnp.asarray(v)
  return out


def read_npz(path: str, kind: str):
  """``(meta, variables)`` of a jaxinv ``.npz`` of ``kind`` (never unpickles); clear errors."""
  path = str(path)
  if not os.path.exists(path):
    raise FileNotFoundError(f"no such file: {path}")
  try:
    data = np.load(path, allow_pickle=False)
  except Exception as e:  # noqa: BLE001 - any unreadable file is the user's error
    raise ValueError(f"{path}: not a readable .npz file ({type(e).__name__}: {e})") from None
  try:
    with data:
      if "__meta__" not in data.files:
        raise ValueError(f"{path}: not a jaxinv {kind} file (no __meta__ entry)")
      meta = json.loads(bytes(data["__meta__"]).decode())
      if not isinstance(meta, dict) or meta.get("kind") != kind:
        got = meta.get("kind") if isinstance(meta, dict) else None
        raise ValueError(f"{path}: holds a {got!r} file, expected {kind!r}")
      flat = {k: data[k] for k in data.files if k != "__meta__"}
  except ValueError:
    raise
  except Exception as e:  # noqa: BLE001 - a truncated or hostile archive
    raise ValueError(f"{path}: corrupt .npz file ({type(e).__name__}: {e})") from None
  return meta, _unflatten(flat)


def load_with_discriminator(path: str):
  """``(Giraffe, discriminator variables or None)`` of a file written by :func:`save`; every
  generator leaf is checked against the config's template."""
  meta, variables = read_npz(path, "giraffe")
  try:
    config = GiraffeConfig(**meta["config"])
  except (TypeError, KeyError, ValueError) as e:
    raise ValueError(f"{path}: bad generator config ({e})") from None
  if "G" not in variables:
    raise ValueError(f"{path}: no generator entries (G::...)")
  check_variables(variables["G"], init_shapes(config), path)
  return Giraffe(config, variables["G"]), variables.get("D")


def load(path: str) -> Giraffe:
  """The generator of a file written by :func:`save`."""
  return load_with_discriminator(path)[0]


def init_shapes(config: GiraffeConfig):
  return jax.eval_shape(lambda: init(config, jax.random.PRNGKey(0)))


def check_variables(variables, template, path: str) -> None:
  """Same leaves, shapes and dtypes as ``template``, else a ValueError naming the first mismatch."""
  got = {jax.tree_util.keystr(k): v for k, v in jax.tree_util.tree_leaves_with_path(variables)}
  want = {jax.tree_util.keystr(k): v for k, v in jax.tree_util.tree_leaves_with_path(template)}
  for k in sorted(set(got) | set(want)):
    if k not in got:
      raise ValueError(f"{path}: missing entry {k}")
    if k not in want:
      raise ValueError(f"{path}: unexpected entry {k}")
    if tuple(got[k].shape) != tuple(want[k].shape):
      raise ValueError(f"{path}: {k} has shape {tuple(got[k].shape)}, expected {tuple(want[k].shape)}")
    if not np.issubdtype(np.dtype(got[k].dtype), np.floating):
      raise ValueError(f"{path}: {k} has dtype {got[k].dtype}, expected float32")


def check_codes(codes: dict, config: GiraffeConfig, name: str = "codes") -> None:
  for part, d in config.code_dims.items():
    if part not in codes:
      raise ValueError(f"{name}: missing part {part!r}")
    checks.check_finite(codes[part], f"{name}[{part!r}]")
    if np.shape(codes[part])[-1] != d:
      raise ValueError(f"{name}[{part!r}] has last size {np.shape(codes[part])[-1]}, expected {d}")
