"""NeRF-3DE inference on an EG3D generator (Li et al.; mapped onto EG3D as in RECIPES 4.6).

::

  w_base   = E_base(x) + w_avg                       one code in W, repeated to w+ (num_ws rows)
  x_hat_0  = G(w_base+, c)
  w+_t     = w+_{t-1} + E_ref([x, x_hat_{t-1}])       t = 1..iterations (ReStyle-style, eq. 9)
  x_hat_t  = G(w+_t, c)

``iterations = 0`` returns the base inversion; the paper uses one refinement and reports little
gain from more (its section 4.4). As in ReStyle, the render fed back to ``E_ref`` is detached
(``stop_gradient``): each refinement learns from its own input, not through the previous render.

Everything is a pure function of the parameters (``params = {'base': variables, 'refiner':
variables, 'w_avg': [w_dim]}``) and the generator ``G`` (``mapping``-free: ``G.synthesis(ws, c)``
only), so it runs under ``jax.jit`` / ``jax.grad``. Images NHWC in [-1, 1]; ``c [B, 25]``.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Mapping

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxinv import checks
from jaxinv.models.encoders.nerf3de import NeRF3DEConfig, base_encoder, refining_encoder
from jaxinv.ops.pooling import adaptive_avg_pool2d


@dataclasses.dataclass(frozen=True)
class NeRF3DE:
  """The two linen modules and their config (static; parameters are passed separately)."""
  config: NeRF3DEConfig
  base: nn.Module
  refiner: nn.Module

  @classmethod
  def build(cls, config: NeRF3DEConfig = NeRF3DEConfig()) -> "NeRF3DE":
    return cls(config, base_encoder(config), refining_encoder(config))

  def init(self, key, w_avg=None) -> dict:
    """Random parameters ``{'base', 'refiner', 'w_avg'}`` (``w_avg`` default zeros)."""
    s, cfg = self.config.input_size, self.config
    k1, k2 = jax.random.split(key)
    base = self.base.init(k1, jnp.zeros((1, s, s, 3), jnp.float32))
    refiner = self.refiner.init(k2, jnp.zeros((1, s, s, 6), jnp.float32))
    w_avg = jnp.zeros((cfg.w_dim,), jnp.float32) if w_avg is None else jnp.asarray(w_avg, jnp.float32)
    return {"base": base, "refiner": refiner, "w_avg": w_avg}


def to_encoder_size(image: jax.Array, size: int) -> jax.Array:
  """Adaptive average pool (or identity) of ``image [B, H, W, 3]`` to ``[B, size, size, 3]``."""
  if image.shape[1:3] == (size, size):
    return image
  return adaptive_avg_pool2d(image, (size, size))


def encode_base(model: NeRF3DE, params: Mapping[str, Any], x: jax.Array) -> jax.Array:
  """``w_base = E_base(x) + w_avg``: ``x [B, S, S, 3] -> [B, w_dim]`` (one code in W)."""
  return model.base.apply(params["base"], x) + params["w_avg"]


def repeat_ws(w: jax.Array, num_ws: int) -> jax.Array:
  """``[B, w_dim] -> [B, num_ws, w_dim]`` (the base code duplicated to w+, eq. 9's w_base+)."""
  return jnp.broadcast_to(w[:, None, :], (w.shape[0], num_ws, w.shape[-1]))


def refine_step(model: NeRF3DE, params: Mapping[str, Any], x: jax.Array, x_hat: jax.Array,
                ws: jax.Array) -> jax.Array:
  """One ReStyle step: ``ws + E_ref([x, stop_gradient(x_hat)])``; ``x, x_hat [B, S, S, 3]``."""
  inp = jnp.concatenate([x, jax.lax.stop_gradient(x_hat)], axis=-1)
  return ws + model.refiner.apply(params["refiner"], inp)


def render(G, ws, c, size: int, *, key=None, neural_rendering_resolution=None) -> dict:
  """``G.synthesis(ws, c)`` plus ``image_resized`` at the encoder size."""
  out = G.synthesis(ws, c, key=key, neural_rendering_resolution=neural_rendering_resolution)
  return dict(out, image_resized=to_encoder_size(out["image"], size))


def invert(model: NeRF3DE, params: Mapping[str, Any], G, x: jax.Array, c: jax.Array,
           iterations: int = 1, *, key=None, neural_rendering_resolution=None) -> dict:
  """Base encoding, then ``iterations`` refinements (a Python int: the loop is unrolled).

  Args:
    model, params: :class:`NeRF3DE` and its parameters (``NeRF3DE.init`` / a checkpoint).
    G: the EG3D generator (``G.synthesis``, ``G.num_ws``).
    x: ``[B, H, W, 3]`` input images in [-1, 1] (pooled to ``model.config.input_size``).
    c: ``[B, 25]`` cameras of the inputs.
    iterations: number of refinement steps (0 = base only).
    key: renderer key (``None``: deterministic renders), split per render.

  Returns:
    dict ``ws [B, num_ws, w_dim]`` (final), ``w_base [B, w_dim]``, ``ws_steps`` (list: base,
    then each refinement), ``images`` (list of full-size renders, same order), ``image`` (final
    render), ``image_resized`` (final, encoder size).
  """
  if iterations < 0 or int(iterations) != iterations:
    raise ValueError(f"iterations must be a non-negative int, got {iterations!r}")
  checks.check_rank(x, "x", 4, "[B, H, W, 3]")
  checks.check_shape(c, "c", (x.shape[0], 25), "camera labels [B, 25]")
  size = model.config.input_size
  xs = to_encoder_size(x, size)
  keys = [None] * (iterations + 1) if key is None else list(jax.random.split(key, iterations + 1))
  nrr = {"neural_rendering_resolution": neural_rendering_resolution}
  w_base = encode_base(model, params, xs)
  ws = repeat_ws(w_base, G.num_ws)
  out = render(G, ws, c, size, key=keys[0], **nrr)
  ws_steps, images = [ws], [out["image"]]
  for t in range(iterations):
    ws = refine_step(model, params, xs, out["image_resized"], ws)
    out = render(G, ws, c, size, key=keys[t + 1], **nrr)
    ws_steps.append(ws)
    images.append(out["image"])
  return {"ws": ws, "w_base": w_base, "ws_steps": ws_steps, "images": images,
          "image": out["image"], "image_resized": out["image_resized"]}


# ------------------------------------------------------------------------------ native files
# NeRF-3DE has no released weights: jaxinv's own runs (``jaxinv.train.export``) are stored as a
# native ``.npz`` (``jaxinv.convert.common.save_native``: arrays + JSON config, nothing executed).

NATIVE_KIND = "nerf3de"


def save(path, model: NeRF3DE, params: Mapping[str, Any], half: bool = False) -> None:
  """Writes ``model``'s config and ``params`` (``{'base', 'refiner', 'w_avg'}``); ``half``:
  float32 arrays stored as float16."""
  from jaxinv.convert.common import save_native
  missing = {"base", "refiner", "w_avg"} - set(params)
  if missing:
    raise ValueError(f"NeRF-3DE params: missing {sorted(missing)}")
  cfg = dataclasses.asdict(model.config)
  save_native(path, NATIVE_KIND, cfg, {k: params[k] for k in ("base", "refiner", "w_avg")},
              half=half)


def load(path) -> tuple[NeRF3DE, dict]:
  """``(NeRF3DE, params)`` from :func:`save`'s file, checked against the model it describes."""
  from jaxinv.convert.common import check_tree_matches
  from jaxinv.convert.common import load_native as _load
  _, cfg, tree = _load(path, expect_kind=NATIVE_KIND)
  try:
    config = NeRF3DEConfig(**{**cfg, "small_widths": tuple(cfg.get("small_widths", ()))})
  except (TypeError, ValueError) as e:
    raise ValueError(f"{path}: bad NeRF-3DE config ({e})") from None
  model = NeRF3DE.build(config)
  template = jax.eval_shape(model.init, jax.random.PRNGKey(0))
  check_tree_matches(template, tree, f"{path}: NeRF-3DE parameters")
  return model, tree
