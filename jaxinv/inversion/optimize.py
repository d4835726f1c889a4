"""Optimisation baselines: W / W+ projection, PTI, and TriPlaneNet's tri-plane L-BFGS.

Every baseline is ONE compiled loop (``lax.scan``) per configuration; nothing steps from Python.
Defaults follow the released code the papers compare against (``shared/RECIPES.md`` 6.1, 2.5):

``project`` (methods ``w`` / ``wplus``; the EG3D projector, after StyleGAN2's):
  start at ``w_avg`` (mean of ``num_w_samples`` mapped z under the image's camera), Adam
  (0.9, 0.999), learning rate ``lr * ramp(t)`` with a cosine ramp-down over the last 25 % and a
  linear ramp-up over the first 5 %, Gaussian noise on w of std
  ``w_std * 0.05 * max(0, 1 - t / 0.75)^2`` (t = step / steps), loss
  ``lpips_weight * LPIPS + l2_weight * MSE`` at <= 256^2 (area-downsampled) plus
  ``noise_weight`` x the multi-scale autocorrelation penalty on the generator's per-layer noise
  maps, which are optimised too and renormalised after every step (StyleGAN2). ``w`` optimises one
  code shared by every layer, ``wplus`` one per layer. Each image is optimised on its own (the
  loop is vmapped over the batch); the optimised noise maps are dropped afterwards, as the
  projectors do (the result renders with the generator's own noise).
  Defaults: 1000 steps (TriPlaneNet's W+ baseline), lr 0.01, noise_weight 1e5.

``pti`` (Roich et al., PTI release defaults): a pivot (``w`` projection, 450 steps, lr 5e-3, or
  any codes given), then the generator's parameters (synthesis, superresolution, decoder; not the
  mapping network nor the noise buffers) are tuned for 350 Adam steps at lr 3e-4 on
  ``l2_weight * MSE + lpips_weight * LPIPS`` (both 1) at the input view; tuning stops once LPIPS
  <= 0.07 (when LPIPS is used). The locality regulariser (PTI Sec. 3.3) renders a code moved
  ``alpha = 30`` from the pivot towards a random ``w`` (mapped with psi 0.5) with the tuned and the
  original generator and adds ``0.1 * MSE + 0.1 * LPIPS`` between them; on, as in the release's
  ``configs/hyperparameters.py`` (``use_locality_regularization = True``), and off with
  ``locality_weight=0``. A batch of images tunes ONE generator on all of them (PTI's multi-ID
  mode); for one generator per image, invert images one at a time.

``triplane_opt`` (TriPlaneNet Sec. 4.3, App. D): L-BFGS (``optax.lbfgs``, zoom line search of at
  most 20 evaluations, memory 10; ``linesearch='backtracking'`` is cheaper to compile) on tri-plane offsets dT added to ``G.planes(ws)``, 50 steps (~1K
  function evaluations), loss ``l2 + lpips`` at the input view plus ``reg_weight`` x the same
  distance between the render and the first branch's prediction (the render of the starting
  planes), which keeps the offsets from drifting. Vmapped over the batch (one line search per
  image).

When no LPIPS network is given the perceptual term is dropped (L2 only) and the result says so in
``extra['lpips']``.
"""
from __future__ import annotations

import dataclasses
import functools
from typing import Any, Optional

import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxinv.losses.lpips import LPIPS
from jaxinv.models.eg3d import EG3DGenerator
from jaxinv.ops.pooling import adaptive_avg_pool2d

LOSS_RESOLUTION = 256  # the projectors compare at most 256^2 images


# ------------------------------------------------------------------------------------ options

@dataclasses.dataclass(frozen=True)
class ProjectOptions:
  """W / W+ projection (EG3D projector defaults)."""
  steps: int = 1000
  lr: float = 0.01
  lr_rampdown: float = 0.25
  lr_rampup: float = 0.05
  initial_noise_factor: float = 0.05
  noise_ramp: float = 0.75
  noise_weight: float = 1e5
  l2_weight: float = 1.0
  lpips_weight: float = 1.0
  num_w_samples: int = 10000


@dataclasses.dataclass(frozen=True)
class PTIOptions:
  """PTI (release defaults: ``configs/hyperparameters.py``)."""
  pivot_steps: int = 450
  pivot_lr: float = 5e-3
  steps: int = 350
  lr: float = 3e-4
  l2_weight: float = 1.0
  lpips_weight: float = 1.0
  lpips_threshold: float = 0.07
  locality_weight: float = 1.0     # 0 switches the regulariser off
  locality_alpha: float = 30.0
  locality_l2: float = 0.1
  locality_lpips: float = 0.1
  locality_psi: float = 0.5


