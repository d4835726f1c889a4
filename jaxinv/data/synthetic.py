"""On-device synthetic training data: latents, FFHQ-like cameras, mirroring, truncation, and batches
rendered by a frozen EG3D generator.

Everything here is a pure ``jnp`` function of an explicit PRNG ``key`` and small frozen dataclasses, so
it runs inside a jitted train step (``generate`` included: a generated batch never touches the host)::

    cfg = SyntheticConfig(poses=PoseDistribution.preim3d(), truncation_psi=0.7, truncation_cutoff=14)
    batch = jax.jit(generate, static_argnums=(2, 3))(G, key, 8, cfg)
    batch["image"]      # [8, IMG, IMG, 3] in [-1, 1] (rendered at batch["c"])
    batch["ws"]         # [8, num_ws, w_dim], the latent regression target

Camera conventions are :mod:`jaxinv.render.camera`'s (EG3D's 25-number label). The pose samplers use
EG3D's ``LookAtPoseSampler`` angles: ``h = pi/2 + yaw`` (azimuth; positive yaw puts the camera at
+x, i.e. it sees the subject's left cheek), ``v = pi/2 + pitch`` (EG3D's warped polar angle;
positive pitch puts the camera below the face), on a sphere of radius 2.7 around the world origin,
aimed at the pivot (0, 0, 0.2). :func:`pose_angles` inverts that map exactly, so sampled statistics
can be checked in those units.
"""
from __future__ import annotations

import dataclasses
import math

import jax
import jax.numpy as jnp
import numpy as np

from jaxinv.render import camera as cam

POSE_KINDS = ("gaussian", "uniform", "fixed", "labels")
CONDITIONINGS = ("render", "canonical")

# GOAE's ``c_front``: the frontal camera at radius 2.7 aiming at the pivot, EG3D's intrinsics. Same as
# ``Camera.look_at(0, 0).label`` up to float rounding, written out so the canonical camera is exact.
C_FRONT = np.array([1, 0, 0, 0, 0, -1, 0, 0, 0, 0, -1, 2.7, 0, 0, 0, 1,
                    cam.DEFAULT_FOCAL, 0, 0.5, 0, cam.DEFAULT_FOCAL, 0.5, 0, 0, 1], np.float32)

# flip_yaw as a sign pattern on the 25 label numbers: cam2world entries (0, 1), (0, 2), (0, 3), (1, 0),
# (2, 0) (row-major 1, 2, 3, 4, 8) change sign.
FLIP_YAW_SIGN = np.ones(25, np.float32)
FLIP_YAW_SIGN[[1, 2, 3, 4, 8]] = -1.0
FLIP_YAW_SIGN.setflags(write=False)


