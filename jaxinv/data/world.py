"""The procedural 3D world: head-like objects with exact ground truth, sphere-traced in JAX.

A scene is drawn from ``z ~ N(0, I)`` with ``Z_DIM`` numbers, in three documented parts
(``Z_SHAPE``, ``Z_APPEARANCE``, ``Z_BACKGROUND``; the index of every number is in ``Z_NAMES``):

* **shape** (z[0:14]): a head ellipsoid smoothly united with a jaw, a nose and two ears; two eyes
  (their own material); a hat that appears when ``z[11] > 1`` (about 16 % of scenes); an
  asymmetric bump on one cheek when ``z[12] > 1`` (about 16 %), whose side and height come from
  ``z[13]``. Everything but the bump is bilaterally symmetric (x -> -x).
* **appearance** (z[14:19]): skin hue, saturation and brightness, eye hue, hat hue.
* **background** (z[19:24]): a vertical two-colour gradient (top hue, bottom hue, saturation,
  brightness, where the gradient sits).

Every parameter is a smooth function of z (tanh / logistic), features appear through a smooth
switch rather than a jump, so the world is learnable by a generator and ``attributes(z)`` gives
their true values (``has_hat`` etc. are the thresholded switches).

Rendering (:func:`render`) is exact up to the sphere tracer's tolerance: one ray per pixel centre
through ``jaxinv.render.rays`` (EG3D's camera convention, unit-length directions), a fixed number
of sphere-tracing steps against the signed distance function, central-difference normals,
Lambertian + ambient shading under a light in the x = 0 plane (so symmetric scenes stay symmetric),
and a background coloured by where the ray leaves a sphere of radius ``BACKGROUND_RADIUS`` around
the origin (a real 3D backdrop inside EG3D's box, view-consistent like the rest of the scene).
``depth`` is the distance from the camera centre along the unit ray, as EG3D's ``image_depth``,
``+inf`` where no object is hit. The object fits in the EG3D FFHQ box ([-0.5, 0.5]^3) and is seen
from the FFHQ orbit (radius 2.7, pivot (0, 0, 0.2), focal 4.2647): ``jaxinv.Camera.look_at``.

:func:`mesh` gives the ground-truth surface (marching cubes of the same SDF, with per-vertex albedo).
"""
from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np

from jaxinv import checks
from jaxinv.render import camera as camera_lib
from jaxinv.render.rays import rays_from_label

Z_NAMES = (
    # shape
    "head_width", "head_height", "head_depth", "nose_length", "nose_width", "nose_height",
    "ear_size", "ear_height", "eye_spacing", "eye_size", "jaw_width", "hat", "bump", "bump_place",
    # appearance
    "skin_hue", "skin_saturation", "skin_brightness", "eye_hue", "hat_hue",
    # background
    "bg_top_hue", "bg_bottom_hue", "bg_saturation", "bg_brightness", "bg_horizon",
)
Z_DIM = len(Z_NAMES)          # 24
Z_SHAPE = slice(0, 14)
Z_APPEARANCE = slice(14, 19)
Z_BACKGROUND = slice(19, 24)
Z_INDEX = {n: i for i, n in enumerate(Z_NAMES)}
# z numbers whose scene is not symmetric: the bump; set z[Z_INDEX['bump']] well below 1 to remove it.
Z_ASYMMETRIC = (Z_INDEX["bump"], Z_INDEX["bump_place"])

BOUND_RADIUS = 0.45        # every object point lies inside this sphere around the origin
BACKGROUND_RADIUS = 0.5    # the backdrop: where a ray leaves this sphere
LIGHT = (0.0, 0.4, 1.0)    # towards the light (normalized below), in the x = 0 plane
AMBIENT = 0.35
DEFAULT_STEPS = 48
HIT_TOLERANCE = 1e-4
MIN_STEP = 4e-3
BISECTIONS = 10

_HAT_ON, _BUMP_ON = 1.0, 1.0   # z thresholds of the two occasional features
_SWITCH_SHARPNESS = 6.0


def _switch(x, threshold):
  return jax.nn.sigmoid(_SWITCH_SHARPNESS * (x - threshold))


