"""``python -m jaxinv.train --config configs/METHOD.py[:ARGS] --workdir DIR [--config.FIELD=V ...]``

Only parses flags, starts ``jax.distributed`` when asked (or when a TPU pod / SLURM job is
detected), then calls ``jaxinv.train.train_and_evaluate(config, workdir)``. Errors a user can fix
(bad flags, unknown config fields, missing files, a non-finite loss) print one line and exit 2
(1 for a non-finite loss); ``--debug`` shows the traceback instead.
"""
from __future__ import annotations

import logging
import os
import sys

from absl import flags
from ml_collections import config_flags

FLAGS = flags.FLAGS
config_flags.DEFINE_config_file("config", None, "configs/METHOD.py[:ARGS]: the experiment config",
                                lock_config=True)
flags.DEFINE_string("workdir", None, "directory for checkpoints, metrics.jsonl and TensorBoard "
                    "files; rerunning on the same directory resumes")
flags.DEFINE_string("coordinator_address", None, "multi-process: HOST:PORT of process 0")
flags.DEFINE_integer("num_processes", None, "multi-process: number of processes")
flags.DEFINE_integer("process_id", None, "multi-process: this process's index")
flags.DEFINE_bool("debug", False, "show full tracebacks")


def _fail(msg: str, code: int = 2):
  print(f"jaxinv.train: error: {msg}", file=sys.stderr)
  sys.exit(code)


def _cluster_detected() -> bool:
  env = os.environ
  if int(env.get("SLURM_NTASKS", "1") or 1) > 1:
    return True
  return bool(env.get("TPU_WORKER_HOSTNAMES", "").count(","))  # a multi-host TPU slice


def init_distributed(coordinator_address=None, num_processes=None, process_id=None):
  """``jax.distributed.initialize`` with explicit flags, or auto-detection on pods / SLURM."""
  import jax
  explicit = [v is not None for v in (coordinator_address, num_processes, process_id)]
  if any(explicit) and not all(explicit):
    raise ValueError("--coordinator_address, --num_processes and --process_id go together")
  if all(explicit):
    if os.environ.get("JAX_PLATFORMS", "") == "cpu":
      jax.config.update("jax_cpu_collectives_implementation", "gloo")
    jax.distributed.initialize(coordinator_address, num_processes, process_id)
  elif _cluster_detected():
    jax.distributed.initialize()


def main(argv=None):
  argv = list(sys.argv if argv is None else argv)
  try:
    FLAGS(argv)
  except flags.Error as e:
    _fail(str(e).splitlines()[0])
  except (AttributeError, KeyError) as e:
    # ml_collections raises these for an unknown --config.FIELD.
    field = str(e).strip("'\"\\ ")
    given = [a.split("=")[0] for a in argv if a.startswith("--config.")]
    hit = [g for g in given if g.split(".")[-1] == field]
    _fail(f"unknown config field {field!r} ({hit[0] if hit else 'an override'}): the config has "
          "no such field")
  except (ValueError, FileNotFoundError, TypeError, SyntaxError, ImportError) as e:
    _fail(f"bad --config: {type(e).__name__}: {str(e).splitlines()[0] if str(e) else e!r}")
  try:
    config = FLAGS.config
    if config is not None:
      config.get("task")  # an unloadable file surfaces here, as an OSError
  except OSError:
    path = next((a.split("=", 1)[1] for a in argv if a.startswith("--config=")), None)
    if path is None and "--config" in argv[:-1]:
      path = argv[argv.index("--config") + 1]
    _fail(f"could not load the config file {path!r} (configs/METHOD.py[:ARGS]; does it exist "
          "and define get_config?)")
  if config is None:
    _fail("--config is required (configs/METHOD.py[:ARGS])")
  if not FLAGS.workdir:
    _fail("--workdir is required (checkpoints, metrics.jsonl and TensorBoard files go there)")
  logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
  for noisy in ("absl", "orbax"):
    logging.getLogger(noisy).setLevel(logging.WARNING)

  from jaxinv.train.loop import NonFiniteError, train_and_evaluate
  try:
    init_distributed(FLAGS.coordinator_address, FLAGS.num_processes, FLAGS.process_id)
    metrics = train_and_evaluate(config, FLAGS.workdir)
  except NonFiniteError as e:
    if FLAGS.debug:
      raise
    _fail(str(e), 1)
  except (FileNotFoundError, ValueError, KeyError, NotImplementedError) as e:
    if FLAGS.debug:
      raise
    # A KeyError's str() is the repr of its key; other messages are printed as they are.
    _fail(str(e.args[0]) if isinstance(e, KeyError) and e.args else str(e))
  if metrics:
    print("final:", " ".join(f"{k}={v:.5g}" if isinstance(v, float) else f"{k}={v}"
                             for k, v in metrics.items()))


if __name__ == "__main__":
  main()
