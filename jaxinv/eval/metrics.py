"""The inversion papers' image metrics as pure, batched functions: every one returns ``[B]``.

Images are NHWC float32 in [-1, 1] (data range 2). Per-image values; a table reports their mean
over the test set.

* :func:`mse`, :func:`psnr`: mean over pixels and channels; PSNR = ``10 log10(L^2 / MSE)``.
* :func:`ssim`, :func:`ms_ssim`: ``jaxinv.losses.ssim`` (Gaussian 11x11, sigma 1.5; MS-SSIM needs
  a shorter side of at least 161 pixels).
* :func:`lpips`: LPIPS v0.1 with converted weights (``jaxinv convert lpips``).
* :func:`id_similarity`: ArcFace cosine similarity with a named crop (``"psp"``: pSp's
  ``IDLoss`` box on a 256x256 image, images of another size are resized to 256 first;
  ``"none"``: the whole image pooled to 112x112, PREIM3D's EG3D-crop path).
* :func:`depth_error`: mean absolute depth error over the true foreground.
"""
from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jaxinv.checks import check_rank
from jaxinv.losses import arcface as _arcface
from jaxinv.losses import lpips as _lpips
from jaxinv.losses import ssim as _ssim

DATA_RANGE = 2.0
ID_CROPS = ("psp", "none")


def _pair(a, b, what):
  check_rank(a, f"{what}: a", 4, "[B, H, W, C]")
  if np.shape(a) != np.shape(b):
    raise ValueError(f"{what}: a {np.shape(a)} and b {np.shape(b)} must have the same shape")
  return jnp.asarray(a, jnp.float32), jnp.asarray(b, jnp.float32)


# Each metric is one compiled function (eager op-by-op dispatch of SSIM or LPIPS costs tens of
# seconds of per-op compilation on CPU); the public functions check shapes on the host first.
_mse = jax.jit(lambda a, b: jnp.mean((a - b) ** 2, axis=(1, 2, 3)))
_psnr = jax.jit(lambda a, b, r: 10.0 * jnp.log10(r ** 2 / jnp.maximum(
    jnp.mean((a - b) ** 2, axis=(1, 2, 3)), 1e-12)))
_ssim_fn = jax.jit(lambda a, b: _ssim.ssim(jnp.clip(a, -1, 1), b))
_ms_ssim_fn = jax.jit(lambda a, b: _ssim.ms_ssim(jnp.clip(a, -1, 1), b))
_lpips_fn = jax.jit(lambda v, a, b, net: _lpips.lpips_distance(v, jnp.clip(a, -1, 1), b, net),
                    static_argnums=3)


def mse(a, b) -> jax.Array:
  """Per-image mean squared error ``[B]`` of ``a, b [B, H, W, C]``."""
  return _mse(*_pair(a, b, "mse"))


def psnr(a, b, data_range: float = DATA_RANGE) -> jax.Array:
  """Per-image PSNR in dB ``[B]``: ``10 log10(data_range^2 / max(MSE, 1e-12))``."""
  return _psnr(*_pair(a, b, "psnr"), float(data_range))


def ssim(a, b) -> jax.Array:
  """Per-image SSIM ``[B]``; ``a`` (the prediction) is clipped to [-1, 1] first."""
  a, b = _pair(a, b, "ssim")
  _ssim._check_pair(jnp.clip(a, -1, 1), b, 11, "ssim", DATA_RANGE)
  return _ssim_fn(a, b)


def ms_ssim(a, b) -> jax.Array:
  """Per-image MS-SSIM ``[B]`` (shorter side >= 161); ``a`` is clipped to [-1, 1] first."""
  a, b = _pair(a, b, "ms_ssim")
  if min(a.shape[1:3]) < ms_ssim_min_side():
    raise ValueError(f"ms_ssim: images of {tuple(a.shape[1:3])} are too small; the shorter side "
                     f"must be at least {ms_ssim_min_side()}")
  return _ms_ssim_fn(a, b)


def ms_ssim_min_side() -> int:
  return (11 - 1) * 2 ** (len(_ssim.MS_SSIM_WEIGHTS) - 1) + 1