@dataclasses.dataclass(frozen=True)
class PoseDistribution:
  """A distribution of render cameras (all angles in radians, relative to the frontal view).

  Attributes:
    kind: ``"gaussian"``: yaw ~ N(yaw_mean, yaw_std), pitch ~ N(pitch_mean, pitch_std) (EG3D's
      ``GaussianCameraPoseSampler`` / ``LookAtPoseSampler`` with stddevs); ``"uniform"``:
      yaw ~ U(yaw_mean -/+ yaw_range), pitch ~ U(pitch_mean -/+ pitch_range) (EG3D's
      ``UniformCameraPoseSampler`` convention: the range is the half width); ``"fixed"``: every
      camera at (yaw_mean, pitch_mean) (with the defaults exactly :data:`C_FRONT`); ``"labels"``:
      rows drawn uniformly from an array of dataset labels passed as ``labels=`` (FFHQ's own pose
      distribution, as EG3D trains and TriPlaneNet samples).
    yaw_mean, pitch_mean: centre of the distribution.
    yaw_std, pitch_std: standard deviations (``"gaussian"``).
    yaw_range, pitch_range: half widths (``"uniform"``).
    per_batch: one (yaw, pitch) for the whole batch (PREIM3D's code draws one per batch) instead of
      one per sample.
    flip_prob: probability of replacing each sampled camera by its :func:`flip_yaw` mirror
      (TriPlaneNet: "FFHQ poses and their flipped versions"); 0 = never.
    radius: orbit radius around the world origin.
    lookat: the point every sampled camera aims at (EG3D FFHQ's ``avg_camera_pivot``).
    focal: normalized focal length (principal point at the centre).
  """
  kind: str = "gaussian"
  yaw_mean: float = 0.0
  pitch_mean: float = 0.0
  yaw_std: float = 0.25
  pitch_std: float = 0.12
  yaw_range: float = 0.0
  pitch_range: float = 0.0
  per_batch: bool = False
  flip_prob: float = 0.0
  radius: float = cam.DEFAULT_RADIUS
  lookat: tuple[float, float, float] = cam.DEFAULT_LOOKAT
  focal: float = cam.DEFAULT_FOCAL

  def __post_init__(self):
    if self.kind not in POSE_KINDS:
      raise ValueError(f"PoseDistribution.kind must be one of {POSE_KINDS}, got {self.kind!r}")
    for f in ("yaw_std", "pitch_std", "yaw_range", "pitch_range"):
      if getattr(self, f) < 0:
        raise ValueError(f"PoseDistribution.{f} must be >= 0, got {getattr(self, f)}")
    if not 0.0 <= self.flip_prob <= 1.0:
      raise ValueError(f"PoseDistribution.flip_prob must be in [0, 1], got {self.flip_prob}")
    object.__setattr__(self, "lookat", tuple(float(x) for x in self.lookat))

  @classmethod
  def eg3d_gaussian(cls, yaw_std: float = 0.25, pitch_std: float = 0.12, **kw) -> "PoseDistribution":
    """EG3D's Gaussian yaw/pitch sampler around the frontal view.

    The defaults 0.25 / 0.12 rad are the stddevs PREIM3D's code passes to
    ``GaussianCameraPoseSampler`` (EG3D itself trains on the dataset labels: use ``kind="labels"``
    for FFHQ's exact distribution).
    """
    return cls(kind="gaussian", yaw_std=yaw_std, pitch_std=pitch_std, **kw)

  @classmethod
  def preim3d(cls, per_batch: bool = True, **kw) -> "PoseDistribution":
    """PREIM3D's in-domain cameras: yaw ~ U(+-30 deg), pitch ~ U(+-20 deg), one draw per batch
    as in its code (``per_batch=False`` draws one per sample, as the paper's text reads)."""
    return cls(kind="uniform", yaw_range=math.radians(30.0), pitch_range=math.radians(20.0),
               per_batch=per_batch, **kw)

  @classmethod
  def canonical(cls, **kw) -> "PoseDistribution":
    """Always the frontal camera (GOAE's ``c_front`` with the defaults)."""
    return cls(kind="fixed", **kw)

  @classmethod
  def labels(cls, flip_prob: float = 0.0, **kw) -> "PoseDistribution":
    """Rows of a label array (pass ``labels=`` to the samplers); ``flip_prob=0.5`` adds flips."""
    return cls(kind="labels", flip_prob=flip_prob, **kw)


@dataclasses.dataclass(frozen=True)
class SyntheticConfig:
  """How :func:`generate` makes a batch.

  Attributes:
    poses: the render cameras' distribution.
    truncation_psi: psi of ``G.mapping`` (1.0 = none; PREIM3D's code uses 0.7).
    truncation_cutoff: truncate only ``ws[:, :cutoff]``; None = all (PREIM3D: 14 = all for EG3D).
    conditioning: the camera the mapping network sees: ``"render"`` (the render camera, as
      PREIM3D's code does) or ``"canonical"`` (:data:`C_FRONT`, GOAE's "static canonical pose").
    mirror: horizontally flip each generated sample with probability ``mirror_prob`` and replace its
      camera by :func:`flip_yaw` (the pair stays a valid (image, camera) pair of the mirrored scene,
      but ``ws`` no longer generates it exactly: leave off when ``ws`` is a regression target).
    mirror_prob: probability of flipping each sample when ``mirror`` is on.
    random_render: pass a key to ``G.synthesis`` (random stratified and importance sampling, as the
      official renderer always does); False renders deterministically.
    neural_rendering_resolution: None = the generator's own.
  """
  poses: PoseDistribution = PoseDistribution()
  truncation_psi: float = 1.0
  truncation_cutoff: int | None = None
  conditioning: str = "render"
  mirror: bool = False
  mirror_prob: float = 0.5
  random_render: bool = True
  neural_rendering_resolution: int | None = None

  def __post_init__(self):
    if self.conditioning not in CONDITIONINGS:
      raise ValueError(f"SyntheticConfig.conditioning must be one of {CONDITIONINGS}, "
                       f"got {self.conditioning!r}")
    if not 0.0 <= self.mirror_prob <= 1.0:
      raise ValueError(f"SyntheticConfig.mirror_prob must be in [0, 1], got {self.mirror_prob}")


