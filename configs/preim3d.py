"""PREIM3D encoder training into EG3D (``jaxinv.train.tasks.preim3d``).

  python -m jaxinv.train --config configs/preim3d.py --workdir /tmp/preim3d                 # paper
  python -m jaxinv.train --config configs/preim3d.py:preset=release --workdir /tmp/preim3d  # code
  python -m jaxinv.train --config configs/preim3d.py:runlocal --workdir /tmp/preim3d        # CPU
  python -m jaxinv.train --config configs/preim3d.py:toy --workdir runs/preim3d_toy      # world encoder

Full (default, ``preset=paper``): EG3D ffhqrebalanced512-128, IR-SE-50 W+ encoder (ArcFace
init), L2 1.0 / LPIPS-alex 0.8 / ID at the input view 0.4, latent regression on in-domain
batches and multi-view ID over 4 surrounding views with the paper's ramps (+1e-4 every 5k steps
from 20k / 100k), Ranger 1e-4, batch 8, in-domain batches psi 0.7 with yaw +-30 / pitch +-20
deg, 1:1 with real FFHQ from ``data.path``. ``preset=release``: the released code's values
(lambda_w += 0.1 per 5k up to 10, lambda_sur 0.1 from 100k, 3 views, batch 2). Missing weight
files are errors naming the field.

``runlocal``: tiny_eg3d(), a 4-unit W+ encoder on 64x64, random LPIPS / tiny ID stand-ins; the
out-of-domain ("real") batches are images of the same generator from a second pose distribution
(EG3D's Gaussian yaw/pitch, psi 1: ``config.stand_in``); ramps compressed to start within 20
steps. Combine: ``configs/preim3d.py:runlocal,preset=release``.

``toy``: an encoder of the procedural world for the built-in toy generator (issue 12): images it
renders on device over its training orbit, alternating with the world's own renders at the same
cameras as the real half (``preim3d.real='world'``), the 4-unit encoder on 64 px, pixel L2 only
(no LPIPS / ArcFace files); ``jaxinv.train.tasks.psp_configs._toy`` says what differs and why.
Export the run with ``python -m jaxinv.train.export --workdir runs/preim3d_toy --out preim3d_toy.npz``.
"""
from jaxinv.train.tasks.psp_configs import psp_family_config


def get_config(arg=None):
  return psp_family_config("preim3d", arg)
