"""``python -m jaxinv.train.export --workdir DIR --out FILE.npz``: a trained run -> the file that
inference reads.

* ``psp`` / ``e4e`` / ``preim3d`` runs: the native encoder ``.npz`` of ``jaxinv.load_encoder`` and
  ``jaxinv.invert(method=..., weights={"generator": ..., "encoder": FILE})`` (eval-mode BatchNorm,
  ``latent_avg`` = the generator's ``w_avg``);
* ``triplanenet`` runs (``model.offset_input='v1'``) and ``nerf3de`` runs: both encoders as the
  native file of ``jaxinv.invert(method=..., weights={..., "encoder": FILE})``;
* ``goae`` runs: stage 1 the encoder file, stage 2 the AFA file
  (``weights={"encoder": ENC, "afa": AFA}``);
* ``toy_eg3d`` runs: the generator ``.npz`` and its manifest (``jaxinv.train.tasks.toy_eg3d``);
* ``zignerf`` runs: stage generator -> G and D, stage inverter -> the inverter, each with a
  manifest (``jaxinv.train.tasks.zignerf``; ``jaxinv.invert(method="zignerf")`` reads them).

The run's ``DIR/config.json`` (written by every start of the loop) says which. Errors print one
line and exit 2; an existing FILE is kept unless ``--overwrite``.
"""
from __future__ import annotations

import argparse
import os
import sys


def export(workdir: str, out: str, step: int | None = None):
  from jaxinv.train.tasks import psp_family
  config = psp_family.read_config(workdir)
  task = str(config.get("task", ""))
  if task in psp_family.KINDS:
    return psp_family.export_encoder(workdir, out, config, step)
  if task == "triplanenet":
    from jaxinv.train.tasks import triplanenet
    return triplanenet.export(workdir, out, config, step)
  if task == "nerf3de":
    from jaxinv.train.tasks import nerf3de
    return nerf3de.export(workdir, out, config, step)
  if task == "goae":
    from jaxinv.train.tasks import goae
    return goae.export(workdir, out, config, step)
  if task == "toy_eg3d":
    from jaxinv.train.tasks import toy_eg3d
    if step is not None:
      raise ValueError("--step: toy_eg3d exports its latest checkpoint")
    return toy_eg3d.export(workdir, out, config)
  if task == "zignerf":
    from jaxinv.train.tasks import zignerf
    if step is not None:
      raise ValueError("--step: zignerf exports its latest checkpoint")
    return zignerf.export(workdir, out, command=f"python -m jaxinv.train --config "
                          f"configs/zignerf.py:stage={config.get('stage')} --workdir {workdir}")
  raise ValueError(f"{workdir}: a {task!r} run; exportable runs: "
                   f"{', '.join(sorted(psp_family.KINDS))}, triplanenet, nerf3de, goae, toy_eg3d, "
                   "zignerf")


def main(argv=None) -> int:
  p = argparse.ArgumentParser(prog="python -m jaxinv.train.export", description=__doc__,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("--workdir", required=True, help="the run's directory")
  p.add_argument("--out", required=True, help="the .npz to write")
  p.add_argument("--step", type=int, default=None, help="a checkpoint step (default: the latest)")
  p.add_argument("--overwrite", action="store_true")
  p.add_argument("--debug", action="store_true", help="show full tracebacks")
  a = p.parse_args(argv)
  try:
    if not a.out.endswith(".npz"):
      raise ValueError(f"--out: expected a .npz path, got {a.out!r}")
    if os.path.exists(a.out) and not a.overwrite:
      raise FileExistsError(f"--out {a.out} already exists (pass --overwrite to replace it)")
    if not os.path.isdir(a.workdir):
      raise FileNotFoundError(f"--workdir: no such folder: {a.workdir}")
    export(a.workdir, a.out, a.step)
  except (OSError, ValueError, KeyError) as e:
    if a.debug:
      raise
    print(f"jaxinv.train.export: error: {' '.join(str(e).split())}", file=sys.stderr)
    return 2
  print(f"wrote {a.out}")
  return 0


if __name__ == "__main__":
  sys.exit(main())