@dataclasses.dataclass(frozen=True)
class TriPlaneOptOptions:
  """TriPlaneNet's tri-plane L-BFGS."""
  steps: int = 50
  max_linesearch_steps: int = 20
  memory_size: int = 10
  linesearch: str = "zoom"        # or "backtracking" (Armijo; cheaper to compile, for tests)
  l2_weight: float = 1.0
  lpips_weight: float = 1.0
  reg_weight: float = 0.1


def _options(cls, options: dict, what: str):
  names = {f.name for f in dataclasses.fields(cls)}
  unknown = sorted(set(options) - names)
  if unknown:
    raise TypeError(f"{what}: unknown option(s) {unknown}; known: {sorted(names)}")
  return cls(**options)


# ------------------------------------------------------------------------------------- losses

@dataclasses.dataclass(frozen=True)
class ImageLoss:
  """``l2_weight * MSE + lpips_weight * LPIPS`` at <= 256^2; LPIPS only with ``lpips_params``.

  The image an optimisation compares against is fixed, so its loss-resolution copy and LPIPS
  taps are computed once (``reference``) and each step runs the LPIPS trunk on its own image only.
  """
  net: str = "alex"

  def reference(self, lpips_params, b):
    """``(b at the loss resolution, its normalised LPIPS taps or None)``."""
    b = to_loss_resolution(b)
    if lpips_params is None:
      return b, None
    return b, LPIPS(self.net).apply(lpips_params, b, method=LPIPS.normalized_features)

  def compare(self, lpips_params, a_ref, b_ref, l2_weight, lpips_weight):
    """The loss between two ``reference`` values: ``(total [B], mse [B], lpips [B])``."""
    (a, fa), (b, fb) = a_ref, b_ref
    mse = jnp.mean(jnp.square(a - b), axis=(1, 2, 3))
    if lpips_params is None:
      lp = jnp.zeros_like(mse)
    else:
      lp = LPIPS(self.net).apply(lpips_params, fa, fb, method=LPIPS.distance_between)
    return l2_weight * mse + lpips_weight * lp, mse, lp

  def __call__(self, lpips_params, a, b_ref, l2_weight, lpips_weight):
    """The loss of image ``a`` against the prepared ``b_ref = reference(lpips_params, b)``."""
    return self.compare(lpips_params, self.reference(lpips_params, a), b_ref, l2_weight,
                        lpips_weight)


def to_loss_resolution(x):
  if x.shape[1] > LOSS_RESOLUTION:
    return adaptive_avg_pool2d(x, LOSS_RESOLUTION)
  return x


def noise_regularization(noise_maps) -> jax.Array:
  """StyleGAN2's multi-scale autocorrelation penalty on ``[R, R]`` noise maps (sum over maps)."""
  reg = 0.0
  for n in noise_maps:
    while True:
      reg = reg + jnp.mean(n * jnp.roll(n, 1, axis=1)) ** 2 + jnp.mean(n * jnp.roll(n, 1, axis=0)) ** 2
      if n.shape[0] <= 8:
        break
      r = n.shape[0] // 2
      n = n.reshape(r, 2, r, 2).mean(axis=(1, 3))
  return reg


def _is_noise(path) -> bool:
  return str(getattr(path[-1], "key", path[-1])) == "noise_const"


def split_noise(params):
  """``(noise maps in tree order, a function maps -> params with those maps replaced)``."""
  leaves, treedef = jax.tree_util.tree_flatten_with_path(params)
  idx = [i for i, (p, _) in enumerate(leaves) if _is_noise(p)]
  maps = [leaves[i][1] for i in idx]
  plain = [v for _, v in leaves]

  def merge(new_maps):
    out = list(plain)
    for i, m in zip(idx, new_maps):
      out[i] = m
    return jax.tree_util.tree_unflatten(treedef, out)
  return maps, merge


def lr_ramp(t, rampdown: float, rampup: float):
  """StyleGAN2 projector: cosine ramp-down over the last ``rampdown``, linear ramp-up first."""
  r = jnp.minimum(1.0, (1.0 - t) / rampdown)
  r = 0.5 - 0.5 * jnp.cos(r * jnp.pi)
  return r * jnp.minimum(1.0, t / rampup)