# ------------------------------------------------------------------ latents


def sample_latents(key, batch: int, z_dim: int):
  """z ~ N(0, I): ``[batch, z_dim]`` float32."""
  return jax.random.normal(key, (batch, z_dim), jnp.float32)


# ------------------------------------------------------------------ cameras


def canonical_cameras(batch: int):
  """:data:`C_FRONT` repeated: ``[batch, 25]``."""
  return jnp.broadcast_to(jnp.asarray(C_FRONT), (batch, 25))


def look_at_labels(yaw, pitch, dist: PoseDistribution = PoseDistribution()):
  """Labels ``[B, 25]`` of look-at cameras at ``yaw, pitch`` ([B] radians) on ``dist``'s orbit."""
  yaw = jnp.asarray(yaw, jnp.float32).reshape(-1)
  pitch = jnp.asarray(pitch, jnp.float32).reshape(-1)
  cam2world = cam.look_at_pose(math.pi / 2 + yaw, math.pi / 2 + pitch, dist.lookat, dist.radius)
  return cam.matrices_to_label(cam2world, cam.intrinsics_matrix(dist.focal))


def pose_angles(c):
  """The sampler angles ``(yaw [B], pitch [B])`` of cameras ``c [B, 25]``, read from their centres.

  Exact inverse of the orbit in :func:`look_at_labels` (EG3D's ``LookAtPoseSampler``): with the
  centre (x, y, z) at distance r from the world origin, yaw = pi/2 - atan2(z, x) and
  pitch = -(pi/2) * y / r (EG3D warps the polar angle through arccos(1 - 2v/pi)). Note the sign:
  a positive pitch is a camera *below* the face, unlike ``asin(y / r)``.
  """
  c = jnp.asarray(c, jnp.float32)
  x, y, z = c[:, 3], c[:, 7], c[:, 11]
  r = jnp.sqrt(x * x + y * y + z * z)
  return math.pi / 2 - jnp.arctan2(z, x), -(math.pi / 2) * y / r


def flip_yaw(c):
  """EG3D's ``flip_yaw`` on labels ``c [B, 25]``: the camera of the x-mirrored scene.

  The official body (``dataset_preprocessing/mirror_dataset.py``) negates the cam2world entries
  (0, 1), (0, 2), (1, 0), (2, 0), (0, 3), i.e. ``S P S`` with S = diag(-1, 1, 1, 1), and leaves the
  intrinsics alone. Used together with a horizontal flip of the image (:func:`mirror`). It is an
  involution, and equals :func:`jaxinv.render.camera.mirror_label` for centred intrinsics
  (cx = 0.5, no skew), which EG3D's labels always have.
  """
  c = jnp.asarray(c)
  return c * jnp.asarray(FLIP_YAW_SIGN, c.dtype)


def flip_images(x):
  """Horizontal flip of NHWC images ``[B, H, W, C]``."""
  return x[:, :, ::-1, :]


def mirror(key, images, c, prob: float = 0.5):
  """Mirror augmentation: each sample is flipped with probability ``prob`` (image and camera).

  Args:
    key: PRNG key.
    images: an NHWC array ``[B, H, W, C]`` or a dict of them (image, image_raw, depth, ...; every
      value is flipped with the same per-sample decision).
    c: [B, 25] camera labels; flipped samples get :func:`flip_yaw`.
    prob: flip probability.

  Returns:
    (images, c, flipped [B] bool), images in the same structure as given.
  """
  c = jnp.asarray(c)
  flipped = jax.random.bernoulli(key, prob, (c.shape[0],))

  def flip(x):
    return jnp.where(flipped[:, None, None, None], flip_images(x), x)

  images = jax.tree_util.tree_map(flip, images)
  return images, jnp.where(flipped[:, None], flip_yaw(c), c), flipped


