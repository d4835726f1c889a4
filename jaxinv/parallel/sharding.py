"""Meshes and sharding rules: logical axis names -> mesh axes, kept as data.

Model code names its array axes logically ("batch", "rays", "height", ...); this file alone decides
which mesh axis (if any) each name is split over. The default splits only the batch over the
"data" mesh axis (data parallelism); parameters are replicated.
"""
from __future__ import annotations

from typing import Sequence

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

# (logical axis, mesh axis or None). The first rule naming a logical axis wins.
LOGICAL_AXIS_RULES: tuple[tuple[str, str | None], ...] = (
    ("batch", "data"),
    ("rays", None),
    ("samples", None),
    ("plane", None),
    ("height", None),
    ("width", None),
    ("channels", None),
    ("embed", None),
    ("mlp", None),
)

# Logical axes of the generator's public arrays (leading axis first).
EG3D_LOGICAL_AXES = {
    "z": ("batch", "embed"),
    "c": ("batch", None),
    "ws": ("batch", None, "embed"),
    "planes": ("batch", "plane", "height", "width", "channels"),
    "image": ("batch", "height", "width", "channels"),
    "rays": ("batch", "rays", None),
}


def make_mesh(num_devices: int | None = None, axis_names: Sequence[str] = ("data",),
              shape: Sequence[int] | None = None, devices=None) -> Mesh:
  """A device mesh; by default all devices on one "data" axis."""
  devices = list(jax.devices() if devices is None else devices)
  if num_devices is not None:
    if num_devices > len(devices):
      raise ValueError(f"make_mesh: asked for {num_devices} devices, only {len(devices)} available")
    devices = devices[:num_devices]
  shape = (len(devices),) if shape is None else tuple(shape)
  if int(np.prod(shape)) != len(devices) or len(shape) != len(axis_names):
    raise ValueError(f"make_mesh: shape {shape} with axes {tuple(axis_names)} does not fit "
                     f"{len(devices)} devices")
  return Mesh(np.asarray(devices).reshape(shape), tuple(axis_names))


def logical_to_spec(logical_axes: Sequence[str | None],
                    rules=LOGICAL_AXIS_RULES, mesh: Mesh | None = None) -> PartitionSpec:
  """PartitionSpec of an array whose axes have these logical names (None: never split).

  Rules that point to a mesh axis the mesh lacks are ignored (that axis stays replicated), so one
  rule table serves meshes of any shape.
  """
  table = {}
  for name, axis in rules:
    table.setdefault(name, axis)
  used = set()
  spec = []
  for name in logical_axes:
    axis = table.get(name) if name is not None else None
    if axis is not None and (mesh is not None and axis not in mesh.axis_names or axis in used):
      axis = None
    if axis is not None:
      used.add(axis)
    spec.append(axis)
  return PartitionSpec(*spec)


def named_sharding(mesh: Mesh, logical_axes: Sequence[str | None],
                   rules=LOGICAL_AXIS_RULES) -> NamedSharding:
  return NamedSharding(mesh, logical_to_spec(logical_axes, rules, mesh))


def replicated(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, PartitionSpec())


def shard_batch(tree, mesh: Mesh, rules=LOGICAL_AXIS_RULES):
  """Places every array leaf of ``tree`` with its leading axis as "batch" (scalars replicated)."""
  def put(x):
    x = np.asarray(x) if not isinstance(x, jax.Array) else x
    if x.ndim == 0:
      return jax.device_put(x, replicated(mesh))
    spec = named_sharding(mesh, ("batch",) + (None,) * (x.ndim - 1), rules)
    if x.shape[0] % mesh.shape[spec.spec[0]] if spec.spec[0] else False:
      raise ValueError(f"shard_batch: batch {x.shape[0]} is not divisible by the "
                       f"{mesh.shape[spec.spec[0]]} devices of mesh axis {spec.spec[0]!r}")
    return jax.device_put(x, spec)
  return jax.tree_util.tree_map(put, tree)


def replicate(tree, mesh: Mesh):
  """Places every leaf of ``tree`` (e.g. parameters) fully replicated on ``mesh``."""
  return jax.tree_util.tree_map(lambda x: jax.device_put(x, replicated(mesh)), tree)


