"""Identity loss (ArcFace IR-SE-50) as the pSp family uses it -- placeholder, filled below."""
from __future__ import annotations

import jax

from jaxinv.ops.pooling import adaptive_avg_pool2d


def psp_id_preprocess(x: jax.Array) -> jax.Array:
  """pSp ``IDLoss.extract_feats`` input step: crop rows 35:223, cols 32:220, adaptive pool to 112."""
  return adaptive_avg_pool2d(x[:, 35:223, 32:220, :], 112)
