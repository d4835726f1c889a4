"""Reference-conformance loader: upstream state dict in, pure jit-compiled function out.

``load(kind, state_dict, **config)`` builds the network named by ``kind`` from a state dict that
uses the **upstream PyTorch key names** (as documented in ``fixtures/ENCODERS.md``) and returns a
pure, jit-compiled function computing what the upstream module's ``forward`` computes, with NHWC
float32 inputs and outputs. User-facing converters for released checkpoint files are built on the
same per-kind builders.

Kinds and signatures (stable):

=====================  ===========================================================================
``ir_se50``            ``f(x[B,112,112,3]) -> embedding [B,512]``
``ir_se50_idloss``     ``f(x[B,256,256,3]) -> embedding [B,512]`` (pSp IDLoss crop + adaptive pool)
``lpips_alex``         ``f(in0[B,H,W,3], in1[B,H,W,3]) -> distance [B]``
``lpips_vgg``          same as ``lpips_alex``
``psp``                ``f(x[B,256,256,3]) -> codes [B,n_styles,512]`` (config ``n_styles``)
``e4e``                ``f(x[B,256,256,3]) -> codes [B,n_styles,512]`` (inference form)
``preim3d_wplus``      ``f(x[B,256,256,3]) -> codes [B,14,512]``
``triplanenet_offsets`` ``f(x_input[B,256,256,6]) -> offsets [B,3,256,256,32]``
``goae_encoder``       ``f(x[B,256,256,3]) -> dict(ws, ws_base)`` each ``[B,14,512]``
``goae_afa``           ``f(img, rec_img [B,512,512,3], feature_map [B,32,32,512])``
                       ``-> dict(feature_map_adain, gamma, beta)`` each ``[B,32,32,512]``
=====================  ===========================================================================
"""
from __future__ import annotations

import importlib
from typing import Any, Callable, Mapping

import numpy as np

# kind -> "module:function". Each builder has the signature
# ``build(state_dict: Mapping[str, np.ndarray], **config) -> Callable`` and owns its key mapping.
_BUILDERS: dict[str, str] = {
    "ir_se50": "jaxinv.convert.irse:reference_ir_se50",
    "ir_se50_idloss": "jaxinv.convert.irse:reference_ir_se50_idloss",
    "lpips_alex": "jaxinv.convert.lpips:reference_lpips_alex",
    "lpips_vgg": "jaxinv.convert.lpips:reference_lpips_vgg",
    "psp": "jaxinv.convert.psp:reference_psp",
    "e4e": "jaxinv.convert.psp:reference_e4e",
    "preim3d_wplus": "jaxinv.convert.psp:reference_preim3d_wplus",
    "triplanenet_offsets": "jaxinv.convert.triplanenet:reference_triplanenet_offsets",
    "goae_encoder": "jaxinv.convert.goae:reference_goae_encoder",
    "goae_afa": "jaxinv.convert.goae:reference_goae_afa",
}

KINDS = tuple(_BUILDERS)


def load(kind: str, state_dict: Mapping[str, Any], **config) -> Callable:
  """Builds the upstream network ``kind`` from ``state_dict`` (upstream key names).

  Args:
    kind: one of ``KINDS``.
    state_dict: upstream key -> array (numpy or anything ``np.asarray`` accepts).
    **config: per-kind options (for example ``n_styles`` for ``psp``/``e4e``).

  Returns:
    A pure, jit-compiled function; see the module docstring for its signature.

  Raises:
    ValueError: unknown kind, or a state dict that does not match the network (the message names
      the missing, unexpected or mis-shaped keys).
  """
  if kind not in _BUILDERS:
    raise ValueError(f"unknown reference kind {kind!r}; known kinds: {', '.join(KINDS)}")
  module_name, fn_name = _BUILDERS[kind].split(":")
  builder = getattr(importlib.import_module(module_name), fn_name)
  sd = {k: np.asarray(v) for k, v in state_dict.items()}
  return builder(sd, **config)