def lpips(variables, a, b, net: str = "alex") -> jax.Array:
  """Per-image LPIPS distance ``[B]`` (lower is better); ``a`` is clipped to [-1, 1] first."""
  a, b = _pair(a, b, "lpips")
  _lpips._check_net(net)
  _lpips._check_pair(a, b, net)
  return _lpips_fn(variables, a, b, net)


def _resize(x, size):
  if x.shape[1:3] == (size, size):
    return x
  return jax.image.resize(x, (x.shape[0], size, size, x.shape[3]), "linear", antialias=True)


def _id_parts(network):
  if isinstance(network, tuple) and len(network) == 2:
    module, variables = network
    return module, variables, lambda v, x: module.apply(v, x)
  if callable(network):
    return network, None, lambda v, x: network(x)
  raise TypeError("id network: expected (flax module, variables) or a callable, got "
                  f"{type(network).__name__}")


def _embed(apply, variables, images, crop):
  x = jnp.clip(images, -1, 1)
  if crop == "psp":
    x = _resize(x, _arcface.PSP_SIZE)
  e = apply(variables, _arcface.id_preprocess(x, crop))
  return e / jnp.maximum(jnp.linalg.norm(e, axis=-1, keepdims=True), 1e-12)


_ID_JIT = {}  # (id(network), crop, what) -> (network kept alive, compiled fn)


def _id_jit(network, crop, what):
  if crop not in ID_CROPS:
    raise ValueError(f"crop must be one of {ID_CROPS}, got {crop!r}")
  owner, variables, apply = _id_parts(network)
  k = (id(owner), crop, what)
  if k not in _ID_JIT:
    if what == "embed":
      f = lambda v, x: _embed(apply, v, x, crop)
    else:
      f = lambda v, a, b: jnp.sum(_embed(apply, v, a, crop) * _embed(apply, v, b, crop), axis=-1)
    _ID_JIT[k] = (owner, jax.jit(f))
  return variables, _ID_JIT[k][1]


def id_embed(network, images, crop: str = "psp") -> jax.Array:
  """Unit-norm identity embeddings ``[B, D]`` of ``images [B, H, W, 3]``.

  Args:
    network: ``(module, variables)``: a Flax module mapping ``[B, 112, 112, 3]`` in [-1, 1] to
      embeddings (ArcFace IR-SE-50 from ``jaxinv.convert.irse.load_native_arcface``, or any
      stand-in), or a callable ``f(x [B, 112, 112, 3]) -> [B, D]``.
    crop: ``"psp"`` or ``"none"`` (see the module docstring).
  """
  check_rank(images, "images", 4, "[B, H, W, 3]")
  variables, f = _id_jit(network, crop, "embed")
  return f(variables, jnp.asarray(images, jnp.float32))


def id_similarity(network, a, b, crop: str = "psp") -> jax.Array:
  """Per-pair cosine similarity ``[B]`` of the identity embeddings of ``a`` and ``b`` (1 = same)."""
  a, b = _pair(a, b, "id_similarity")
  variables, f = _id_jit(network, crop, "similarity")
  return f(variables, a, b)


def depth_error(pred_depth, true_depth, mask) -> jax.Array:
  """Mean ``|pred - true|`` over each image's foreground ``[B]`` (NaN where it has none).

  Args:
    pred_depth, true_depth: ``[B, R, R, 1]`` distances along the camera rays (EG3D
      ``image_depth``); ``true_depth`` may be +inf off the object.
    mask: ``[B, R, R, 1]`` foreground (nonzero = counted); pixels where the truth is not finite
      are never counted.
  """
  p, t = _pair(pred_depth, true_depth, "depth_error")
  if np.shape(mask) != np.shape(p):
    raise ValueError(f"depth_error: mask {np.shape(mask)} must have the depth's shape {p.shape}")
  return _depth_error(p, t, jnp.asarray(mask))


@jax.jit
def _depth_error(p, t, mask):
  m = (mask > 0) & jnp.isfinite(t)
  err = jnp.where(m, jnp.abs(p - jnp.where(m, t, 0.0)), 0.0)
  n = jnp.sum(m, axis=(1, 2, 3))
  return jnp.where(n > 0, jnp.sum(err, axis=(1, 2, 3)) / jnp.maximum(n, 1), jnp.nan)


