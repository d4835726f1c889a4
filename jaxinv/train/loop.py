"""``train_and_evaluate(config, workdir)``: the one train loop every method runs through.

Order of a run:
1. Check the config (``REQUIRED_FIELDS``), build the mesh (``config.mesh.data`` x
   ``config.mesh.fsdp`` over all global devices; default all on ``data``) and the task
   (``config.task`` in ``jaxinv.train.tasks.TASKS``).
2. ``task.init(fold_in(PRNGKey(seed), INIT_KEY_FOLD))`` -> params, model_state, frozen; the
   optimizers' states; everything placed on the mesh by the ``jaxinv.parallel`` rules.
3. Resume: the latest complete checkpoint in ``WORKDIR/checkpoints`` (state and this process's
   data-iterator position) if there is one, else ``config.init_from`` (another run's workdir:
   its params only), else the fresh init.
4. Steps ``state.step .. total_steps - 1``: one jitted step each (state donated). After
   step 1 (the starting losses) and every ``log_every`` steps metrics go to ``metrics.jsonl`` /
   TensorBoard / the progress bar;
   every ``checkpoint_every`` steps (and at the end, and on SIGTERM) a checkpoint is saved,
   after the NaN/Inf guard has checked that nothing non-finite happened since the last one.
   Every ``preview_every`` steps (if the task has ``preview``) an image grid goes to TensorBoard.

Real data (``task.needs_real_data``): ``jaxinv.data.train_iterator(config, task_name=...,
batch_size=<this process's rows>, process_index, process_count)`` must return an iterator of
dicts of numpy arrays with ``get_state()`` / ``set_state(state)`` (JSON-able); its state goes
into every checkpoint, so resume continues at the exact next batch.
"""
from __future__ import annotations

import contextlib
import logging
import os
import signal
import time

import jax
import jax.numpy as jnp
import numpy as np

from jaxinv.parallel import sharding as shd
from jaxinv.train import checkpoint as ckpt
from jaxinv.train import metrics as metrics_lib
from jaxinv.train import state as state_lib
from jaxinv.train import step as step_lib
from jaxinv.train.tasks import build_task

log = logging.getLogger("jaxinv.train")

REQUIRED_FIELDS = ("task", "total_steps", "batch_size", "seed", "log_every", "checkpoint_every")


class NonFiniteError(FloatingPointError):
  """A loss term or gradient became NaN/Inf; the last good checkpoint is kept."""


CONFIG_FILE = "config.json"   # DIR/config.json: the config of the latest start in DIR


def _get(config, name, default=None):
  try:
    v = config.get(name, default)
  except AttributeError:
    v = getattr(config, name, default)
  return default if v is None else v


def check_config(config):
  missing = [f for f in REQUIRED_FIELDS if _get(config, f) is None]
  if missing:
    raise ValueError(f"config is missing required field(s) {missing}")
  for f in ("total_steps", "batch_size", "log_every", "checkpoint_every"):
    if int(config[f]) < 1:
      raise ValueError(f"config.{f} must be >= 1, got {config[f]}")


def _mesh(config):
  m = _get(config, "mesh", {}) or {}
  devices = jax.devices()
  n = int(_get(m, "num_devices", 0) or 0)  # 0: all (global) devices
  if n:
    if n > len(devices):
      raise ValueError(f"config.mesh.num_devices={n} but only {len(devices)} devices exist")
    devices = devices[:n]
  return shd.make_train_mesh(int(_get(m, "data", -1)), int(_get(m, "fsdp", 1)), devices)


def _fault(name: str, step: int):
  """Fault injection for the resume tests: ``JAXINV_TRAIN_KILL_<name>=<step>`` -> SIGKILL."""
  at = os.environ.get(f"JAXINV_TRAIN_KILL_{name}")
  if at is not None and int(at) == step:
    os.kill(os.getpid(), signal.SIGKILL)


class _Preemption:
  """SIGTERM -> save at the next step boundary, then return."""

  def __init__(self):
    self.requested = False
    self._old = None

  def __enter__(self):
    try:
      self._old = signal.signal(signal.SIGTERM, self._handle)
    except ValueError:  # not the main thread: no handler, nothing to restore
      self._old = None
    return self

  def _handle(self, signum, frame):
    self.requested = True

  def __exit__(self, *exc):
    if self._old is not None:
      signal.signal(signal.SIGTERM, self._old)

  def agreed(self) -> bool:
    """True on every process as soon as any process got SIGTERM (a collective if multi-host)."""
    if jax.process_count() == 1:
      return self.requested
    from jax.experimental import multihost_utils
    flags = multihost_utils.process_allgather(np.int32(self.requested))
    return bool(np.any(flags))


