"""The task interface: what a training method gives the one train loop (``jaxinv.train``).

A method is a loss builder plus a config (no forked trainers). ``jaxinv/train/tasks/METHOD.py``
defines ``build(config) -> Task`` and is registered in ``jaxinv.train.tasks.TASKS[METHOD]``; the
loop picks it by ``config.task``. Everything method-specific lives in the ``Task``; everything
else (jit, sharding, optimizers' application, checkpoints, metrics, NaN guard, data feeding) is
the loop's.

The train step (one jitted, pure function; the train state is donated)
---------------------------------------------------------------------
::

  key = fold_in(PRNGKey(config.seed), step)              # per-step randomness, resume-exact
  k_batch, k_phase_0, k_phase_1, ... = split(key, 1 + len(phases))
  batch = task.make_batch(frozen, k_batch, step, host_batch)   # INSIDE the jitted step
  for i, phase in enumerate(task.phases):                # in order; phase i sees the params and
    if step % phase.every == 0:                          #   model_state updated by phases < i
      (loss, aux), grads = value_and_grad(phase.loss_fn, has_aux=True)(
          params, model_state, frozen, batch, k_phase_i, step)   # grads w.r.t. params[phase.group] only
      updates, opt_state[phase.group] = task.optimizers[phase.group].update(
          grads, opt_state[phase.group], params[phase.group])
      params[phase.group] = optax.apply_updates(params[phase.group], updates)
      model_state = aux.get("model_state", model_state)
  metrics = {**phase_0 metrics, **phase_1 metrics, ..., "loss": sum of the phases' losses}

Lazy phases (``every > 1``, e.g. R1 every 16 steps) run under ``lax.cond``; on the steps they
skip, their params / optimizer state / model_state are unchanged and the loop drops their metrics
from the log for that step (it knows ``step`` on the host). Several phases may update the same
group (e.g. a discriminator's main loss every step and its R1 term every 16 steps); each group
has exactly one optimizer and one optimizer state, used by every phase of that group.

Arguments every ``Phase.loss_fn`` receives
------------------------------------------
``params``      ``dict[group -> pytree]``: ALL trainable groups (float32). The gradient is taken
                only w.r.t. ``params[phase.group]``; the other groups are plain inputs (no
                ``stop_gradient`` needed, they are not differentiated).
``model_state`` one pytree of mutable non-trainable state (BatchNorm running statistics, an e4e
                latent pool, EMA copies, counters); ``{}`` when unused. Return the new one in
                ``aux["model_state"]`` (omit the key: unchanged). It is checkpointed and must keep
                its structure, shapes and dtypes from step to step (it is a ``lax.cond`` carry).
``frozen``      a pytree of arrays that never changes and is never in an optimizer: the generator
                ``G`` (``EG3DGenerator`` is a pytree), ArcFace / LPIPS variables, ``w_avg``,
                constants. Passed as a jit *argument* (never closed over), replicated on the mesh.
``batch``       whatever ``make_batch`` returned (a dict of arrays with a leading batch axis, plus
                scalars), sharded over the mesh's ``data`` axis.
``key``         this phase's PRNG key for this step.
``step``        the int32 step counter (traced): use it for schedules and ramps (``jnp.where``,
                ``optax`` schedules), never as a Python int.

``loss_fn`` returns ``(loss, aux)``: the phase's scalar float32 loss (the weighted sum of its
terms) and ``aux = dict(metrics={name: scalar}, model_state=...)``. ``metrics`` holds every loss
term by name, *unweighted* (``l2``, ``lpips``, ``id``, ``w_reg``, ...; the weights are config
fields), plus anything worth logging (current ramp weights, progressive stage). Metric names
must be unique across phases (prefix a discriminator's: ``d_real``, ``d_r1``). The loop adds
``loss_{phase.label}`` and ``grad_norm_{phase.label}`` for each phase that ran and ``loss`` = the
sum of those phases' losses (the total training loss of the step, as ``metrics.jsonl``
requires). The NaN/Inf guard checks every metric (the task's own terms first) and names the
first non-finite one and its step.

Examples: ``debug.py`` (two groups, a lazy phase, model_state; seconds to run), ``psp.py``
(one phase, BatchNorm stats in model_state), ``e4e.py`` (encoder + latent discriminator + lazy
R1 on the same ``disc`` group), ``preim3d.py`` (alternating batches in ``make_batch``).
``psp_family.py`` has reusable pieces (generator / loss-network loading with clear errors,
train-mode encoder apply, image losses, previews).

``make_batch(frozen, key, step, host_batch) -> batch`` runs inside the jitted step, so generated
images (G renders) never touch the host. ``host_batch`` is ``None`` unless
``task.needs_real_data``; then it is the per-process shard of a real-data batch (a dict of
arrays, e.g. ``image [b, H, W, 3]`` in [-1, 1] and ``c [b, 25]``) that the loop read from
``config.data`` with ``jaxinv.data`` and placed on the mesh, split over ``data``. Alternating
schemes (PREIM3D's real/generated 1:1) decide inside ``make_batch`` with ``lax.cond`` /
``jnp.where`` on ``step``.

Sharding: the loop puts every params/opt-state/model_state leaf on the mesh by
``jaxinv.parallel`` rules (replicated by default; FSDP on the ``fsdp`` axis for large leaves
when the mesh has one), the batch's leading axis on ``data`` and ``frozen`` replicated. Tasks
write plain single-device math; XLA inserts the collectives (batch means are global means).
"""
from __future__ import annotations