IdNetwork = Any  # (module, variables) | Callable[[jax.Array], jax.Array]


# ------------------------------------------------------------------------------------ FID / KID
# Set-level metrics over Inception pool3 features (``jaxinv.models.inception.features`` with the
# FID weights from ``jaxinv convert inception``). Computed on the host in float64.

def _features_2d(f, name):
  f = np.asarray(f, np.float64)
  check_rank(f, name, 2, "[N, D]")
  if not np.all(np.isfinite(f)):
    raise ValueError(f"{name}: contains NaN or inf")
  return f


def _sqrtm_psd(s):
  vals, vecs = np.linalg.eigh((s + s.T) / 2)
  return (vecs * np.sqrt(np.clip(vals, 0, None))) @ vecs.T


def frechet_distance(mu1, sigma1, mu2, sigma2) -> float:
  """``|mu1 - mu2|^2 + tr(S1 + S2 - 2 (S1 S2)^(1/2))`` between two Gaussians.

  The trace of the matrix square root is taken as ``tr((S1^(1/2) S2 S1^(1/2))^(1/2))`` (the same
  eigenvalues as ``S1 S2``, but a symmetric matrix, so no complex round-off as ``sqrtm`` of the
  product can give).
  """
  mu1, mu2 = np.asarray(mu1, np.float64), np.asarray(mu2, np.float64)
  s1, s2 = np.asarray(sigma1, np.float64), np.asarray(sigma2, np.float64)
  r1 = _sqrtm_psd(s1)
  inner = np.linalg.eigvalsh((r1 @ s2 @ r1 + (r1 @ s2 @ r1).T) / 2)
  tr_sqrt = float(np.sum(np.sqrt(np.clip(inner, 0, None))))
  return float(np.sum((mu1 - mu2) ** 2) + np.trace(s1) + np.trace(s2) - 2 * tr_sqrt)


def fid(features_a, features_b) -> float:
  """FID between two feature sets ``[N, D]`` (means and unbiased covariances, as pytorch-fid and
  StyleGAN's metrics). Needs N >= 2 in each; with N below D the covariances are rank-deficient
  and the value is biased upwards (papers use 50k generated / the whole test set)."""
  a, b = _features_2d(features_a, "features_a"), _features_2d(features_b, "features_b")
  if a.shape[1] != b.shape[1]:
    raise ValueError(f"feature sizes differ: {a.shape} and {b.shape}")
  if min(len(a), len(b)) < 2:
    raise ValueError(f"FID needs at least 2 samples per set, got {len(a)} and {len(b)}")
  return frechet_distance(a.mean(0), np.cov(a, rowvar=False), b.mean(0), np.cov(b, rowvar=False))


def kid(features_a, features_b, *, num_subsets: int = 100, max_subset_size: int = 1000,
        seed: int = 0) -> float:
  """KID: the unbiased MMD^2 with the cubic polynomial kernel ``(x.y / D + 1)^3``, averaged over
  ``num_subsets`` random subsets of ``min(N_a, N_b, max_subset_size)`` samples of each set
  (StyleGAN-ADA's estimator and defaults). Needs N >= 2."""
  a, b = _features_2d(features_a, "features_a"), _features_2d(features_b, "features_b")
  if a.shape[1] != b.shape[1]:
    raise ValueError(f"feature sizes differ: {a.shape} and {b.shape}")
  m = min(len(a), len(b), int(max_subset_size))
  if m < 2:
    raise ValueError(f"KID needs at least 2 samples per set, got {len(a)} and {len(b)}")
  if num_subsets < 1:
    raise ValueError(f"num_subsets must be >= 1, got {num_subsets}")
  d = a.shape[1]
  rng = np.random.default_rng(seed)
  total = 0.0
  for _ in range(int(num_subsets)):
    x = a[rng.choice(len(a), m, replace=False)]
    y = b[rng.choice(len(b), m, replace=False)]
    kxx = (x @ x.T / d + 1) ** 3
    kyy = (y @ y.T / d + 1) ** 3
    kxy = (x @ y.T / d + 1) ** 3
    within = (kxx.sum() - np.trace(kxx) + kyy.sum() - np.trace(kyy)) / (m * (m - 1))
    total += within - 2 * kxy.mean()
  return float(total / num_subsets)