# ---------------------------------------------------------------------------------------------
# Training meshes: axes ("data", "fsdp").
#
# The batch's leading axis is split over both axes (every device sees batch / n_devices rows);
# parameters and optimizer state are replicated, except that with an ``fsdp`` axis of size > 1 a
# leaf of at least ``FSDP_MIN_SIZE`` elements is split over ``fsdp`` along its largest axis that
# the axis size divides (ZeRO-3 style: XLA all-gathers it where it is used).
# ---------------------------------------------------------------------------------------------
TRAIN_AXES = ("data", "fsdp")
BATCH_AXES = ("data", "fsdp")
FSDP_MIN_SIZE = 2 ** 18


def make_train_mesh(data: int = -1, fsdp: int = 1, devices=None) -> Mesh:
  """A ``("data", "fsdp")`` mesh over all (global) devices; ``-1`` takes what is left."""
  devices = list(jax.devices() if devices is None else devices)
  n = len(devices)
  if data == -1 and fsdp == -1:
    raise ValueError("mesh: at most one of data / fsdp may be -1")
  if data == -1:
    if n % fsdp:
      raise ValueError(f"mesh: fsdp={fsdp} does not divide the {n} devices")
    data = n // fsdp
  elif fsdp == -1:
    if n % data:
      raise ValueError(f"mesh: data={data} does not divide the {n} devices")
    fsdp = n // data
  if data * fsdp != n:
    raise ValueError(f"mesh: data={data} x fsdp={fsdp} != {n} devices")
  return Mesh(np.asarray(devices).reshape(data, fsdp), TRAIN_AXES)


def batch_sharding(mesh: Mesh, ndim: int = 1) -> NamedSharding:
  """Leading axis split over the mesh's batch axes, the rest replicated."""
  axes = tuple(a for a in BATCH_AXES if a in mesh.axis_names)
  return NamedSharding(mesh, PartitionSpec(axes, *([None] * (ndim - 1))))


def batch_divisor(mesh: Mesh) -> int:
  """How many ways the batch is split (the batch size must be a multiple)."""
  return int(np.prod([mesh.shape[a] for a in BATCH_AXES if a in mesh.axis_names]))


def param_spec(shape, mesh: Mesh, min_size: int = FSDP_MIN_SIZE) -> PartitionSpec:
  """The training rule for one parameter / optimizer-state leaf of this ``shape``."""
  n = dict(mesh.shape).get("fsdp", 1)
  if n <= 1 or not shape or int(np.prod(shape)) < min_size:
    return PartitionSpec()
  for axis in sorted(range(len(shape)), key=lambda i: -shape[i]):
    if shape[axis] % n == 0:
      spec = [None] * len(shape)
      spec[axis] = "fsdp"
      return PartitionSpec(*spec)
  return PartitionSpec()


def param_shardings(tree, mesh: Mesh, min_size: int = FSDP_MIN_SIZE):
  """``NamedSharding`` per leaf of ``tree`` (arrays or ShapeDtypeStructs) by ``param_spec``."""
  return jax.tree_util.tree_map(
      lambda x: NamedSharding(mesh, param_spec(tuple(np.shape(x)), mesh, min_size)), tree)


def host_batch_to_global(tree, mesh: Mesh, global_batch: int):
  """This process's rows of a batch (numpy leaves, leading axis = local rows) -> global arrays.

  Leaves without a leading batch axis (scalars) must be equal on every process and are
  replicated.
  """
  nproc = jax.process_count()

  def put(x):
    x = np.asarray(x)
    if x.dtype == np.int64 and not jax.config.jax_enable_x64:
      x = x.astype(np.int32)
    elif x.dtype == np.float64 and not jax.config.jax_enable_x64:
      x = x.astype(np.float32)
    if x.ndim == 0:
      return jax.make_array_from_process_local_data(replicated(mesh), x, ())
    if x.shape[0] * nproc != global_batch:
      raise ValueError(f"host batch has {x.shape[0]} rows on each of {nproc} processes; "
                       f"the global batch is {global_batch}")
    return jax.make_array_from_process_local_data(batch_sharding(mesh, x.ndim), x,
                                                  (global_batch,) + x.shape[1:])
  return jax.tree_util.tree_map(put, tree)
