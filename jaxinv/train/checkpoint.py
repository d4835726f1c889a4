"""Orbax checkpoints of the train state and the host data position.

Layout: ``WORKDIR/checkpoints/<step>/{state, data}``. ``state`` is the ``TrainState`` pytree;
``data`` is a JSON dict ``{"process_<i>": <that process's data-iterator state>}`` (empty when the
task generates all its data on device). Orbax writes each checkpoint into a temporary directory
and renames it when complete, so a process killed at any moment (also during a save) leaves the
previous checkpoints intact and the half-written one is ignored (and cleaned up) on restart.
"""
from __future__ import annotations

import json
import os

import jax
import numpy as np
import orbax.checkpoint as ocp

_STATE, _DATA = "state", "data"
_MAX_STATE_BYTES = 1 << 16


def checkpoint_dir(workdir: str) -> str:
  return os.path.join(os.path.abspath(workdir), "checkpoints")


def manager(workdir: str, keep: int = 3, async_save: bool = True,
            create: bool = True) -> ocp.CheckpointManager:
  options = ocp.CheckpointManagerOptions(max_to_keep=keep, create=create,
                                         enable_async_checkpointing=async_save)
  return ocp.CheckpointManager(checkpoint_dir(workdir), options=options,
                               item_names=(_STATE, _DATA))


def gather_data_states(local_state) -> dict:
  """Every process's data-iterator state (JSON-able), gathered onto every process."""
  if jax.process_count() == 1:
    return {"process_0": local_state}
  from jax.experimental import multihost_utils
  raw = json.dumps(local_state).encode()
  if len(raw) > _MAX_STATE_BYTES:
    raise ValueError(f"data iterator state is {len(raw)} bytes; at most {_MAX_STATE_BYTES}")
  buf = np.zeros((_MAX_STATE_BYTES + 4,), np.uint8)
  buf[:4] = np.frombuffer(np.uint32(len(raw)).tobytes(), np.uint8)
  buf[4:4 + len(raw)] = np.frombuffer(raw, np.uint8)
  allb = np.asarray(multihost_utils.process_allgather(buf))
  out = {}
  for i, b in enumerate(allb.reshape(jax.process_count(), -1)):
    n = int(np.frombuffer(b[:4].tobytes(), np.uint32)[0])
    out[f"process_{i}"] = json.loads(bytes(b[4:4 + n]).decode())
  return out


def save(mngr: ocp.CheckpointManager, step: int, state, data_states: dict, force: bool = True):
  mngr.save(step, args=ocp.args.Composite(**{_STATE: ocp.args.StandardSave(state),
                                             _DATA: ocp.args.JsonSave(data_states)}),
            force=force)


def restore(mngr: ocp.CheckpointManager, abstract_state, step: int | None = None):
  """``(state, data_states, step)`` of checkpoint ``step`` (default: the latest), or None."""
  step = mngr.latest_step() if step is None else step
  if step is None:
    return None
  got = mngr.restore(step, args=ocp.args.Composite(
      **{_STATE: ocp.args.StandardRestore(abstract_state), _DATA: ocp.args.JsonRestore()}))
  return got[_STATE], dict(got[_DATA] or {}), step


def abstract_of(state, shardings):
  """``ShapeDtypeStruct``s with shardings: the restore target (arrays land where they train)."""
  return jax.tree_util.tree_map(
      lambda x, s: jax.ShapeDtypeStruct(np.shape(x), x.dtype, sharding=s), state, shardings)


def load_checkpoint(workdir: str, step: int | None = None) -> dict:
  """``dict(step=int, params=trainable pytree, model_state=pytree)`` of a training run's
  checkpoint (stable API; ``model_state``: e.g. BatchNorm running statistics, ``{}`` if none).

  Reads ``WORKDIR/checkpoints`` (latest step unless ``step`` is given) without needing the
  config: arrays come back as numpy-backed host arrays in their saved structure
  (``params[group]`` is the trainable pytree of that group, e.g. ``params["encoder"]``).
  """
  path = checkpoint_dir(workdir)
  if not os.path.isdir(path):
    raise FileNotFoundError(f"no checkpoints under {path}")
  mngr = manager(workdir, async_save=False, create=False)
  try:
    steps = mngr.all_steps()
    if not steps:
      raise FileNotFoundError(f"no complete checkpoint under {path}")
    if step is None:
      step = max(steps)
    elif step not in steps:
      raise FileNotFoundError(f"no checkpoint for step {step} under {path}; have {sorted(steps)}")
    # Target: the saved shapes on this process's first device (the run may have used another
    # mesh or several processes).
    item = os.path.join(path, str(step), _STATE)
    with ocp.StandardCheckpointer() as reader:
      meta = reader.metadata(item)
      meta = getattr(meta, "item_metadata", meta)
      dev = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
      target = jax.tree_util.tree_map(
          lambda m: jax.ShapeDtypeStruct(tuple(m.shape), m.dtype, sharding=dev), meta,
          is_leaf=lambda m: hasattr(m, "shape") and hasattr(m, "dtype"))
      state = reader.restore(item, target)
  finally:
    mngr.close()
  get = (lambda k: state.get(k, {})) if isinstance(state, dict) else (
      lambda k: getattr(state, k, {}))
  return dict(step=int(step), params=get("params"), model_state=get("model_state"))