def _open_data(config, task, local_batch):
  if not task.needs_real_data:
    return None
  import jaxinv.data as data
  if not hasattr(data, "train_iterator"):
    raise NotImplementedError("this task needs real images but jaxinv.data.train_iterator is "
                              "not available")
  return data.train_iterator(config, task_name=task.name, batch_size=local_batch,
                             process_index=jax.process_index(),
                             process_count=jax.process_count())


def _init_from(config, state):
  path = _get(config, "init_from", "")
  if not path:
    return state
  ck = ckpt.load_checkpoint(path)
  cast = lambda cur, new: jnp.asarray(new, cur.dtype).reshape(cur.shape)
  params = jax.tree_util.tree_map(cast, state.params, ck["params"])
  log.info("initialised params from %s", path)
  ms = state.model_state
  tree = jax.tree_util.tree_structure
  if ck["model_state"] and tree(ck["model_state"]) == tree(ms):
    ms = jax.tree_util.tree_map(cast, ms, ck["model_state"])   # e.g. BatchNorm running statistics
    log.info("initialised model_state from %s", path)
  elif ck["model_state"]:
    log.warning("init_from %s: its model_state has another structure than this task's; "
                "model_state starts fresh", path)
  return state.replace(params=params, model_state=ms)


def train_and_evaluate(config, workdir: str) -> dict:
  """Trains ``config`` in ``workdir`` (resuming there if it holds a checkpoint).

  Returns the last logged metrics (a dict of floats, with ``step``). Raises ``NonFiniteError``
  naming the first non-finite metric and its step (no checkpoint is written from then on).
  """
  if not workdir:
    raise ValueError("a workdir is required")
  check_config(config)
  workdir = os.path.abspath(workdir)
  os.makedirs(workdir, exist_ok=True)
  total = int(config.total_steps)
  global_batch = int(config.batch_size)
  mesh = _mesh(config)
  div = shd.batch_divisor(mesh)
  if global_batch % div or global_batch % jax.process_count():
    raise ValueError(f"batch_size {global_batch} must be a multiple of the {div} devices that "
                     f"split the batch and of the {jax.process_count()} processes")
  local_batch = global_batch // jax.process_count()
  is_main = jax.process_index() == 0
  if is_main:  # what exporters (and a reader of the run) need: the run's config
    with open(os.path.join(workdir, CONFIG_FILE), "w") as f:
      f.write(config.to_json_best_effort(indent=1, sort_keys=True))

  task = build_task(config)
  seed = int(config.seed)
  base = jax.random.PRNGKey(seed)
  params, model_state, frozen = task.init(jax.random.fold_in(base, step_lib.INIT_KEY_FOLD))
  state = state_lib.create(params, model_state, task.optimizers, seed)
  fsdp_min = int(_get(config, "fsdp_min_size", shd.FSDP_MIN_SIZE))
  data_it = _open_data(config, task, local_batch)
  host_example = None
  if data_it is not None:  # the batch structure, without moving the iterator
    s0 = data_it.get_state()
    host_example = next(data_it)
    data_it.set_state(s0)
    host_example = shd.host_batch_to_global(host_example, mesh, global_batch)

  # Place everything on the mesh, then compile the step once for these shardings.
  st_sh = step_lib.state_shardings(state, mesh, fsdp_min)
  state = jax.device_put(state, st_sh)
  frozen = shd.replicate(frozen, mesh)
  train_step, st_sh = step_lib.jit_step(task, mesh, state, frozen, host_example, global_batch,
                                        fsdp_min)
  names, phase_metrics = step_lib.metric_names(task, state, frozen, host_example)

  mngr = ckpt.manager(workdir, keep=int(_get(config, "keep_checkpoints", 3)),
                      async_save=bool(_get(config, "checkpoint_async", True)))
  restored = ckpt.restore(mngr, ckpt.abstract_of(state, st_sh))
  if restored is not None:
    state, data_states, rstep = restored
    if data_it is not None:
      data_it.set_state(data_states[f"process_{jax.process_index()}"])
    log.info("resumed from %s at step %d", ckpt.checkpoint_dir(workdir), rstep)
  else:
    state = jax.device_put(_init_from(config, state), st_sh)
  start = int(jax.device_get(state.step))
  if start > total:
    log.warning("checkpoint step %d is past total_steps %d; nothing to do", start, total)

  preview_every = int(_get(config, "preview_every", 0) or 0)
  preview_fn = None
  if task.preview is not None and preview_every > 0:
    preview_fn = _make_preview(task, mesh, int(_get(config, "preview_rows", 4)))

  writer = metrics_lib.MetricWriter(workdir, start, enabled=is_main,
                                    tensorboard=bool(_get(config, "tensorboard", True)))
  log_every, ckpt_every = int(config.log_every), int(config.checkpoint_every)
  nan_every = int(_get(config, "nan_check_every", 0)) or log_every
  last_saved = mngr.latest_step()
  last_logged: dict = {}
  bar = _progress(is_main and bool(_get(config, "progress", True)), start, total)

  def data_states():
    if data_it is None:
      return {}
    return ckpt.gather_data_states(data_it.get_state())

  def guard(step_now):
    bad = np.asarray(jax.device_get(state.nonfinite))
    if bad[0] >= 0:
      raise NonFiniteError(
          f"non-finite {names[int(bad[0])]!r} at step {int(bad[1])}; stopping. The last good "
          f"checkpoint is {'step ' + str(last_saved) if last_saved is not None else 'none'} "
          f"in {ckpt.checkpoint_dir(workdir)}")

  try:
    with _Preemption() as pre:
      t0, s0 = time.time(), start
      for s in range(start, total):
        hb = None
        if data_it is not None:
          hb = shd.host_batch_to_global(next(data_it), mesh, global_batch)
        prev_state = state
        state, metrics = train_step(state, frozen, hb)
        done = s + 1
        del prev_state
        log_now = done % log_every == 0 or done == total or done == 1
        if log_now or done % nan_every == 0:
          guard(done)
        if log_now:
          m = {k: float(v) for k, v in jax.device_get(metrics).items()}
          for ph in task.phases:  # a lazy phase's metrics only on the steps it ran
            if s % ph.every:
              m = {k: v for k, v in m.items() if k not in phase_metrics[ph.label]}
          writer.scalars(done, m)
          last_logged = {"step": done, **m}
          rate = (done - s0) / max(time.time() - t0, 1e-9)
          if bar is not None:
            bar.set_postfix(loss=f"{m['loss']:.4g}", steps_s=f"{rate:.2f}")
        if preview_fn is not None and (done % preview_every == 0 or done == total):
          images = preview_fn(state, frozen, hb, jnp.int32(s))
          if is_main:
            writer.images(done, jax.device_get(images))
        if bar is not None:
          bar.update(1)
        _fault("AT_STEP", done)
        stop = (done % log_every == 0 or done == total) and pre.agreed()
        if done % ckpt_every == 0 or done == total or stop:
          guard(done)
          ckpt.save(mngr, done, state, data_states())
          _fault("IN_SAVE", done)  # async save still writing: a kill mid-save
          last_saved = done
        if stop:
          log.warning("SIGTERM: saved step %d, stopping", done)
          last_logged["preempted"] = True
          break
      mngr.wait_until_finished()
  finally:
    with contextlib.suppress(Exception):
      mngr.wait_until_finished()
    mngr.close()
    writer.close()
    if bar is not None:
      bar.close()
  return last_logged


def _progress(enabled, start, total):
  if not enabled:
    return None
  from tqdm import tqdm
  return tqdm(total=total, initial=start, unit="step", dynamic_ncols=True)


def _make_preview(task, mesh, rows):
  rep = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec())

  def fn(state, frozen, host_batch, step):
    keys = jax.random.split(jax.random.fold_in(state.rng, step), 1 + len(task.phases))
    batch = task.make_batch(frozen, keys[0], step, host_batch)
    out = task.preview(state.params, state.model_state, frozen, batch)
    return jax.tree_util.tree_map(lambda x: x[:rows], out)
  return jax.jit(fn, out_shardings=rep)
