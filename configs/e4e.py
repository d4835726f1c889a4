"""e4e encoder training into EG3D (``jaxinv.train.tasks.e4e``).

  python -m jaxinv.train --config configs/e4e.py --workdir /tmp/e4e            # FFHQ-512 settings
  python -m jaxinv.train --config configs/e4e.py:runlocal --workdir /tmp/e4e   # 2-core CPU
  python -m jaxinv.train --config configs/e4e.py:toy --workdir runs/e4e_toy      # world encoder

Full (default): as ``configs/psp.py`` (EG3D ffhqrebalanced512-128, IR-SE-50 init, L2 1.0,
LPIPS 0.8, ID 0.1, Ranger 1e-4, real FFHQ from ``data.path``) plus e4e's defaults: progressive
deltas from step 20k, one more every 2k, delta reg 2e-4, latent discriminator (4-layer MLP, Adam
2e-5) weight 0.1 with R1 gamma 10 every 16 steps, e4e's LatentCodesPool of 50 for the real and
the fake codes, the discriminator updated before the encoder and fed the encoder's codes without
``w_avg`` as the official coach does (``--config.e4e.disc_fake_w_avg=True`` adds it). Missing
weight files are errors naming the field.

``runlocal``: tiny_eg3d(), a 4-unit encoder on 64x64, random LPIPS / tiny ID stand-ins, and
generated images standing in for real ones (as psp's runlocal); stages every 5 steps from 10,
R1 every 4 steps.

``toy``: an encoder of the procedural world for the built-in toy generator (issue 12): images it
renders on device over its training orbit, the 4-unit encoder on 64 px, pixel L2 only (no LPIPS /
ArcFace files); ``jaxinv.train.tasks.psp_configs._toy`` says what differs and why. Export the
run with ``python -m jaxinv.train.export --workdir runs/e4e_toy --out e4e_toy.npz``.
"""
from jaxinv.train.tasks.psp_configs import psp_family_config


def get_config(arg=None):
  return psp_family_config("e4e", arg)
