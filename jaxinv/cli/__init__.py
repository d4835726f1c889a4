"""The ``jaxinv`` command line: one sub-command per module in this package.

Each sub-command module defines ``add_arguments(parser)`` and ``run(args)`` (returns an exit code).
Modules are imported only when their sub-command runs, so ``jaxinv --help`` stays fast.

Errors: a command reports an expected problem (a missing file, a bad value, a refused checkpoint,
an output that already exists) by raising :class:`CommandError`, ``OSError`` or ``ValueError`` (or
any type in :data:`EXPECTED_ERRORS`). :func:`main` prints it as ONE line,
``jaxinv COMMAND: error: ...``, and returns exit code 1; the traceback is shown only with
``--debug`` (accepted before or after the command name) or ``JAXINV_DEBUG=1``. Anything else is a
bug and keeps its traceback.

Outputs: commands never overwrite or delete a file they did not create in the same run; use
:func:`refuse_existing` for every output path before doing any work.
"""
from __future__ import annotations

import argparse
import importlib
import os
import pathlib
import pickle
import sys
import zipfile

# sub-command -> (module, one-line help shown by `jaxinv --help`)
SUBCOMMANDS = {
    "generate": ("jaxinv.cli.generate", "render seeds of an EG3D generator to PNG grids, depth maps and a yaw-sweep video"),
    "convert": ("jaxinv.cli.convert", "convert published checkpoints (EG3D pickles, encoders, loss networks) to jaxinv's format"),
    "preprocess": ("jaxinv.cli.preprocess", "detect, align and estimate camera poses for a folder of photos (EG3D dataset.json)"),
    "invert": ("jaxinv.cli.invert", "invert photos into an EG3D generator: views, depth, mesh.ply, video, latents (a file or a folder)"),
    "edit": ("jaxinv.cli.edit", "edit an inversion (latents.npz from `jaxinv invert`) along a direction file and render it"),
    "eval": ("jaxinv.cli.eval", "evaluate a method on an EG3D dataset or the procedural world: metrics table, plots, JSON (resumable)"),
}

DEBUG_FLAG = "--debug"


class CommandError(Exception):
  """An expected, user-fixable problem; printed as one line without a traceback."""


# What main() reports as one line. MemoryError / RecursionError are here because the loaders
# turn hostile files into their own errors; if one still escapes, it is a resource problem the
# user can act on (and --debug shows where).
EXPECTED_ERRORS = (CommandError, OSError, ValueError, pickle.UnpicklingError, zipfile.BadZipFile,
                   MemoryError, RecursionError)


def refuse_existing(*paths, overwrite: bool = False, what: str = "output") -> None:
  """Raises :class:`CommandError` if any of ``paths`` exists (unless ``overwrite``), or if one is
  an existing folder where a file is meant to go. Call it before any slow work."""
  for p in paths:
    p = pathlib.Path(p)
    if p.is_dir():
      raise CommandError(f"{what} {p} is a folder, expected a file path")
    if p.exists() and not overwrite:
      raise CommandError(f"{what} {p} already exists (pass --overwrite to replace it)")


def output_dir(path, *, what: str = "output folder") -> pathlib.Path:
  """Checks that ``path`` can be used as an output folder (absent or a folder); returns it.
  Does not create it, so a command that fails later leaves nothing behind."""
  p = pathlib.Path(path)
  if p.exists() and not p.is_dir():
    raise CommandError(f"{what} {p} exists and is not a folder")
  parent = p.parent if not p.exists() else p
  while not parent.exists() and parent != parent.parent:
    parent = parent.parent
  if parent.exists() and not os.access(parent, os.W_OK):
    raise CommandError(f"{what} {p}: cannot write under {parent} (permission denied)")
  return p


def build_parser() -> argparse.ArgumentParser:
  p = argparse.ArgumentParser(
      prog="jaxinv",
      description="3D GAN inversion in JAX. Run `jaxinv COMMAND --help` for each command.")
  p.add_argument(DEBUG_FLAG, action="store_true",
                 help="show the full traceback of an error instead of one line")
  sub = p.add_subparsers(dest="command", metavar="COMMAND")
  for name, (module, help_) in SUBCOMMANDS.items():
    sp = sub.add_parser(name, help=help_, description=help_)
    sp.set_defaults(_module=module)
  return p


def _one_line(e: BaseException) -> str:
  text = " ".join(str(e).split()) or type(e).__name__
  if isinstance(e, OSError) and e.filename and str(e.filename) not in text:
    text = f"{text}: {e.filename}"
  if isinstance(e, (MemoryError, RecursionError)):
    text = f"{type(e).__name__}: {text}"
  return text


def _enable_compilation_cache() -> None:
  """XLA's persistent compilation cache for the commands (a second run skips most compiling):
  ``$JAX_COMPILATION_CACHE_DIR`` when set, else ``$XDG_CACHE_HOME/jaxinv/xla`` (``~/.cache``);
  ``JAXINV_NO_COMPILATION_CACHE=1`` turns it off."""
  if os.environ.get("JAX_COMPILATION_CACHE_DIR") or os.environ.get("JAXINV_NO_COMPILATION_CACHE"):
    return
  base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
  path = os.path.join(base, "jaxinv", "xla")
  try:
    os.makedirs(path, exist_ok=True)
  except OSError:
    return
  if not os.access(path, os.W_OK):
    return
  import jax
  jax.config.update("jax_compilation_cache_dir", path)


def main(argv=None) -> int:
  """Runs one sub-command; returns its exit code (0 ok, 1 expected error, 2 usage)."""
  argv = sys.argv[1:] if argv is None else list(argv)
  debug = os.environ.get("JAXINV_DEBUG", "") not in ("", "0")
  if DEBUG_FLAG in argv:
    debug = True
    argv = [a for a in argv if a != DEBUG_FLAG]
  parser = build_parser()
  # Parse only the command name first so that each module adds its own arguments.
  if not argv or argv[0] not in SUBCOMMANDS:
    args = parser.parse_args(argv)
    if args.command is None:
      parser.print_help()
      return 2
  name = argv[0]
  mod = importlib.import_module(SUBCOMMANDS[name][0])
  sp = argparse.ArgumentParser(prog=f"jaxinv {name}", description=getattr(mod, "__doc__", None),
                               formatter_class=argparse.RawDescriptionHelpFormatter)
  mod.add_arguments(sp)
  sp.add_argument(DEBUG_FLAG, action="store_true",
                  help="show the full traceback of an error instead of one line")
  args = sp.parse_args(argv[1:])
  _enable_compilation_cache()
  try:
    return int(mod.run(args) or 0)
  except EXPECTED_ERRORS as e:
    if debug:
      raise
    print(f"jaxinv {name}: error: {_one_line(e)}", file=sys.stderr)
    return 1
  except KeyboardInterrupt:
    if debug:
      raise
    print(f"jaxinv {name}: interrupted", file=sys.stderr)
    return 130


if __name__ == "__main__":
  sys.exit(main())