# ------------------------------------------------------------------------------------ W / W+

def w_stats(G: EG3DGenerator, c, key, num_samples: int):
  """``(w_avg [1, w_dim], w_std scalar)`` of ``num_samples`` mapped z under camera ``c [1, 25]``."""
  z = jax.random.normal(key, (num_samples, G.z_dim))
  w = G.mapping(z, jnp.broadcast_to(c, (num_samples, 25)))[:, 0]
  w_avg = jnp.mean(w, axis=0, keepdims=True)
  w_std = jnp.sqrt(jnp.sum(jnp.square(w - w_avg)) / num_samples)
  return w_avg, w_std


def _hyper(opts, skip=("steps", "num_w_samples", "max_linesearch_steps", "memory_size",
                        "linesearch")):
  """The float hyper-parameters as traced scalars (one compile serves every value)."""
  return {f.name: jnp.asarray(getattr(opts, f.name), jnp.float32)
          for f in dataclasses.fields(opts) if f.name not in skip}


@functools.lru_cache(maxsize=None)
def _project_fn(config, steps: int, loss: ImageLoss, has_lpips: bool):

  def one(params, lpips_params, opts, target, c, w_init, w_std, tie, key):
    # One image: target [S, S, 3], c [25], w_init [num_ws, 512]; tie: shared code (W) if True.
    target, c = target[None], c[None]
    target_ref = loss.reference(lpips_params if has_lpips else None, target)
    noise0, merge = split_noise(params)
    k_noise, k_loop = jax.random.split(key)
    noise0 = [jax.random.normal(k, n.shape) for k, n in
              zip(jax.random.split(k_noise, max(len(noise0), 1)), noise0)]
    var = (w_init[None], noise0)
    sched = lambda i: opts["lr"] * lr_ramp(i / steps, opts["lr_rampdown"], opts["lr_rampup"])
    opt = optax.adam(sched, b1=0.9, b2=0.999)

    def codes(w):
      return jnp.where(tie, jnp.broadcast_to(jnp.mean(w, axis=1, keepdims=True), w.shape), w)

    def objective(var, i, k):
      w, noise = var
      t = i / steps
      strength = w_std * opts["initial_noise_factor"] * jnp.square(jnp.maximum(0.0, 1 - t / opts["noise_ramp"]))
      ws = codes(w) + strength * jax.random.normal(k, w.shape)
      G = EG3DGenerator(config, merge(noise))
      img = G.synthesis(ws, c)["image"]
      total, mse, lp = loss(lpips_params if has_lpips else None, img, target_ref,
                            opts["l2_weight"], opts["lpips_weight"])
      return total[0] + opts["noise_weight"] * noise_regularization(noise), (mse[0], lp[0])

    def step(carry, i):
      var, state = carry
      (value, (mse, lp)), g = jax.value_and_grad(objective, has_aux=True)(
          var, i, jax.random.fold_in(k_loop, i))
      updates, state = opt.update(g, state, var)
      w, noise = optax.apply_updates(var, updates)
      noise = [(n - jnp.mean(n)) / jnp.std(n) for n in noise]  # StyleGAN2: renormalise
      return ((w, noise), state), jnp.stack([value, mse, lp])

    (var, _), curve = jax.lax.scan(step, (var, opt.init(var)), jnp.arange(steps))
    return codes(var[0])[0], curve

  return jax.jit(jax.vmap(one, in_axes=(None, None, None, 0, 0, 0, None, None, 0)))


