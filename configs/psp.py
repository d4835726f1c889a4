"""pSp encoder training into EG3D (``jaxinv.train.tasks.psp``).

  python -m jaxinv.train --config configs/psp.py --workdir /tmp/psp            # FFHQ-512 settings
  python -m jaxinv.train --config configs/psp.py:runlocal --workdir /tmp/psp   # 2-core CPU
  python -m jaxinv.train --config configs/psp.py:toy --workdir runs/psp_toy      # world encoder

Full (default): EG3D ``ffhqrebalanced512-128`` (``generator.path``), IR-SE-50 pSp encoder on
256x256 inputs initialised from ArcFace IR-SE-50 (``encoder.backbone_path``), pSp's loss weights
(L2 1.0, LPIPS-alex 0.8, ID 0.1), Ranger lr 1e-4, batch 8, real FFHQ from ``data.path`` (EG3D
dataset.json layout, mirrored). Every weight file must exist (converted with ``jaxinv convert``);
a missing one is an error naming the field.

``runlocal``: the random ``tiny_eg3d()`` generator, a 4-unit encoder on 64x64 inputs, a
random-init LPIPS and a tiny random ID net stand in for the loss networks, and images generated
on device by that generator (yaw +-30 deg, pitch +-20 deg) stand in for the real images. No
files are read. Override any field: ``--config.losses.id=0 --config.batch_size=4``.

``toy``: an encoder of the procedural world for the built-in toy generator (issue 12): images it
renders on device over its training orbit, the 4-unit encoder on 64 px, pixel L2 only (no LPIPS /
ArcFace files); ``jaxinv.train.tasks.psp_configs._toy`` says what differs and why. Export the
run with ``python -m jaxinv.train.export --workdir runs/psp_toy --out psp_toy.npz``.
"""
from jaxinv.train.tasks.psp_configs import psp_family_config


def get_config(arg=None):
  return psp_family_config("psp", arg)
