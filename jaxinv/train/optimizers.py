"""Optimizers for the train loop, built from small config dicts (optax inside).

``make_optimizer(cfg) -> optax.GradientTransformation`` with ``cfg`` a mapping (an
``ml_collections.ConfigDict`` in configs) of::

  name:          "adam" | "ranger" | "sgd" | "rmsprop"   (ranger: the pSp family's RAdam + Lookahead +
                 gradient centralisation, step for step; see ``ranger``)
  lr:            peak learning rate
  schedule:      "constant" (default) | "cosine" | "linear" | "warmup_cosine" | "step"
  warmup_steps:  linear warm-up from 0 (all schedules; default 0)
  decay_steps:   length of the decay (cosine / linear / warmup_cosine)
  end_lr:        final lr of the decay (default 0)
  boundaries / scales: "step" schedule: lr *= scales[i] at step boundaries[i]
  b1, b2, eps:   Adam/RAdam moments (defaults 0.9 / 0.999 / 1e-8; pSp's Ranger uses 0.95 / 0.999 / 1e-5)
  weight_decay:  decoupled weight decay (AdamW-style; default 0)
  lookahead_steps / lookahead_alpha: Lookahead's k and alpha (Ranger defaults 6 / 0.5)
  clip_norm:     clip the global gradient norm (default: off)
  freeze:        list of regular expressions over '/'-joined parameter paths; matching leaves
                 get zero updates and no optimizer state (optax.multi_transform + set_to_zero)
  gradient_centralization: Ranger only (default True, as the official optimizer)
  decay:         RMSprop's squared-gradient decay (default 0.99, PyTorch's ``alpha``; eps 1e-8)

Ranger keeps its Lookahead slow copy in the optimizer state, so the train loop only ever sees
``(updates, state) = opt.update(grads, state, params)`` on plain ``params`` pytrees.
"""
from __future__ import annotations

import re
from typing import Any, Mapping, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

SCHEDULES = ("constant", "cosine", "linear", "warmup_cosine", "step")
OPTIMIZERS = ("adam", "ranger", "sgd", "rmsprop")


def _get(cfg, name, default=None):
  if cfg is None:
    return default
  if isinstance(cfg, Mapping):
    return cfg.get(name, default)
  return getattr(cfg, name, default)


def make_schedule(cfg) -> optax.Schedule:
  """A learning-rate schedule ``step -> lr`` from ``cfg`` (see the module docstring)."""
  lr = float(_get(cfg, "lr", 1e-4))
  kind = _get(cfg, "schedule", "constant") or "constant"
  warmup = int(_get(cfg, "warmup_steps", 0) or 0)
  end_lr = float(_get(cfg, "end_lr", 0.0) or 0.0)
  decay = int(_get(cfg, "decay_steps", 0) or 0)
  if kind not in SCHEDULES:
    raise ValueError(f"unknown lr schedule {kind!r}; one of {SCHEDULES}")
  if kind in ("cosine", "linear", "warmup_cosine") and decay <= 0:
    raise ValueError(f"lr schedule {kind!r} needs decay_steps > 0")
  if kind == "constant":
    main = optax.constant_schedule(lr)
  elif kind in ("cosine", "warmup_cosine"):
    main = optax.cosine_decay_schedule(lr, decay, alpha=end_lr / lr if lr else 0.0)
  elif kind == "linear":
    main = optax.linear_schedule(lr, end_lr, decay)
  else:
    boundaries = [int(b) for b in _get(cfg, "boundaries", ())]
    scales = [float(s) for s in _get(cfg, "scales", ())]
    if len(boundaries) != len(scales):
      raise ValueError("lr schedule 'step' needs as many scales as boundaries")
    main = optax.piecewise_constant_schedule(lr, dict(zip(boundaries, scales)))
  if warmup <= 0:
    return main
  return optax.join_schedules([optax.linear_schedule(0.0, lr, warmup), main], [warmup])


_TABLE_STEPS = 8192


def centralize(grad: jax.Array) -> jax.Array:
  """Gradient centralisation (Yong et al., 2020) as the pSp-family Ranger applies it to every
  parameter with more than one dimension: each output unit's gradient minus its mean over the
  unit's fan-in. jaxinv kernels keep the output features on the last axis (``HWIO`` convs,
  ``[in, out]`` dense layers), i.e. torch's dimension 0; 0-/1-D leaves are left as they are."""
  if grad.ndim <= 1:
    return grad
  return grad - jnp.mean(grad, axis=tuple(range(grad.ndim - 1)), keepdims=True)


