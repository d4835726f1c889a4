"""Training: one sharded train loop for every method (``jaxinv.train.tasks``).

Stable entry points::

  metrics = jaxinv.train.train_and_evaluate(config, workdir)
  ckpt = jaxinv.train.load_checkpoint(workdir, step=None)   # dict(step, params, model_state)

and the command ``python -m jaxinv.train --config configs/METHOD.py[:ARGS] --workdir DIR``.
"""
from jaxinv.train.checkpoint import load_checkpoint
from jaxinv.train.loop import NonFiniteError, train_and_evaluate

__all__ = ["train_and_evaluate", "load_checkpoint", "NonFiniteError"]