def _hsv(h, s, v):
  """Smooth HSV -> RGB, each [...] -> [..., 3] in [0, 1]."""
  n = jnp.array([5.0, 3.0, 1.0])
  k = jnp.mod(n + 6.0 * h[..., None], 6.0)
  return v[..., None] * (1 - s[..., None] * jnp.clip(jnp.minimum(k, 4 - k), 0, 1))


def scene(z):
  """Scene parameters of ``z [B, Z_DIM]``: dict of arrays with leading dim B (lengths in world units)."""
  z = jnp.asarray(z, jnp.float32)
  t = jnp.tanh
  g = {n: z[:, i] for i, n in enumerate(Z_NAMES)}
  head_r = jnp.stack([0.19 + 0.03 * t(g["head_width"]), 0.24 + 0.03 * t(g["head_height"]),
                      0.21 + 0.025 * t(g["head_depth"])], -1)
  head_c = jnp.array([0.0, 0.02, 0.0])

  def front(x, y):  # z of the head ellipsoid's front surface at (x, y)
    q = 1 - (x / head_r[:, 0]) ** 2 - ((y - head_c[1]) / head_r[:, 1]) ** 2
    return head_r[:, 2] * jnp.sqrt(jnp.maximum(q, 0.0))

  zero = jnp.zeros_like(z[:, 0])
  nose_len = 0.05 + 0.025 * t(g["nose_length"])
  nose_w = 0.03 + 0.01 * t(g["nose_width"])
  nose_y = -0.02 + 0.03 * t(g["nose_height"])
  nose_c = jnp.stack([zero, nose_y, front(zero, nose_y) - 0.02 + 0.5 * nose_len], -1)
  nose_r = jnp.stack([nose_w, 0.045 + zero, 0.5 * nose_len + 0.02], -1)
  ear_s = 0.06 + 0.02 * t(g["ear_size"])
  ear_y = 0.0 + 0.03 * t(g["ear_height"])
  ear_c = jnp.stack([head_r[:, 0] - 0.005, ear_y, -0.01 + zero], -1)   # the right ear; left = mirror
  ear_r = jnp.stack([0.028 + zero, ear_s, 0.6 * ear_s], -1)
  eye_x = 0.075 + 0.015 * t(g["eye_spacing"])
  eye_rad = 0.028 + 0.008 * t(g["eye_size"])
  eye_y = 0.06 + zero
  eye_c = jnp.stack([eye_x, eye_y, front(eye_x, eye_y) - 0.6 * eye_rad], -1)
  jaw_c = jnp.array([0.0, -0.11, 0.03])
  jaw_r = jnp.stack([0.15 + 0.03 * t(g["jaw_width"]), 0.11 + zero, 0.15 + zero], -1)
  hat = _switch(g["hat"], _HAT_ON)
  hat_c = jnp.stack([zero, head_c[1] + 0.72 * head_r[:, 1], -0.01 + zero], -1)
  hat_r = jnp.stack([1.06 * head_r[:, 0], 0.09 + zero, 1.06 * head_r[:, 2]], -1)
  bump = _switch(g["bump"], _BUMP_ON)
  bump_x = 0.11 * t(2.0 * g["bump_place"])
  bump_y = -0.06 + 0.03 * jnp.cos(g["bump_place"])
  bump_c = jnp.stack([bump_x, bump_y, front(bump_x, bump_y)], -1)
  skin = _hsv(0.07 + 0.07 * t(g["skin_hue"]), 0.45 + 0.15 * t(g["skin_saturation"]),
              0.75 + 0.15 * t(g["skin_brightness"]))
  eye = _hsv(jax.nn.sigmoid(g["eye_hue"]), 0.6 + zero, 0.35 + zero)
  hat_rgb = _hsv(jax.nn.sigmoid(g["hat_hue"]), 0.7 + zero, 0.7 + zero)
  bg_top = _hsv(jax.nn.sigmoid(g["bg_top_hue"]), 0.4 + 0.2 * t(g["bg_saturation"]),
                0.6 + 0.25 * t(g["bg_brightness"]))
  bg_bottom = _hsv(jax.nn.sigmoid(g["bg_bottom_hue"]), 0.4 + 0.2 * t(g["bg_saturation"]),
                   0.45 + 0.25 * t(g["bg_brightness"]))
  return dict(head_c=jnp.broadcast_to(head_c, head_r.shape), head_r=head_r,
              jaw_c=jnp.broadcast_to(jaw_c, jaw_r.shape), jaw_r=jaw_r,
              nose_c=nose_c, nose_r=nose_r, ear_c=ear_c, ear_r=ear_r, eye_c=eye_c, eye_rad=eye_rad,
              hat=hat, hat_c=hat_c, hat_r=hat_r, bump=bump, bump_c=bump_c,
              skin=skin, eye=eye, hat_rgb=hat_rgb, bump_rgb=jnp.broadcast_to(
                  jnp.array([0.45, 0.2, 0.15]), skin.shape),
              bg_top=bg_top, bg_bottom=bg_bottom, bg_horizon=0.12 * t(g["bg_horizon"]))