def ranger(learning_rate, b1: float = 0.95, b2: float = 0.999, eps: float = 1e-5,
           weight_decay: float = 0.0, lookahead_steps: int = 6,
           lookahead_alpha: float = 0.5, use_gc: bool = True,
           n_sma_threshold: float = 5.0) -> optax.GradientTransformation:
  """Ranger = RAdam + Lookahead + gradient centralisation: the step of the pSp family's
  ``training/ranger.py`` (pSp, e4e, PREIM3D, TriPlaneNet), on plain parameter pytrees.

  Per leaf, at step ``t`` (from 1): ``g = centralize(grad)`` (``use_gc``); ``v = b2 v + (1-b2) g^2``,
  ``m = b1 m + (1-b1) g``; ``N_max = 2/(1-b2) - 1``, ``N = N_max - 2 t b2^t / (1-b2^t)``;
  ``p -= weight_decay * lr * p``; then if ``N > n_sma_threshold``
  ``p -= lr * sqrt((1-b2^t) (N-4)/(N_max-4) (N-2)/N N_max/(N_max-2)) / (1-b1^t) * m / (sqrt(v) + eps)``
  (eps on the uncorrected ``sqrt(v)``, as the official code), else ``p -= lr / (1-b1^t) * m``;
  every ``lookahead_steps`` steps ``slow += lookahead_alpha (p - slow)`` and ``p = slow``.
  ``learning_rate`` may be a schedule of the step count. The slow copy lives in the state.
  """
  lr_fn = learning_rate if callable(learning_rate) else (lambda _: learning_rate)
  n_max = 2.0 / (1.0 - b2) - 1.0
  # RAdam's step sizes are computed in float64 as the official code does (Python floats): in
  # float32, N_sma's cancellation (N_max - 2 t b2^t / (1 - b2^t) for small t) shifts them by 1e-4.
  ts = np.arange(1, _TABLE_STEPS + 1, dtype=np.float64)
  b2ts = b2 ** ts
  n = n_max - 2 * ts * b2ts / (1 - b2ts)
  rect_np = n > n_sma_threshold
  n_safe = np.where(rect_np, n, n_max)
  rect_table = jnp.asarray(rect_np)
  rect_step_table = jnp.asarray(np.sqrt((1 - b2ts) * (n_safe - 4) / (n_max - 4) * (n_safe - 2)
                                        / n_safe * n_max / (n_max - 2)) / (1 - b1 ** ts),
                                jnp.float32)
  sgd_step_table = jnp.asarray(1 / (1 - b1 ** ts), jnp.float32)

  def init(params):
    f32 = lambda p: jnp.zeros(jnp.shape(p), jnp.float32)
    return RangerState(count=jnp.zeros((), jnp.int32),
                       mu=jax.tree_util.tree_map(f32, params),
                       nu=jax.tree_util.tree_map(f32, params),
                       slow=jax.tree_util.tree_map(lambda p: jnp.asarray(p, jnp.float32), params))

  def update(grads, state, params=None):
    if params is None:
      raise ValueError("ranger needs params in update (Lookahead pulls them to the slow copy)")
    t = state.count + 1
    lr = jnp.asarray(lr_fn(state.count), jnp.float32)
    i = jnp.minimum(t, _TABLE_STEPS) - 1
    late = t > _TABLE_STEPS   # float32 is exact enough once N_sma is far from its threshold
    tf = t.astype(jnp.float32)
    b2t = jnp.float32(b2) ** tf
    n_late = n_max - 2.0 * tf * b2t / (1.0 - b2t)
    late_rect = jnp.sqrt((1 - b2t) * (n_late - 4) / (n_max - 4) * (n_late - 2) / n_late * n_max
                         / (n_max - 2)) / (1 - jnp.float32(b1) ** tf)
    rect = jnp.where(late, n_late > n_sma_threshold, rect_table[i])
    step_rect = jnp.where(late, late_rect, rect_step_table[i])
    step_sgd = jnp.where(late, 1.0 / (1 - jnp.float32(b1) ** tf), sgd_step_table[i])
    sync = t % lookahead_steps == 0

    def leaf(g, m, v, p, slow):
      g = jnp.asarray(g, jnp.float32)
      if use_gc:
        g = centralize(g)
      v = b2 * v + (1 - b2) * g * g
      m = b1 * m + (1 - b1) * g
      p32 = jnp.asarray(p, jnp.float32)
      new = p32 - weight_decay * lr * p32 if weight_decay else p32
      new = jnp.where(rect, new - lr * step_rect * m / (jnp.sqrt(v) + eps), new - lr * step_sgd * m)
      slow_new = jnp.where(sync, slow + lookahead_alpha * (new - slow), slow)
      new = jnp.where(sync, slow_new, new)
      return new - p32, m, v, slow_new

    tree = jax.tree_util.tree_structure(params)
    outs = [leaf(*a) for a in zip(*(tree.flatten_up_to(x) for x in
                                    (grads, state.mu, state.nu, params, state.slow)))]
    upd, mu, nu, slow = (tree.unflatten([o[j] for o in outs]) for j in range(4))
    upd = jax.tree_util.tree_map(lambda u, p: u.astype(jnp.result_type(p)), upd, params)
    return upd, RangerState(count=t, mu=mu, nu=nu, slow=slow)

  return optax.GradientTransformation(init, update)