def project(G: EG3DGenerator, target, c, *, mode: str = "wplus", key=None, lpips_params=None,
            lpips_net: str = "alex", w_init=None, options: Optional[ProjectOptions] = None):
  """W / W+ projection of ``target [B, S, S, 3]`` (S = G's image size) seen from ``c [B, 25]``.

  Args:
    mode: ``'w'`` (one code repeated for every layer) or ``'wplus'`` (one per layer).
    key: PRNG key (w statistics, noise maps, w noise); default ``PRNGKey(0)``.
    lpips_params: LPIPS variables (``jaxinv.convert.lpips``) or None (L2 only).
    w_init: ``[B, num_ws, 512]`` starting codes (default: ``w_avg`` under each image's camera).
  Returns:
    ``(ws [B, num_ws, 512], curve [B, steps, 3])`` (per step: objective, MSE, LPIPS).
  """
  if mode not in ("w", "wplus"):
    raise ValueError(f"mode must be 'w' or 'wplus', got {mode!r}")
  opts = options or ProjectOptions()
  key = jax.random.PRNGKey(0) if key is None else key
  b = target.shape[0]
  k_stats, k_run = jax.random.split(key)
  w_avg, w_std = w_stats(G, c[:1], k_stats, int(opts.num_w_samples))
  if w_init is None:
    w_init = jnp.broadcast_to(w_avg[:, None], (b, G.num_ws, G.config.w_dim))
  fn = _project_fn(G.config, int(opts.steps), ImageLoss(lpips_net), lpips_params is not None)
  return fn(G.params, lpips_params, _hyper(opts), jnp.asarray(target, jnp.float32), jnp.asarray(c, jnp.float32),
            jnp.asarray(w_init, jnp.float32), w_std, jnp.asarray(mode == "w"),
            jax.random.split(k_run, b))


# ---------------------------------------------------------------------------------------- PTI

def _tunable(params):
  """Labels: 'train' for synthesis/superresolution/decoder weights, 'freeze' for the mapping
  network and the noise buffers (buffers, not parameters, in the official code)."""
  def label(path, _):
    names = [str(getattr(p, "key", p)) for p in path]
    return "freeze" if ("mapping" in names or names[-1] == "noise_const") else "train"
  return jax.tree_util.tree_map_with_path(label, params)


@functools.lru_cache(maxsize=None)
def _pti_fn(config, steps: int, locality: bool, loss: ImageLoss, has_lpips: bool):

  def run(params, lpips_params, opts, target, c, ws, ws_local):
    lp_params = lpips_params if has_lpips else None
    opt = optax.multi_transform({"train": optax.adam(opts["lr"]), "freeze": optax.set_to_zero()},
                                _tunable(params))
    G0 = EG3DGenerator(config, params)
    ref_local = loss.reference(lp_params, jax.lax.stop_gradient(G0.synthesis(ws_local, c)["image"]))
    target_ref = loss.reference(lp_params, target)

    def objective(p):
      G = EG3DGenerator(config, p)
      img = G.synthesis(ws, c)["image"]
      total, mse, lp = loss(lp_params, img, target_ref, opts["l2_weight"], opts["lpips_weight"])
      value = jnp.mean(total)
      if locality:
        loc, _, _ = loss(lp_params, G.synthesis(ws_local, c)["image"], ref_local,
                         opts["locality_l2"], opts["locality_lpips"])
        value = value + opts["locality_weight"] * jnp.mean(loc)
      return value, (jnp.mean(mse), jnp.mean(lp))

    def step(carry, _):
      p, state, done = carry
      (value, (mse, lp)), g = jax.value_and_grad(objective, has_aux=True)(p)
      # PTI's early stop: no more updates once LPIPS reaches the threshold (checked before a step).
      done = done | (has_lpips & (lp <= opts["lpips_threshold"]))
      # ``done`` never clears, so once it is set the optimiser state is never used again: only
      # the parameters need holding (selecting the Adam moments too cost ~2 ms a step on the tiny G).
      updates, state = opt.update(g, state, p)
      new_p = optax.apply_updates(p, updates)
      p = jax.tree_util.tree_map(lambda new, old: jnp.where(done, old, new), new_p, p)
      return (p, state, done), jnp.stack([value, mse, lp])

    (p, _, _), curve = jax.lax.scan(step, (params, opt.init(params), jnp.asarray(False)),
                                    None, length=steps)
    return p, curve

  return jax.jit(run)


def locality_codes(G: EG3DGenerator, ws, c, key, alpha: float, psi: float):
  """PTI's ball codes: ``ws + alpha * (w_z - ws) / |w_z - ws|`` for one random ``w_z`` per image."""
  b = ws.shape[0]
  z = jax.random.normal(key, (b, G.z_dim))
  w_z = G.mapping(z, c, truncation_psi=psi)
  d = w_z - ws
  norm = jnp.sqrt(jnp.sum(jnp.square(d), axis=(1, 2), keepdims=True))
  return ws + alpha * d / jnp.maximum(norm, 1e-8)


