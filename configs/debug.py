"""The loop's self-test task (``jaxinv.train.tasks.debug``): seconds on a CPU.

  python -m jaxinv.train --config configs/debug.py --workdir /tmp/debug
"""
import ml_collections


def get_config(arg=None):
  c = ml_collections.ConfigDict()
  c.task = "debug"
  c.total_steps = 40
  c.batch_size = 8
  c.seed = 0
  c.log_every = 5
  c.checkpoint_every = 10
  c.preview_every = 20
  c.width = 16
  c.dim = 8
  c.lr = 1e-2
  c.critic_every = 2
  c.nan_at_step = -1
  c.mesh = ml_collections.ConfigDict(dict(data=-1, fsdp=1))
  return c