def attributes(z) -> dict:
  """True values of the named attributes of ``z [B, Z_DIM]``: dict of ``[B]`` float32 arrays.

  Lengths in world units (the camera orbit has radius 2.7), hues in [0, 1) turns; ``has_hat`` and
  ``has_bump`` are 0/1 (the feature's switch above one half); ``bump_side`` is +1 when the bump is on
  the +x side (the subject's left, seen from the front camera on the image's right), else -1.
  """
  _check_z(z)
  s = scene(z)
  zz = jnp.asarray(z, jnp.float32)
  return {
      "head_width": 2 * s["head_r"][:, 0], "head_height": 2 * s["head_r"][:, 1],
      "head_depth": 2 * s["head_r"][:, 2],
      "nose_length": s["nose_c"][:, 2] + s["nose_r"][:, 2] - s["head_r"][:, 2],  # tip beyond head
      "nose_width": 2 * s["nose_r"][:, 0], "nose_height": s["nose_c"][:, 1],
      "ear_size": 2 * s["ear_r"][:, 1], "ear_height": s["ear_c"][:, 1],
      "eye_spacing": 2 * s["eye_c"][:, 0], "eye_size": 2 * s["eye_rad"],
      "jaw_width": 2 * s["jaw_r"][:, 0],
      "has_hat": (s["hat"] > 0.5).astype(jnp.float32),
      "has_bump": (s["bump"] > 0.5).astype(jnp.float32),
      "bump_side": jnp.where(s["bump_c"][:, 0] >= 0, 1.0, -1.0),
      "skin_hue": 0.07 + 0.07 * jnp.tanh(zz[:, Z_INDEX["skin_hue"]]),
      "skin_brightness": 0.75 + 0.15 * jnp.tanh(zz[:, Z_INDEX["skin_brightness"]]),
      "eye_hue": jax.nn.sigmoid(zz[:, Z_INDEX["eye_hue"]]),
      "hat_hue": jax.nn.sigmoid(zz[:, Z_INDEX["hat_hue"]]),
  }


def symmetric(z):
  """``z`` with the asymmetric bump switched off: the scene is then exactly mirror-symmetric."""
  z = jnp.asarray(z, jnp.float32)
  return z.at[:, Z_INDEX["bump"]].set(-4.0)


def sample_z(key, batch: int):
  """``z [batch, Z_DIM] ~ N(0, I)``."""
  return jax.random.normal(key, (batch, Z_DIM), jnp.float32)


# ------------------------------------------------------------------ signed distances

def _ellipsoid(p, c, r):
  """Approximate signed distance to an ellipsoid (exact zero set; a bound near the surface).

  p [B, M, 3]; c, r [B, 3].
  """
  q = p - c[:, None]
  r = r[:, None]
  k0 = jnp.sqrt(jnp.sum((q / r) ** 2, -1) + 1e-12)
  k1 = jnp.sqrt(jnp.sum((q / (r * r)) ** 2, -1) + 1e-12)
  return k0 * (k0 - 1.0) / k1


def _smin(a, b, k):
  """Polynomial smooth minimum (<= min(a, b)), blend width k."""
  h = jnp.clip(0.5 + 0.5 * (b - a) / k, 0.0, 1.0)
  return b + (a - b) * h - k * h * (1.0 - h)


