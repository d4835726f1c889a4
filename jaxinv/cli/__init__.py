"""The ``jaxinv`` command line: one sub-command per module in this package.

Each sub-command module defines ``HELP`` (one line), ``add_arguments(parser)`` and ``run(args)``
(returns an exit code). Modules are imported only when their sub-command runs, so ``jaxinv --help``
stays fast.
"""
from __future__ import annotations

import argparse
import importlib
import sys

# sub-command -> (module, one-line help shown by `jaxinv --help`)
SUBCOMMANDS = {
    "generate": ("jaxinv.cli.generate", "render seeds of an EG3D generator to PNG grids, depth maps and a yaw-sweep video"),
    "convert": ("jaxinv.cli.convert", "convert published checkpoints (EG3D pickles, encoders, loss networks) to jaxinv's format"),
    "preprocess": ("jaxinv.cli.preprocess", "detect, align and estimate camera poses for a folder of photos (EG3D dataset.json)"),
}


def build_parser() -> argparse.ArgumentParser:
  p = argparse.ArgumentParser(
      prog="jaxinv",
      description="3D GAN inversion in JAX. Run `jaxinv COMMAND --help` for each command.")
  sub = p.add_subparsers(dest="command", metavar="COMMAND")
  for name, (module, help_) in SUBCOMMANDS.items():
    sp = sub.add_parser(name, help=help_, description=help_)
    sp.set_defaults(_module=module)
  return p


def main(argv=None) -> int:
  argv = sys.argv[1:] if argv is None else list(argv)
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
  return int(mod.run(sp.parse_args(argv[1:])) or 0)


if __name__ == "__main__":
  sys.exit(main())
