"""TriPlaneNet inference on an EG3D generator (Bhattarai et al., WACV 2024; v1, the released model).

Two encoders run one after the other (``models/triplanenet.py`` upstream):

1. ``w+ = phi(x) + w_avg`` (pSp ``GradualStyleEncoder``, 14 styles); render it at the input camera:
   ``y_hat = pool256(G(w+, c))``.
2. ``offsets = psi([y_hat, x - y_hat])`` (the tri-plane U-Net, 6-channel input); the first pass is
   *detached* (upstream clones and detaches it), so the offset branch trains the U-Net only.
3. ``planes = G.planes(w+) + offsets``, rendered at the output camera (the input camera, or a novel
   view); ``mirror=True`` also renders the mirrored camera (TriPlaneNet's symmetry loss compares
   that view with the flipped input). The released v1 model feeds no mirror residual to psi; v2's
   9-channel ``[y_hat, x - y_hat, x_mirror - y_hat_mirror]`` input is not supported.

Editing (paper section on editing): ``T_edit = (G(w) + dT) + G(w_edit) - G(w)``, which is
``G.planes(w_edit) + dT``: the offsets ride on top of the edited backbone planes.

Generator protocol: ``G.planes(ws) -> [B, 3, H, W, C]`` and a render of given planes
(upstream ``synthesis(..., triplane_offsets=...)``): ``synthesize_planes`` below uses
``EG3DGenerator.render_planes``, or ``G.synthesis(ws, c, planes=...)`` for stand-in generators
that take ``planes``. Images NHWC in [-1, 1]; camera
labels ``c [B, 25]``.
"""
from __future__ import annotations

from typing import Any, Mapping

import inspect

import jax
import jax.numpy as jnp

from jaxinv import checks
from jaxinv.ops.pooling import adaptive_avg_pool2d
from jaxinv.render.camera import mirror_label

ENCODER_RESOLUTION = 256


def pool_to_encoder(image: jax.Array, size: int = ENCODER_RESOLUTION) -> jax.Array:
  """``F.adaptive_avg_pool2d(image, (256, 256))`` (a 2x2 mean for EG3D's 512 output)."""
  if image.shape[1:3] == (size, size):
    return image
  return adaptive_avg_pool2d(image, (size, size))


def encoder_resolution(psp_model) -> int:
  """The input size of both encoders: the pSp model's ``input_size`` (256 for the release; the
  smaller encoders jaxinv trains, e.g. the toy world's, read 64)."""
  return int(getattr(psp_model, "input_size", None) or ENCODER_RESOLUTION)


def synthesize_planes(G, ws, c, planes, *, key=None, neural_rendering_resolution=None) -> dict:
  """Renders given tri-planes ``[B, 3, H, W, C]`` with ``G``'s decoder/renderer/superresolution.

  ``ws`` still drives the superresolution network (as upstream). Returns ``G.synthesis``'s dict.
  """
  if hasattr(G, "render_planes"):  # jaxinv.models.eg3d.EG3DGenerator
    return G.render_planes(planes, ws, c, key=key,
                           neural_rendering_resolution=neural_rendering_resolution)
  if "planes" in inspect.signature(G.synthesis).parameters:  # stand-in generators
    return G.synthesis(ws, c, planes=planes, key=key,
                       neural_rendering_resolution=neural_rendering_resolution)
  raise TypeError(f"{type(G).__name__} has no render_planes and its synthesis takes no 'planes': "
                  "cannot render tri-plane offsets with it")


def encode_ws(psp_model, psp_variables, latent_avg, x) -> jax.Array:
  """``w+ = phi(x) + w_avg``: ``x [B,256,256,3] -> [B, n_styles, 512]``."""
  return psp_model.apply(psp_variables, x) + latent_avg


def offset_encoder_input(x: jax.Array, y_hat: jax.Array) -> jax.Array:
  """``cat([y_hat, x - y_hat])`` with the first pass detached (as upstream): ``[B,256,256,6]``."""
  y_hat = jax.lax.stop_gradient(y_hat)
  return jnp.concatenate([y_hat, jax.lax.stop_gradient(x) - y_hat], axis=-1)