def _mirror(c):
  return c * jnp.array([-1.0, 1.0, 1.0])


def _parts(p, s):
  """Signed distances of the materials (skin, eyes, hat, bump), each [B, M]."""
  skin = _smin(_ellipsoid(p, s["head_c"], s["head_r"]), _ellipsoid(p, s["jaw_c"], s["jaw_r"]), 0.06)
  skin = _smin(skin, _ellipsoid(p, s["nose_c"], s["nose_r"]), 0.03)
  # min(right, left): commutative, so a mirrored point gives bit-identical distances.
  ears = jnp.minimum(_ellipsoid(p, s["ear_c"], s["ear_r"]),
                     _ellipsoid(p, _mirror(s["ear_c"]), s["ear_r"]))
  skin = _smin(skin, ears, 0.02)
  er = s["eye_rad"][:, None]
  eyes = jnp.minimum(jnp.linalg.norm(p - s["eye_c"][:, None], axis=-1) - er,
                     jnp.linalg.norm(p - _mirror(s["eye_c"])[:, None], axis=-1) - er)
  # Switched-off features are pushed outward (a constant offset keeps a valid distance bound).
  hat = _ellipsoid(p, s["hat_c"], s["hat_r"]) + 0.3 * (1.0 - s["hat"][:, None])
  bump = (jnp.linalg.norm(p - s["bump_c"][:, None], axis=-1) - 0.035
          + 0.2 * (1.0 - s["bump"][:, None]))
  return skin, eyes, hat, bump


def sdf(p, s):
  """Signed distance of points ``p [B, M, 3]`` to the objects of scene ``s`` (see :func:`scene`)."""
  skin, eyes, hat, bump = _parts(p, s)
  return jnp.minimum(jnp.minimum(_smin(skin, bump, 0.015), eyes), hat)


def _albedo(p, s):
  skin, eyes, hat, bump = _parts(p, s)
  d = jnp.stack([_smin(skin, bump, 0.015), eyes, hat], -1)
  which = jnp.argmin(d, -1)
  # The bump blends into the skin: its colour where it is the nearer of the two.
  skin_rgb = jnp.where((bump < skin)[..., None], s["bump_rgb"][:, None], s["skin"][:, None])
  rgb = jnp.where((which == 1)[..., None], s["eye"][:, None], skin_rgb)
  return jnp.where((which == 2)[..., None], s["hat_rgb"][:, None], rgb)


def _normals(p, s, h=5e-4):
  # Central differences: exactly antisymmetric in x, so mirrored points get mirrored normals.
  e = jnp.eye(3, dtype=p.dtype) * h
  grads = [sdf(p + e[i], s) - sdf(p - e[i], s) for i in range(3)]
  n = jnp.stack(grads, -1)
  return n / jnp.maximum(jnp.linalg.norm(n, axis=-1, keepdims=True), 1e-12)


def _sphere_interval(o, d, radius):
  """Entry/exit distances of rays (o, d unit) through a sphere at the origin; NaN-free.

  Returns (t_near, t_far, hit) [B, M]; for a miss t_near = t_far = distance of closest approach.
  """
  b = jnp.sum(o * d, -1)
  cc = jnp.sum(o * o, -1) - radius * radius
  disc = b * b - cc
  root = jnp.sqrt(jnp.maximum(disc, 0.0))
  return -b - root, -b + root, disc > 0