def pti_tune(G: EG3DGenerator, target, c, ws, *, key=None, lpips_params=None,
             lpips_net: str = "alex", options: Optional[PTIOptions] = None):
  """PTI's generator tuning around the pivot ``ws [B, num_ws, 512]``.

  Returns:
    ``(tuned G, curve [steps, 3])`` (per step: objective, MSE, LPIPS of the batch).
  """
  opts = options or PTIOptions()
  key = jax.random.PRNGKey(0) if key is None else key
  ws_local = locality_codes(G, ws, c, key, opts.locality_alpha, opts.locality_psi)
  fn = _pti_fn(G.config, int(opts.steps), bool(opts.locality_weight), ImageLoss(lpips_net),
               lpips_params is not None)
  params, curve = fn(G.params, lpips_params, _hyper(opts), jnp.asarray(target, jnp.float32),
                     jnp.asarray(c, jnp.float32), jnp.asarray(ws, jnp.float32), ws_local)
  return EG3DGenerator(G.config, params), curve


# ------------------------------------------------------------------------- tri-plane L-BFGS

@functools.lru_cache(maxsize=None)
def _triplane_fn(config, steps: int, max_linesearch_steps: int, memory_size: int, loss: ImageLoss,
                 has_lpips: bool, linesearch_kind: str = "zoom"):
  if linesearch_kind == "zoom":
    linesearch = optax.scale_by_zoom_linesearch(max_linesearch_steps=max_linesearch_steps)
  else:
    linesearch = optax.scale_by_backtracking_linesearch(
        max_backtracking_steps=max_linesearch_steps, store_grad=True)
  opt = optax.lbfgs(memory_size=memory_size, linesearch=linesearch)

  def one(params, lpips_params, opts, target, c, ws, offsets0):
    lp_params = lpips_params if has_lpips else None
    target, c, ws = target[None], c[None], ws[None]
    G = EG3DGenerator(config, params)
    base = jax.lax.stop_gradient(G.planes(ws))
    first = jax.lax.stop_gradient(G.render_planes(base + offsets0[None], ws, c)["image"])
    target_ref, first_ref = loss.reference(lp_params, target), loss.reference(lp_params, first)

    def f(dt):
      img = loss.reference(lp_params, G.render_planes(base + dt[None], ws, c)["image"])
      rec, _, _ = loss.compare(lp_params, img, target_ref, opts["l2_weight"], opts["lpips_weight"])
      reg, _, _ = loss.compare(lp_params, img, first_ref, opts["l2_weight"], opts["lpips_weight"])
      return rec[0] + opts["reg_weight"] * reg[0]

    value_and_grad = optax.value_and_grad_from_state(f)

    def step(carry, _):
      dt, state = carry
      value, g = value_and_grad(dt, state=state)
      updates, state = opt.update(g, state, dt, value=value, grad=g, value_fn=f)
      return (optax.apply_updates(dt, updates), state), value

    (dt, _), curve = jax.lax.scan(step, (offsets0, opt.init(offsets0)), None, length=steps)
    return dt, jnp.concatenate([curve, f(dt)[None]])

  return jax.jit(jax.vmap(one, in_axes=(None, None, None, 0, 0, 0, 0)))


def triplane_optimize(G: EG3DGenerator, target, c, ws, offsets=None, *, lpips_params=None,
                      lpips_net: str = "alex", options: Optional[TriPlaneOptOptions] = None):
  """L-BFGS on tri-plane offsets (planes = ``G.planes(ws) + offsets``), one image at a time.

  Args:
    offsets: ``[B, 3, 256, 256, 32]`` start (e.g. TriPlaneNet's prediction); default zeros.
  Returns:
    ``(offsets [B, 3, 256, 256, 32], curve [B, steps + 1])`` (the objective before every step
    and after the last one).
  """
  opts = options or TriPlaneOptOptions()
  if opts.linesearch not in ("zoom", "backtracking"):
    raise ValueError(f"linesearch must be 'zoom' or 'backtracking', got {opts.linesearch!r}")
  ws = jnp.asarray(ws, jnp.float32)
  if offsets is None:
    offsets = jnp.zeros(jax.eval_shape(G.planes, ws).shape, jnp.float32)
  fn = _triplane_fn(G.config, int(opts.steps), int(opts.max_linesearch_steps),
                    int(opts.memory_size), ImageLoss(lpips_net), lpips_params is not None,
                    opts.linesearch)
  return fn(G.params, lpips_params, _hyper(opts), jnp.asarray(target, jnp.float32),
            jnp.asarray(c, jnp.float32),
            ws, jnp.asarray(offsets, jnp.float32))