def forward(G, psp_model, triplane_model, params: Mapping[str, Any], x, c, *, c_render=None,
            mirror: bool = False, key=None, neural_rendering_resolution=None) -> dict:
  """TriPlaneNet v1 forward pass (pure; wrap it in ``jax.jit`` with the models static).

  Args:
    G: the EG3D generator (see the module docstring for the methods used).
    psp_model, triplane_model: linen modules (``GradualStyleEncoder``, ``TriPlaneEncoder``) or any
      modules with the same call signatures.
    params: ``{'psp': variables, 'triplane': variables, 'latent_avg': [n_styles, 512]}``.
    x: [B, S, S, 3] input images in [-1, 1], ``S = encoder_resolution(psp_model)`` (256 for the
      released model).
    c: [B, 25] camera labels of the inputs.
    c_render: [B, 25] camera for the final render (default ``c``).
    mirror: also render the final planes at the mirrored input camera.
    key: PRNG key for the renderer's stratified/importance draws (None: deterministic).
    neural_rendering_resolution: optional override of the generator's.

  Returns:
    dict with ``ws [B,n,512]``, ``y_hat_initial`` (first pass, S^2), ``offsets`` and ``planes``
    ``[B,3,256,256,32]``, ``y_hat`` (full-resolution image), ``y_hat_resized`` (S^2),
    ``depth``, and with ``mirror``: ``c_mirror``, ``y_hat_mirror``, ``y_hat_mirror_resized``.
  """
  res = encoder_resolution(psp_model)
  size = (res, res)
  if checks.is_concrete(x):
    checks.check_image(x, "x", size=size)
  else:  # under jit only the shape is known
    checks.check_shape(x, "x", (None, *size, 3), f"images [B, {res}, {res}, 3]")
  checks.check_shape(c, "c", (x.shape[0], 25), "camera labels [B, 25]")
  if c_render is not None:
    checks.check_shape(c_render, "c_render", (x.shape[0], 25), "camera labels [B, 25]")
  keys = [None] * 3 if key is None else list(jax.random.split(key, 3))
  nrr = {"neural_rendering_resolution": neural_rendering_resolution}

  ws = encode_ws(psp_model, params["psp"], params["latent_avg"], x)
  first = G.synthesis(ws, c, key=keys[0], **nrr)
  y_hat_initial = pool_to_encoder(first["image"], res)

  offsets = triplane_model.apply(params["triplane"], offset_encoder_input(x, y_hat_initial))
  ws_d = jax.lax.stop_gradient(ws)  # upstream renders the offsets with detached codes
  planes = G.planes(ws_d) + offsets
  out = synthesize_planes(G, ws_d, c if c_render is None else c_render, planes, key=keys[1], **nrr)
  result = {"ws": ws, "y_hat_initial": y_hat_initial, "offsets": offsets, "planes": planes,
            "y_hat": out["image"], "y_hat_resized": pool_to_encoder(out["image"], res),
            "depth": out["image_depth"]}
  if mirror:
    cm = mirror_label(c)
    out_m = synthesize_planes(G, ws_d, cm, planes, key=keys[2], **nrr)
    result.update(c_mirror=cm, y_hat_mirror=out_m["image"],
                  y_hat_mirror_resized=pool_to_encoder(out_m["image"], res))
  return result


def edit_planes(G, ws, offsets, ws_edit) -> jax.Array:
  """TriPlaneNet's editing rule ``T_edit = (G(w) + dT) + G(w_edit) - G(w)``.

  The two ``G(w)`` terms cancel exactly in real arithmetic, so this is ``G.planes(w_edit) + dT``
  (one backbone pass instead of two; ``ws`` only documents the pairing and is shape-checked).
  """
  checks.check_shape(ws_edit, "ws_edit", tuple(ws.shape), "[B, n_styles, 512]")
  return G.planes(ws_edit) + offsets


def render_edit(G, ws, offsets, ws_edit, c, *, key=None, neural_rendering_resolution=None) -> dict:
  """Renders the edited tri-planes ``edit_planes(...)`` at camera ``c``."""
  planes = edit_planes(G, ws, offsets, ws_edit)
  return synthesize_planes(G, ws_edit, c, planes, key=key,
                           neural_rendering_resolution=neural_rendering_resolution)
