"""Optimizers for the train loop, built from small config dicts (optax inside).

``make_optimizer(cfg) -> optax.GradientTransformation`` with ``cfg`` a mapping (an
``ml_collections.ConfigDict`` in configs) of::

  name:          "adam" | "ranger" | "sgd"           (ranger = RAdam + Lookahead, pSp's default)
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

Ranger here is ``optax.lookahead(radam)`` wrapped so that its state and parameters stay a plain
``params`` pytree: Lookahead keeps "fast" and "slow" copies, and ``apply_updates`` of its update
moves the fast weights; every k steps they are pulled toward the slow ones. The train loop only
ever sees ``(updates, state) = opt.update(grads, state, params)``.
"""
from __future__ import annotations

import re
from typing import Any, Mapping, NamedTuple

import jax
import jax.numpy as jnp
import optax

SCHEDULES = ("constant", "cosine", "linear", "warmup_cosine", "step")
OPTIMIZERS = ("adam", "ranger", "sgd")


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


def ranger(learning_rate, b1: float = 0.95, b2: float = 0.999, eps: float = 1e-5,
           weight_decay: float = 0.0, lookahead_steps: int = 6,
           lookahead_alpha: float = 0.5) -> optax.GradientTransformation:
  """Ranger = RAdam + Lookahead (pSp/e4e's ``Ranger``, without its gradient centralisation).

  Returns a transformation over plain parameter pytrees: the Lookahead slow copy lives in the
  optimizer state, the fast weights are the parameters themselves.
  """
  inner = optax.chain(
      optax.scale_by_radam(b1=b1, b2=b2, eps=eps),
      optax.add_decayed_weights(weight_decay) if weight_decay else optax.identity(),
      optax.scale_by_learning_rate(learning_rate))
  look = optax.lookahead(inner, sync_period=lookahead_steps, slow_step_size=lookahead_alpha,
                         reset_state=False)

  def init(params):
    lp = optax.LookaheadParams.init_synced(params)
    return RangerState(look.init(lp), lp.slow)

  def update(grads, state, params):
    if params is None:
      raise ValueError("ranger needs params in update (Lookahead pulls them to the slow copy)")
    upd, look_state = look.update(grads, state.lookahead, optax.LookaheadParams(params, state.slow))
    return upd.fast, RangerState(look_state, optax.apply_updates(state.slow, upd.slow))

  return optax.GradientTransformation(init, update)


class RangerState(NamedTuple):
  """Ranger's state: optax's ``LookaheadState`` and the slow parameter copy."""
  lookahead: Any
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
                 float(_get(cfg, "lookahead_alpha", 0.5)))
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
