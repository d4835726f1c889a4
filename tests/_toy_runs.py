"""Short runs of the encoder methods' ``:toy`` configs, shared by tests/test_toy_*.py."""


def short_run(c, work, steps: int = 2):
  """Trains ``c`` (a ``:toy`` config, already adjusted) for ``steps`` steps in ``work``, logging
  every step and checkpointing the last, with no previews, progress bar or TensorBoard."""
  from jaxinv.train import train_and_evaluate
  c.total_steps = c.checkpoint_every = steps
  c.log_every = 1
  c.preview_every = 0
  c.progress = False
  c.tensorboard = False
  train_and_evaluate(c, str(work))
  return c