class RangerState(NamedTuple):
  """Ranger's state: the step count, RAdam's moments and Lookahead's slow parameter copy."""
  count: Any
  mu: Any
  nu: Any
  slow: Any


def _path_str(path) -> str:
  parts = []
  for p in path:
    if isinstance(p, jax.tree_util.DictKey):
      parts.append(str(p.key))
    elif isinstance(p, jax.tree_util.GetAttrKey):
      parts.append(p.name)
    elif isinstance(p, jax.tree_util.SequenceKey):
      parts.append(str(p.idx))
    else:
      parts.append(str(p))
  return "/".join(parts)


def freeze_mask(params, patterns) -> Any:
  """Pytree of labels ``"frozen"`` / ``"trainable"`` (regex ``search`` over '/'-joined paths)."""
  regs = [re.compile(p) for p in patterns]
  return jax.tree_util.tree_map_with_path(
      lambda path, _: "frozen" if any(r.search(_path_str(path)) for r in regs) else "trainable",
      params)


def make_optimizer(cfg) -> optax.GradientTransformation:
  """The optimizer of one param group (see the module docstring for ``cfg``'s fields)."""
  name = _get(cfg, "name", "adam")
  if name not in OPTIMIZERS:
    raise ValueError(f"unknown optimizer {name!r}; one of {OPTIMIZERS}")
  lr = make_schedule(cfg)
  wd = float(_get(cfg, "weight_decay", 0.0) or 0.0)
  if name == "adam":
    b1, b2, eps = (float(_get(cfg, k, d)) for k, d in (("b1", 0.9), ("b2", 0.999), ("eps", 1e-8)))
    opt = optax.adamw(lr, b1, b2, eps, weight_decay=wd) if wd else optax.adam(lr, b1, b2, eps)
  elif name == "ranger":
    b1, b2, eps = (float(_get(cfg, k, d)) for k, d in (("b1", 0.95), ("b2", 0.999), ("eps", 1e-5)))
    opt = ranger(lr, b1, b2, eps, wd, int(_get(cfg, "lookahead_steps", 6)),
                 float(_get(cfg, "lookahead_alpha", 0.5)), bool(_get(cfg, "gradient_centralization",
                                                                      True)))
  elif name == "rmsprop":
    # PyTorch's RMSprop (GIRAFFE / ZIGNeRF): eps outside the square root, no momentum.
    opt = optax.rmsprop(lr, decay=float(_get(cfg, "decay", 0.99)),
                        eps=float(_get(cfg, "eps", 1e-8)), eps_in_sqrt=False)
  else:
    opt = optax.sgd(lr, momentum=_get(cfg, "momentum", None))
  clip = _get(cfg, "clip_norm", None)
  if clip:
    opt = optax.chain(optax.clip_by_global_norm(float(clip)), opt)
  freeze = list(_get(cfg, "freeze", ()) or ())
  if freeze:
    opt = optax.multi_transform({"trainable": opt, "frozen": optax.set_to_zero()},
                                lambda p: freeze_mask(p, freeze))
  return opt