def _angles(key, batch: int, dist: PoseDistribution):
  n = 1 if dist.per_batch else batch
  ky, kp = jax.random.split(key)
  if dist.kind == "gaussian":
    yaw = dist.yaw_mean + dist.yaw_std * jax.random.normal(ky, (n,))
    pitch = dist.pitch_mean + dist.pitch_std * jax.random.normal(kp, (n,))
  elif dist.kind == "uniform":
    yaw = dist.yaw_mean + dist.yaw_range * jax.random.uniform(ky, (n,), minval=-1.0, maxval=1.0)
    pitch = dist.pitch_mean + dist.pitch_range * jax.random.uniform(kp, (n,), minval=-1.0,
                                                                    maxval=1.0)
  else:  # fixed
    yaw = jnp.full((n,), dist.yaw_mean, jnp.float32)
    pitch = jnp.full((n,), dist.pitch_mean, jnp.float32)
  return jnp.broadcast_to(yaw, (batch,)), jnp.broadcast_to(pitch, (batch,))


def sample_poses(key, batch: int, dist: PoseDistribution = PoseDistribution(), labels=None):
  """Render cameras ``c [batch, 25]`` drawn from ``dist``.

  Args:
    key: PRNG key.
    batch: number of cameras (static).
    dist: the distribution.
    labels: ``[N, 25]`` label array, required for (and only used by) ``kind="labels"``.
  """
  k_pose, k_flip = jax.random.split(key)
  if dist.kind == "labels":
    if labels is None:
      raise ValueError('PoseDistribution(kind="labels") needs labels=[N, 25] (e.g. a dataset\'s '
                       "labels from jaxinv.data.eg3d_dataset)")
    labels = jnp.asarray(labels, jnp.float32)
    if labels.ndim != 2 or labels.shape[1] != 25:
      raise ValueError(f"labels: expected [N, 25] camera labels, got shape {labels.shape}")
    n = 1 if dist.per_batch else batch
    idx = jax.random.randint(k_pose, (n,), 0, labels.shape[0])
    c = jnp.broadcast_to(labels[idx], (batch, 25))
  elif dist.kind == "fixed" and dist == PoseDistribution.canonical():
    c = canonical_cameras(batch)
  else:
    c = look_at_labels(*_angles(k_pose, batch, dist), dist=dist)
  if dist.flip_prob > 0:
    flip = jax.random.bernoulli(k_flip, dist.flip_prob, (batch,))
    c = jnp.where(flip[:, None], flip_yaw(c), c)
  return c


# ------------------------------------------------------------------ generated batches


def generate(G, key, batch: int, config: SyntheticConfig = SyntheticConfig(), labels=None):
  """A batch rendered by the frozen generator ``G`` (pure; jit with ``batch``, ``config`` static).

  z ~ N(0, I); render cameras from ``config.poses``; ``ws = G.mapping(z, c_map, psi, cutoff)`` with
  ``c_map`` the render camera or :data:`C_FRONT` (``config.conditioning``); then
  ``G.synthesis(ws, c)``; then optional mirroring.

  Args:
    G: an :class:`jaxinv.models.eg3d.EG3DGenerator` (a pytree: pass it as a jit argument).
    key: PRNG key.
    batch: batch size (static).
    config: :class:`SyntheticConfig` (static).
    labels: ``[N, 25]`` label array for ``PoseDistribution(kind="labels")``.

  Returns:
    dict(image [B, IMG, IMG, 3] in [-1, 1], image_raw [B, R, R, 3], image_depth [B, R, R, 1],
         c [B, 25] the camera the image shows (after mirroring), c_map [B, 25] the mapping's
         conditioning camera, ws [B, num_ws, w_dim], z [B, z_dim], mirrored [B] bool).
  """
  k_z, k_c, k_render, k_mirror = jax.random.split(key, 4)
  z = sample_latents(k_z, batch, G.z_dim)
  c = sample_poses(k_c, batch, config.poses, labels)
  c_map = c if config.conditioning == "render" else canonical_cameras(batch)
  ws = G.mapping(z, c_map, truncation_psi=config.truncation_psi,
                 truncation_cutoff=config.truncation_cutoff)
  out = G.synthesis(ws, c, key=k_render if config.random_render else None,
                    neural_rendering_resolution=config.neural_rendering_resolution)
  images = {k: out[k] for k in ("image", "image_raw", "image_depth")}
  if config.mirror:
    images, c, mirrored = mirror(k_mirror, images, c, config.mirror_prob)
  else:
    mirrored = jnp.zeros((batch,), bool)
  return dict(images, c=c, c_map=c_map, ws=ws, z=z, mirrored=mirrored)


# One compiled ``generate`` per (batch, config) for host-side callers (the train step jits its own).
generate_jit = jax.jit(generate, static_argnums=(2, 3))