def trace(dist_fn, origins, dirs, t_near, t_far, steps: int = DEFAULT_STEPS,
          min_step: float = MIN_STEP, bisections: int = BISECTIONS):
  """Sphere tracing with at most ``steps`` steps, a minimum step and a bisection polish.

  Plain sphere tracing crawls along rays that graze a surface; with a minimum step a ray may step
  just past the surface instead, which the sign of the distance shows; the crossing is then found
  by bisection between the last two positions. Features thinner than ``min_step`` could be
  skipped; the world has none.

  Args:
    dist_fn: points [B, M, 3] -> signed distances [B, M] (a 1-Lipschitz bound).
    origins, dirs: [B, M, 3] rays (unit directions).
    t_near, t_far: [B, M] the search interval along each ray (t_near outside every object).
  Returns:
    (t [B, M], hit [B, M] bool): the first surface crossing, hit where it lies within the interval.
  """
  def march(_, carry):
    lo, hi, inside = carry
    d = dist_fn(origins + hi[..., None] * dirs)
    now_inside = inside | (d < 0)
    step = jnp.maximum(0.9 * d, min_step)
    new_hi = jnp.where(now_inside, hi, jnp.minimum(hi + step, t_far + min_step))
    new_lo = jnp.where(now_inside, lo, hi)
    return new_lo, new_hi, now_inside

  def active(carry):
    i, _, hi, inside = carry
    return (i < steps) & jnp.any(~inside & (hi < t_far + min_step))

  # A ray is done once it crossed the surface or left the interval; the loop stops when every ray
  # is done (or after `steps`), so the result equals `steps` fixed iterations.
  inside0 = jnp.zeros(t_near.shape, bool)
  _, lo, hi, inside = jax.lax.while_loop(
      active, lambda c: (c[0] + 1,) + march(c[0], c[1:]), (0, t_near, t_near, inside0))
  # A ray that converged from outside without crossing (|d| tiny at hi) is also a hit.
  d_hi = dist_fn(origins + hi[..., None] * dirs)
  inside = inside | (d_hi < 0)
  converged = jnp.abs(d_hi) < HIT_TOLERANCE

  def bisect(_, carry):
    lo, hi = carry
    mid = 0.5 * (lo + hi)
    d = dist_fn(origins + mid[..., None] * dirs)
    return jnp.where(d < 0, lo, mid), jnp.where(d < 0, mid, hi)

  lo, hi = jax.lax.fori_loop(0, bisections, bisect, (jnp.where(inside, lo, hi), hi))
  t = 0.5 * (lo + hi)
  hit = (inside | converged) & (t <= t_far)
  return t, hit


def _light():
  l = np.asarray(LIGHT, np.float32)
  return jnp.asarray(l / np.linalg.norm(l))


def _background(o, d, s):
  _, t_far, hit = _sphere_interval(o, d, BACKGROUND_RADIUS)
  t_closest = -jnp.sum(o * d, -1)
  p = o + jnp.where(hit, t_far, t_closest)[..., None] * d
  w = jax.nn.sigmoid((p[..., 1] - s["bg_horizon"][:, None]) / 0.12)[..., None]
  return w * s["bg_top"][:, None] + (1 - w) * s["bg_bottom"][:, None]


def _render_rays(s, origins, dirs, steps):
  t_near, t_far, bound_hit = _sphere_interval(origins, dirs, BOUND_RADIUS)
  t_near = jnp.maximum(t_near, 0.0)
  t, hit = trace(lambda p: sdf(p, s), origins, dirs, t_near, t_far, steps)
  hit = hit & bound_hit
  p = origins + t[..., None] * dirs
  n = _normals(p, s)
  shade = AMBIENT + (1 - AMBIENT) * jnp.maximum(jnp.sum(n * _light(), -1), 0.0)
  fg = _albedo(p, s) * shade[..., None]
  rgb = jnp.where(hit[..., None], fg, _background(origins, dirs, s))
  depth = jnp.where(hit, t, jnp.inf)
  return rgb, depth, hit


@functools.lru_cache(maxsize=None)
def _render_fn(resolution: int, steps: int):
  @jax.jit
  def fn(z, c):
    s = scene(z)
    origins, dirs = rays_from_label(c, resolution)
    rgb, depth, hit = _render_rays(s, origins, dirs, steps)
    b = z.shape[0]
    shape = (b, resolution, resolution)
    return dict(image=jnp.clip(rgb * 2.0 - 1.0, -1.0, 1.0).reshape(shape + (3,)),
                depth=depth.reshape(shape + (1,)),
                mask=hit.astype(jnp.float32).reshape(shape + (1,)))
  return fn


def _check_z(z):
  checks.check_shape(z, "z", (None, Z_DIM), f"world latents [B, {Z_DIM}]")
  checks.check_floating(z, "z")
  checks.check_finite(z, "z")


def _check_resolution(resolution):
  if isinstance(resolution, bool) or int(resolution) != resolution or int(resolution) < 1:
    raise ValueError(f"resolution must be a positive int, got {resolution!r}")
  return int(resolution)


