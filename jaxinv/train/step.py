"""The one train step: ``(state, frozen, host_batch) -> (state, metrics)``, pure, jitted by the loop.

What runs inside it is described in ``jaxinv.train.tasks.base``. This file only turns a ``Task``
into that function and compiles it for a mesh (state donated; params / optimizer state by the
``jaxinv.parallel`` rules, the batch split over the mesh's batch axes, ``frozen`` replicated).
"""
from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp
import optax
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from jaxinv.parallel import sharding as shd
from jaxinv.train.state import TrainState
from jaxinv.train.tasks.base import Task, metrics_of

INIT_KEY_FOLD = 2 ** 31 - 1  # init key = fold_in(PRNGKey(seed), INIT_KEY_FOLD); steps use 0, 1, ...


def _cast_like(new, old):
  """``new`` with the dtypes of ``old`` (a lax.cond / checkpoint carry must keep them)."""
  return jax.tree_util.tree_map(lambda n, o: jnp.asarray(n, jnp.result_type(o)), new, old)


def _constrain_batch(tree, mesh: Mesh | None, global_batch: int):
  if mesh is None:
    return tree

  def c(x):
    if not hasattr(x, "ndim") or x.ndim == 0 or x.shape[0] != global_batch:
      return x
    return jax.lax.with_sharding_constraint(x, shd.batch_sharding(mesh, x.ndim))
  return jax.tree_util.tree_map(c, tree)


def make_step_fn(task: Task, mesh: Mesh | None = None, global_batch: int | None = None,
                 record: dict | None = None) -> Callable:
  """The pure (un-jitted) train step of ``task``.

  ``record``: if given, filled while tracing with ``phase label -> names of its metrics``.
  """

  def step_fn(state: TrainState, frozen, host_batch):
    step = state.step
    keys = jax.random.split(jax.random.fold_in(state.rng, step), 1 + len(task.phases))
    batch = task.make_batch(frozen, keys[0], step, host_batch)
    if global_batch is not None:
      batch = _constrain_batch(batch, mesh, global_batch)
    carry = (dict(state.params), dict(state.opt_state), state.model_state)
    metrics, total = {}, jnp.zeros((), jnp.float32)

    for i, phase in enumerate(task.phases):
      opt = task.optimizers[phase.group]

      def run(carry, phase=phase, opt=opt, key=keys[i + 1]):
        params, opt_state, model_state = carry

        def loss_of(p_group):
          return phase.loss_fn({**params, phase.group: p_group}, model_state, frozen, batch, key,
                               step)

        (loss, aux), grads = jax.value_and_grad(loss_of, has_aux=True)(params[phase.group])
        updates, new_opt = opt.update(grads, opt_state[phase.group], params[phase.group])
        new_params = optax.apply_updates(params[phase.group], updates)
        new_params = _cast_like(new_params, params[phase.group])
        new_ms = _cast_like(aux.get("model_state", model_state), model_state)
        m = {k: jnp.asarray(v, jnp.float32) for k, v in metrics_of(aux).items()}
        m[f"loss_{phase.label}"] = jnp.asarray(loss, jnp.float32)
        m[f"grad_norm_{phase.label}"] = optax.tree.norm(grads)
        return ({**params, phase.group: new_params}, {**opt_state, phase.group: new_opt},
                new_ms), m

      if phase.every == 1:
        carry, m = run(carry)
        ran = True
      else:
        m_shape = jax.eval_shape(lambda c: run(c)[1], carry)
        skip = lambda c, s=m_shape: (c, jax.tree_util.tree_map(
            lambda x: jnp.zeros(x.shape, x.dtype), s))
        ran = step % phase.every == 0
        carry, m = jax.lax.cond(ran, run, skip, carry)
      clash = sorted(set(m) & set(metrics))
      if clash:
        raise ValueError(f"task {task.name!r}: phase {phase.label!r} logs metric(s) {clash} that "
                         "an earlier phase already logs; give them distinct names")
      metrics.update(m)
      if record is not None:
        record[phase.label] = sorted(m)
      total = total + jnp.where(ran, m[f"loss_{phase.label}"], 0.0)

    metrics["loss"] = total
    names = ordered_names(metrics)
    finite = jnp.stack([jnp.all(jnp.isfinite(metrics[n])) for n in names])
    first_bad = jnp.argmin(finite).astype(jnp.int32)
    newly_bad = jnp.logical_and(state.nonfinite[0] < 0, ~jnp.all(finite))
    nonfinite = jnp.where(newly_bad, jnp.stack([first_bad, step.astype(jnp.int32)]),
                          state.nonfinite)
    params, opt_state, model_state = carry
    new_state = state.replace(step=step + 1, params=params, opt_state=opt_state,
                              model_state=model_state, nonfinite=nonfinite)
    return new_state, metrics

  return step_fn


def ordered_names(metrics) -> list[str]:
  """The guard's order: the tasks' own terms first, then phase losses, ``loss``, grad norms."""
  def rank(n):
    return (3 if n.startswith("grad_norm_") else 2 if n == "loss" else
            1 if n.startswith("loss_") else 0, n)
  return sorted(metrics, key=rank)


def metric_names(task: Task, state, frozen, host_batch) -> tuple[list[str], dict]:
  """``(metric names in guard order, phase label -> its metric names)`` of the step.

  The first list is the order ``TrainState.nonfinite`` indexes.
  """
  record = {}
  _, m = jax.eval_shape(make_step_fn(task, record=record), state, frozen, host_batch)
  return ordered_names(m), record


def state_shardings(state, mesh: Mesh, fsdp_min_size: int = shd.FSDP_MIN_SIZE):
  """Shardings of a ``TrainState`` (or its abstract shape) on ``mesh``, by the parallel rules."""
  return shd.param_shardings(state, mesh, fsdp_min_size)


def jit_step(task: Task, mesh: Mesh, state, frozen, host_batch, global_batch: int,
             fsdp_min_size: int = shd.FSDP_MIN_SIZE):
  """``jax.jit`` of the step with explicit in/out shardings and the state donated."""
  st_sh = state_shardings(state, mesh, fsdp_min_size)
  rep = NamedSharding(mesh, PartitionSpec())
  frozen_sh = jax.tree_util.tree_map(lambda _: rep, frozen)
  hb_sh = jax.tree_util.tree_map(
      lambda x: rep if x.ndim == 0 else shd.batch_sharding(mesh, x.ndim), host_batch)
  fn = make_step_fn(task, mesh, global_batch)
  return jax.jit(fn, in_shardings=(st_sh, frozen_sh, hb_sh), out_shardings=(st_sh, rep),
                 donate_argnums=(0,)), st_sh
