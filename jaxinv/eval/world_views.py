"""Ground-truth novel views on the procedural world: ONE scoring path for ``jaxinv eval --data
world`` and ``bench/world_novel_view.py``.

A render of an inversion (or of any generator) at cameras ``c`` is compared with the world's exact
render of the true scenes ``z`` at the same cameras:

* PSNR and SSIM of ``image`` against ``world.render(z, c, G.config.img_resolution)["image"]``
  (the prediction clipped to [-1, 1] for SSIM);
* the mean absolute error of ``image_depth`` over the world's foreground, at the generator's
  neural rendering resolution (``world.render(z, c, G.neural_rendering_resolution)``).
"""
from __future__ import annotations

import numpy as np

from jaxinv.data import world
from jaxinv.eval import metrics

SEED = 7_000_001   # held-out scenes: the toy generator's training never draws from this key


def score_view(pred: dict, z, c, G, *, return_truth: bool = False):
  """Per-scene scores ``{psnr, ssim, depth_l1}``, each a float64 array ``[B]``.

  Args:
    pred: a render ``dict(image [B, H, W, 3], image_depth [B, R, R, 1], ...)`` at cameras ``c``.
    z: ``[B, world.Z_DIM]`` the true scenes.
    c: ``[B, 25]`` the cameras of ``pred``.
    G: the generator whose output sizes the truth is rendered at.
    return_truth: also return the world's exact images ``[B, H, W, 3]`` (for image grids).
  """
  truth = world.render(z, c, resolution=G.config.img_resolution)
  raw = world.render(z, c, resolution=G.neural_rendering_resolution)
  scores = dict(psnr=np.asarray(metrics.psnr(pred["image"], truth["image"]), np.float64),
                ssim=np.asarray(metrics.ssim(pred["image"], truth["image"]), np.float64),
                depth_l1=np.asarray(metrics.depth_error(pred["image_depth"], raw["depth"],
                                                        raw["mask"]), np.float64))
  return (scores, np.asarray(truth["image"])) if return_truth else scores