def render(z, c, resolution: int = 64, *, steps: int = DEFAULT_STEPS) -> dict:
  """Renders the scenes ``z`` from cameras ``c``; pure and jit-compiled (once per resolution, steps).

  Args:
    z: [B, Z_DIM] scene latents (``sample_z``; N(0, I)).
    c: [B, 25] EG3D camera labels (``jaxinv.Camera.look_at(...).label``); also a ``Camera``.
    resolution: R, pixels per side (one ray through each pixel centre).
    steps: sphere-tracing steps (the default converges to well below 1e-4 on the orbit).
  Returns:
    dict(image [B, R, R, 3] float32 in [-1, 1], depth [B, R, R, 1] distance from the camera centre
    along the unit ray (+inf off the object), mask [B, R, R, 1] float32 in {0, 1}).
  """
  if isinstance(c, camera_lib.Camera):
    c = c.label
  _check_z(z)
  camera_lib.validate_label(c)
  if np.shape(c)[0] != np.shape(z)[0]:
    raise ValueError(f"z and c must have the same batch size, got z {np.shape(z)} and c {np.shape(c)}")
  resolution = _check_resolution(resolution)
  steps = _check_resolution(steps)
  return _render_fn(resolution, steps)(jnp.asarray(z, jnp.float32), jnp.asarray(c, jnp.float32))


def render_jit(z, c, resolution: int = 64, steps: int = DEFAULT_STEPS) -> dict:
  """:func:`render` without host-side checks, for use inside a jitted function (training batches)."""
  s = scene(z)
  origins, dirs = rays_from_label(c, resolution)
  rgb, depth, hit = _render_rays(s, origins, dirs, steps)
  shape = (z.shape[0], resolution, resolution)
  return dict(image=jnp.clip(rgb * 2.0 - 1.0, -1.0, 1.0).reshape(shape + (3,)),
              depth=depth.reshape(shape + (1,)), mask=hit.astype(jnp.float32).reshape(shape + (1,)))


def mesh(z, resolution: int = 96):
  """Ground-truth surface of ONE scene by marching cubes of its SDF (needs scikit-image).

  Args:
    z: [Z_DIM] or [1, Z_DIM].
    resolution: grid points per side over the object's bounding cube.
  Returns:
    (vertices [V, 3] float32 world coordinates, faces [F, 3] int32, colors [V, 3] float32 albedo
    in [0, 1]).
  """
  try:
    from skimage import measure
  except ImportError as e:  # pragma: no cover - depends on the environment
    raise ImportError("world.mesh needs scikit-image: pip install scikit-image") from e
  z = jnp.asarray(z, jnp.float32).reshape(1, -1)
  _check_z(z)
  n = _check_resolution(resolution)
  s = scene(z)
  axis = np.linspace(-BOUND_RADIUS, BOUND_RADIUS, n, dtype=np.float32)
  grid = np.stack(np.meshgrid(axis, axis, axis, indexing="ij"), -1).reshape(1, -1, 3)
  values = np.array(jax.jit(sdf)(jnp.asarray(grid), s)).reshape(n, n, n)
  step = float(axis[1] - axis[0])
  verts, faces, _, _ = measure.marching_cubes(values, level=0.0, spacing=(step,) * 3)
  verts = (verts - BOUND_RADIUS).astype(np.float32)
  colors = np.asarray(jax.jit(_albedo)(jnp.asarray(verts[None]), s))[0]
  return verts, faces.astype(np.int32), colors.astype(np.float32)


def orbit_label(yaw, pitch=0.0):
  """EG3D FFHQ-orbit camera labels ``[B, 25]`` (jnp, jittable): yaw/pitch [B] radians."""
  yaw = jnp.asarray(yaw, jnp.float32).reshape(-1)
  pitch = jnp.broadcast_to(jnp.asarray(pitch, jnp.float32).reshape(-1), yaw.shape)
  cam2world = camera_lib.look_at_pose(math.pi / 2 + yaw, math.pi / 2 + pitch)
  return camera_lib.matrices_to_label(cam2world, camera_lib.intrinsics_matrix())
