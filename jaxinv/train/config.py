"""The loop's config fields, shared by every ``configs/METHOD.py`` (``base_config()``).

Required (DESIGN.md): ``total_steps``, ``batch_size`` (global, over all processes), ``seed``,
``log_every``, ``checkpoint_every``; plus ``task`` (a name in ``jaxinv.train.tasks.TASKS``).
Optional, with these defaults:

``keep_checkpoints`` 3      how many checkpoints to keep
``checkpoint_async`` True   Orbax writes in a background thread while training continues
``preview_every``    0      TensorBoard image grid every N steps (0: never)
``preview_rows``     4      samples per grid
``nan_check_every``  0      also run the NaN/Inf guard every N steps (0: at log/checkpoint steps)
``progress``         True   tqdm bar on process 0
``tensorboard``      True   TensorBoard event files under WORKDIR/tensorboard
``init_from``        ""     another run's workdir: start from its params when WORKDIR is empty
``mesh.data``        -1     devices on the data axis (-1: all that fsdp leaves)
``mesh.fsdp``        1      devices on the fsdp axis (large params sharded over it)
``mesh.num_devices`` 0      use only the first N global devices (0: all)
``fsdp_min_size``    2**18  leaves smaller than this stay replicated on an fsdp mesh
"""
from __future__ import annotations

import ml_collections

from jaxinv.parallel.sharding import FSDP_MIN_SIZE


def base_config(task: str, **fields) -> ml_collections.ConfigDict:
  """A ConfigDict with every loop field at its default, then ``fields``."""
  c = ml_collections.ConfigDict()
  c.task = task
  c.total_steps = 1000
  c.batch_size = 8
  c.seed = 0
  c.log_every = 50
  c.checkpoint_every = 1000
  c.keep_checkpoints = 3
  c.checkpoint_async = True
  c.preview_every = 0
  c.preview_rows = 4
  c.nan_check_every = 0
  c.progress = True
  c.tensorboard = True
  c.init_from = ""
  c.fsdp_min_size = FSDP_MIN_SIZE
  c.mesh = ml_collections.ConfigDict(dict(data=-1, fsdp=1, num_devices=0))
  for k, v in fields.items():
    c[k] = v
  return c