import dataclasses
from typing import Any, Callable, Mapping, NamedTuple

import jax
import optax

PyTree = Any
# (params, model_state, frozen, batch, key, step) -> (loss, aux)
LossFn = Callable[[dict, PyTree, PyTree, PyTree, jax.Array, jax.Array], tuple[jax.Array, dict]]
# (frozen, key, step, host_batch_or_None) -> batch
MakeBatchFn = Callable[[PyTree, jax.Array, jax.Array, Any], PyTree]


class TaskInit(NamedTuple):
  """What ``Task.init(key)`` returns.

  params:      ``dict[group -> pytree]`` of trainable float32 arrays (one entry per optimizer).
  model_state: mutable non-trainable state (BatchNorm stats, pools, EMAs), ``{}`` if none.
  frozen:      never-trained arrays (G, loss networks, constants); not checkpointed (rebuilt by
               ``init`` from the config and its weight files).
  """
  params: dict
  model_state: PyTree
  frozen: PyTree


@dataclasses.dataclass(frozen=True)
class Phase:
  """One optimizer update inside the train step; the step runs ``Task.phases`` in order.

  group:   key into ``params`` / ``Task.optimizers``: the group this phase differentiates and
           updates.
  loss_fn: ``(params, model_state, frozen, batch, key, step) -> (loss, aux)`` (see the module
           docstring).
  every:   run only when ``step % every == 0`` (lazy regularisers such as R1), via ``lax.cond``.
  name:    used for the logged ``loss_{name}`` and error messages; defaults to ``group``.
  """
  group: str
  loss_fn: LossFn
  every: int = 1
  name: str | None = None

  def __post_init__(self):
    if not isinstance(self.every, int) or self.every < 1:
      raise ValueError(f"Phase.every must be a positive int, got {self.every!r}")

  @property
  def label(self) -> str:
    return self.name or self.group


@dataclasses.dataclass(frozen=True)
class Task:
  """A training method, as the loop sees it.

  name:            the registry name (``config.task``).
  init:            ``key -> TaskInit(params, model_state, frozen)``. Loads frozen networks from the
                   weight files named in the config (a missing file is a clear ``FileNotFoundError``
                   naming the config field), or builds tiny random ones under ``runlocal``.
  phases:          ``tuple[Phase, ...]``, run in order inside one jitted step.
  optimizers:      ``group -> optax.GradientTransformation`` (schedules, masks, clipping inside;
                   see ``jaxinv.train.optimizers``). Every phase's group needs one.
  make_batch:      ``(frozen, key, step, host_batch) -> batch``, inside the jitted step.
  needs_real_data: when true the loop feeds a host batch from ``config.data`` every step.
  preview:         optional ``(params, model_state, frozen, batch) -> dict[str, images NHWC in
                   [-1, 1]]`` (input / reconstruction / novel views) for TensorBoard image grids;
                   jitted by the loop, run every ``config.preview_every`` steps on process 0's
                   view of the batch.
  in_domain_metric: name of the metric that measures in-domain reconstruction (tests check it
                   falls over a short ``runlocal`` run); default ``"loss"``.
  """
  name: str
  init: Callable[[jax.Array], TaskInit]
  phases: tuple[Phase, ...]
  optimizers: Mapping[str, optax.GradientTransformation]
  make_batch: MakeBatchFn
  needs_real_data: bool = False
  preview: Callable | None = None
  in_domain_metric: str = "loss"

  def __post_init__(self):
    if not self.phases:
      raise ValueError(f"task {self.name!r}: needs at least one Phase")
    missing = sorted({p.group for p in self.phases} - set(self.optimizers))
    if missing:
      raise ValueError(f"task {self.name!r}: no optimizer for param group(s) {missing}")
    labels = [p.label for p in self.phases]
    if len(set(labels)) != len(labels):
      raise ValueError(f"task {self.name!r}: phase names must be unique, got {labels} "
                       "(set Phase.name when two phases update the same group)")

  @property
  def groups(self) -> tuple[str, ...]:
    return tuple(self.optimizers)


def metrics_of(aux: Mapping) -> dict:
  """``aux["metrics"]`` (a dict of scalars), ``{}`` when absent."""
  return dict(aux.get("metrics", {}))
