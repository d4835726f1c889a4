"""The loop's self-test task (``jaxinv.train.tasks.debug``): seconds on a CPU.

  python -m jaxinv.train --config configs/debug.py --workdir /tmp/debug
"""
import ml_collections

from jaxinv.train.config import base_config


def get_config(arg=None):
  c = base_config("debug", total_steps=40, batch_size=8, seed=0, log_every=5,
                  checkpoint_every=10, preview_every=20)
  c.width = 16
  c.dim = 8
  c.lr = 1e-2
  c.critic_every = 2
  c.nan_at_step = -1
  c.data = ml_collections.ConfigDict(dict(path="", format="eg3d", mirror=False, resolution=0,
                                          shuffle=True))
  return c
