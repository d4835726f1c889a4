"""Shared pieces of the pSp-family tasks (``psp``, ``e4e``, ``preim3d``).

One encoder E (pSp ``GradualStyleEncoder``, e4e ``Encoder4Editing`` or PREIM3D's
``WPlusEncoder``) maps an image to ``codes [B, num_ws, 512]``; ``ws = codes + w_avg`` (pSp's
``start_from_latent_avg``); the frozen EG3D generator renders ``G.synthesis(ws, c)`` at the
input's camera, and the image losses compare it with the input.

Config fields read here (``configs/{psp,e4e,preim3d}.py`` set them):

``runlocal``            tiny models, no weight files, no dataset
``generator.path``      EG3D network pickle / converted file; "toy" = the built-in generator of
                        the procedural world (``jaxinv.load_generator("toy")``); "" only under
                        runlocal: the random ``tiny_eg3d()`` preset
``encoder.tiny``        4 narrow IR-SE units on 64x64 inputs instead of IR-SE-50 on 256x256
``encoder.input_size``  the encoder's input resolution (256; tiny: 64)
``encoder.backbone_path`` converted ArcFace IR-SE-50 file whose ``input_layer``/``body``
                        initialise the encoder trunk (pSp's ``ir_se50`` init); "" = random
``losses.l2 / lpips / id / w_norm``  weights (pSp: 1.0 / 0.8 / 0.1 / 0)
``losses.lpips_path``   converted LPIPS file (``jaxinv convert lpips``); "random" = random-init
                        AlexNet LPIPS (runlocal), ignored when ``losses.lpips == 0``
``losses.arcface_path`` converted ArcFace IR-SE-50 file; "tiny" = a tiny random embedding net
                        (runlocal), ignored when every ID weight is 0
``losses.id_crop``      "none" (EG3D-aligned renders, PREIM3D) or "psp" (pSp's face crop)
``losses.resolution``   the images the losses compare (256; tiny: 64)
``synthetic.*``         in-domain batches (``jaxinv.data.synthetic``): ``yaw_range``,
                        ``pitch_range`` (degrees, uniform), ``per_batch``, ``truncation_psi``,
                        ``truncation_cutoff`` (0 = None), ``conditioning``
``data.path``           real images (EG3D dataset folder/zip); "" = generated stand-ins
"""
from __future__ import annotations

import functools
import logging
import math
import os

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxinv.data import synthetic
from jaxinv.losses import arcface as arcface_loss
from jaxinv.losses import lpips as lpips_lib
from jaxinv.models.encoders import psp as psp_enc
from jaxinv.nn import irse
from jaxinv.nn.irse import irse_units
from jaxinv.ops.pooling import adaptive_avg_pool2d

log = logging.getLogger("jaxinv.train")

TINY_UNITS = irse_units(((16, 1), (32, 1), (48, 1), (64, 1)), in_ch=16)
TINY_TAPS = (1, 2, 3)


def cfg_get(c, name, default=None):
  try:
    v = c.get(name, default)
  except AttributeError:
    v = getattr(c, name, default)
  return default if v is None else v


def _need_file(path: str, field: str, what: str) -> str:
  if not path:
    raise FileNotFoundError(f"config.{field} is empty: {what} is needed (convert it with "
                            "`jaxinv convert`, or use the runlocal variant)")
  if not os.path.exists(path):
    raise FileNotFoundError(f"config.{field}: {path} does not exist ({what})")
  return path


@functools.lru_cache(maxsize=4)
def _tiny_generator(seed: int):
  from jaxinv.models.eg3d import tiny_eg3d
  return tiny_eg3d(seed)


def build_generator(config):
  path = str(cfg_get(config.generator, "path", ""))
  if not path and cfg_get(config, "runlocal", False):
    log.warning("runlocal: the generator is the random tiny_eg3d() preset (not a trained model)")
    return _tiny_generator(int(cfg_get(config.generator, "tiny_seed", 0)))
  from jaxinv.convert import eg3d as eg3d_convert
  if path == eg3d_convert.TOY:
    return eg3d_convert.load(eg3d_convert.TOY)
  return eg3d_convert.load(_need_file(path, "generator.path", "the EG3D generator"))


def w_avg_of(G) -> jax.Array:
  """The generator's tracked mean latent ``w_avg [w_dim]``."""
  found = [x for p, x in jax.tree_util.tree_flatten_with_path(G.params)[0]
           if "w_avg" in jax.tree_util.keystr(p)]
  if len(found) != 1:
    raise ValueError("could not find the generator's w_avg")
  return jnp.asarray(found[0])


def make_encoder(config, kind: str, n_styles: int):
  tiny = bool(cfg_get(config.encoder, "tiny", False))
  size = int(cfg_get(config.encoder, "input_size", 64 if tiny else 256))
  extra = dict(units=TINY_UNITS, taps=TINY_TAPS) if tiny else {}
  if kind == "psp":
    return psp_enc.GradualStyleEncoder(n_styles=n_styles, input_size=size, **extra), size
  if kind == "e4e":
    return psp_enc.Encoder4Editing(n_styles=n_styles, input_size=size, **extra), size
  if kind == "wplus":
    return psp_enc.WPlusEncoder(n_styles=n_styles, units=extra.get("units"), input_size=size), size
  raise ValueError(f"unknown encoder kind {kind!r}")


def init_encoder(config, encoder, size: int, key):
  variables = encoder.init(key, jnp.zeros((1, size, size, 3), jnp.float32))
  variables = jax.tree_util.tree_map(jnp.asarray, dict(variables))
  path = str(cfg_get(config.encoder, "backbone_path", ""))
  if path:
    from jaxinv.convert.irse import load_native_arcface
    _, arc = load_native_arcface(_need_file(path, "encoder.backbone_path", "the IR-SE-50 init"))
    for col in ("params", "batch_stats"):
      for name in ("input_layer", "body"):
        if name in variables.get(col, {}) and name in arc.get(col, {}):
          # The encoder's input conv reads in_ch channels like ArcFace's (3): copy when shapes match.
          same = jax.tree_util.tree_map(lambda a, b: a.shape == b.shape, variables[col][name],
                                        arc[col][name])
          if all(jax.tree_util.tree_leaves(same)):
            variables[col] = {**variables[col], name: jax.tree_util.tree_map(jnp.asarray,
                                                                             arc[col][name])}
  return variables.get("params", {}), {"batch_stats": variables.get("batch_stats", {})}


class TinyIdNet(nn.Module):
  """A tiny random face-embedding stand-in for ArcFace under ``runlocal``: unit-norm [B, 64]."""

  @nn.compact
  def __call__(self, x):
    for i, f in enumerate((8, 16, 32)):
      x = nn.leaky_relu(irse.conv2d(f, 3, 2, 1, use_bias=True, name=f"conv_{i}")(x), 0.2)
    e = nn.Dense(64, name="embed")(jnp.mean(x, axis=(1, 2)))
    return e / jnp.sqrt(jnp.sum(e * e, axis=-1, keepdims=True) + 1e-12)


class LossNets:
  """The frozen loss networks (LPIPS, identity) as pure functions of their variables."""

  def __init__(self, config, any_id: bool):
    L = config.losses
    self.lpips_weight = float(cfg_get(L, "lpips", 0.0))
    self.lpips_net = str(cfg_get(L, "lpips_net", "alex"))
    self.id_crop = str(cfg_get(L, "id_crop", "none"))
    self.lpips_path = str(cfg_get(L, "lpips_path", "")) if self.lpips_weight else ""
    self.id_path = str(cfg_get(L, "arcface_path", "")) if any_id else ""
    if self.lpips_weight and self.lpips_path != "random":
      _need_file(self.lpips_path, "losses.lpips_path", "the LPIPS weights")
    if any_id and self.id_path != "tiny":
      _need_file(self.id_path, "losses.arcface_path", "the ArcFace IR-SE-50 weights")
    if self.lpips_path == "random":
      log.warning("runlocal: LPIPS uses a random-init %s trunk (a stand-in, not the metric)",
                  self.lpips_net)
    if self.id_path == "tiny":
      log.warning("runlocal: the identity loss uses a tiny random embedding net, not ArcFace")

  def init(self, key, size: int) -> dict:
    k1, k2 = jax.random.split(key)
    out = {}
    x = jnp.zeros((1, size, size, 3))
    if self.lpips_path == "random":
      out["lpips"] = lpips_lib.LPIPS(self.lpips_net).init(k1, x, x)
    elif self.lpips_path:
      from jaxinv.convert.lpips import load_native_lpips
      net, out["lpips"] = load_native_lpips(self.lpips_path)
      self.lpips_net = net
    if self.id_path == "tiny":
      out["id"] = TinyIdNet().init(k2, x)
    elif self.id_path:
      from jaxinv.convert.irse import load_native_arcface
      _, out["id"] = load_native_arcface(self.id_path)
    return out

  # The modules are applied directly, without the public functions' [-1, 1] value checks:
  # generator renders overshoot that range a little (pSp feeds them to LPIPS / ArcFace as is).
  def lpips(self, nets, y_hat, y):
    return jnp.mean(lpips_lib.LPIPS(self.lpips_net).apply(nets["lpips"], y_hat, y))

  def embed(self, nets, x):
    if self.id_path == "tiny":
      return TinyIdNet().apply(nets["id"], x)
    return arcface_loss._ARCFACE.apply(nets["id"], arcface_loss.id_preprocess(x, self.id_crop))

  def id_loss(self, nets, y_hat, y):
    """``mean_b (1 - <F(y_hat), F(y)>)`` with the target embedding held constant."""
    e_t = jax.lax.stop_gradient(self.embed(nets, y))
    return jnp.mean(1.0 - jnp.sum(self.embed(nets, y_hat) * e_t, axis=-1))


def pool_to(x, size: int):
  """pSp's ``face_pool`` (adaptive average pooling) to ``size`` x ``size``; identity if equal."""
  if x.shape[1] == size and x.shape[2] == size:
    return x
  return adaptive_avg_pool2d(x, size)


def synthetic_config(config, key: str = "synthetic") -> synthetic.SyntheticConfig:
  s = config[key]
  dist = synthetic.PoseDistribution(
      kind=str(cfg_get(s, "kind", "uniform")),
      yaw_range=math.radians(float(cfg_get(s, "yaw_range", 30.0))),
      pitch_range=math.radians(float(cfg_get(s, "pitch_range", 20.0))),
      yaw_std=float(cfg_get(s, "yaw_std", 0.25)), pitch_std=float(cfg_get(s, "pitch_std", 0.12)),
      per_batch=bool(cfg_get(s, "per_batch", False)))
  cutoff = int(cfg_get(s, "truncation_cutoff", 0) or 0)
  return synthetic.SyntheticConfig(poses=dist, truncation_psi=float(cfg_get(s, "truncation_psi",
                                                                            1.0)),
                                   truncation_cutoff=cutoff or None,
                                   conditioning=str(cfg_get(s, "conditioning", "render")))


def generated(G, key, batch: int, syn, enc_size: int, loss_size: int) -> dict:
  """An in-domain batch: encoder input ``x``, loss target ``y``, camera ``c``, true ``ws``."""
  g = synthetic.generate(G, key, batch, syn)
  img = jax.lax.stop_gradient(g["image"])
  return dict(x=pool_to(img, enc_size), y=pool_to(img, loss_size), c=g["c"],
              ws=jax.lax.stop_gradient(g["ws"]))


def real(host_batch, enc_size: int, loss_size: int, num_ws: int, w_dim: int = 512) -> dict:
  img = host_batch["image"]
  b = img.shape[0]
  return dict(x=pool_to(img, enc_size), y=pool_to(img, loss_size), c=host_batch["c"],
              ws=jnp.zeros((b, num_ws, w_dim), jnp.float32))


def apply_encoder(encoder, params, model_state, x, **kw):
  """Train-mode forward (BatchNorm batch statistics): ``(codes, new model_state)``."""
  codes, upd = encoder.apply({"params": params, **model_state}, x, mutable=["batch_stats"], **kw)
  return codes, {**model_state, "batch_stats": upd["batch_stats"]}


def render(G, ws, c, key, loss_size: int):
  return pool_to(G.synthesis(ws, c, key=key)["image"], loss_size)


def image_terms(nets_fns: LossNets, nets, y_hat, y, weights: dict) -> tuple[jax.Array, dict]:
  """L2 + LPIPS + ID (pSp's ``calc_loss`` image part): (weighted sum, unweighted terms)."""
  terms = {"l2": jnp.mean(jnp.square(y_hat - y))}
  total = weights["l2"] * terms["l2"]
  if weights.get("lpips", 0.0):
    terms["lpips"] = nets_fns.lpips(nets, y_hat, y)
    total = total + weights["lpips"] * terms["lpips"]
  if weights.get("id", 0.0):
    terms["id"] = nets_fns.id_loss(nets, y_hat, y)
    total = total + weights["id"] * terms["id"]
  return total, terms


def w_norm(codes_rel) -> jax.Array:
  """pSp's ``WNormLoss`` (start_from_latent_avg): ``mean_b ||ws - w_avg||_2`` over all rows."""
  return jnp.mean(jnp.sqrt(jnp.sum(jnp.square(codes_rel.reshape(codes_rel.shape[0], -1)), -1)
                           + 1e-12))


def preview_images(G, ws, batch, loss_size, yaw=0.5):
  """Input / reconstruction / a novel view (yaw +0.5 rad) for TensorBoard grids."""
  b = batch["c"].shape[0]
  c_n = synthetic.look_at_labels(jnp.full((b,), yaw, jnp.float32), jnp.zeros((b,), jnp.float32))
  return dict(a_input=batch["y"], b_reconstruction=render(G, ws, batch["c"], None, loss_size),
              c_novel_view=render(G, ws, c_n, None, loss_size))


# ------------------------------------------------------------------------------------ export

ENCODER_TYPES = {"psp": "GradualStyleEncoder", "e4e": "Encoder4Editing",
                 "preim3d": "BackboneEncoderUsingLastLayerIntoWPlus"}
KINDS = {"psp": "psp", "e4e": "e4e", "preim3d": "wplus"}


def read_config(workdir: str):
  """The ``config.json`` a run wrote into ``workdir`` as a ``ConfigDict``."""
  import json

  import ml_collections

  from jaxinv.train.loop import CONFIG_FILE
  path = os.path.join(workdir, CONFIG_FILE)
  if not os.path.exists(path):
    raise FileNotFoundError(f"{workdir}: no {CONFIG_FILE} (not a jaxinv.train run directory, or "
                            "one from before runs recorded their config); pass config=")
  with open(path) as f:
    return ml_collections.ConfigDict(json.load(f))


def export_encoder(workdir: str, out_path: str, config=None, step: int | None = None,
                   half: bool = False):
  """A trained pSp / e4e / PREIM3D run -> the native encoder ``.npz`` that ``jaxinv.load_encoder``
  and ``jaxinv.invert(method=..., weights={"encoder": out_path})`` read.

  The encoder in eval mode (BatchNorm running statistics from the checkpoint's ``model_state``)
  plus ``latent_avg`` = the generator's ``w_avg`` for every style (the task's ``ws = codes +
  w_avg``). ``half``: float32 arrays stored as float16. Returns the ``EncoderCheckpoint`` written.
  """
  from jaxinv.convert import psp as psp_convert
  from jaxinv.train.checkpoint import load_checkpoint
  config = read_config(workdir) if config is None else config
  task = str(cfg_get(config, "task", ""))
  if task not in KINDS:
    raise ValueError(f"{workdir}: a {task!r} run; export_encoder takes psp, e4e or preim3d runs")
  G = build_generator(config)
  encoder, _ = make_encoder(config, KINDS[task], G.num_ws)
  ck = load_checkpoint(workdir, step)
  variables = {"params": ck["params"]["encoder"]}
  if "batch_stats" in (ck.get("model_state") or {}):
    variables["batch_stats"] = ck["model_state"]["batch_stats"]
  variables = jax.tree_util.tree_map(lambda x: jnp.asarray(x, jnp.float32), variables)
  latent_avg = jnp.broadcast_to(w_avg_of(G), (G.num_ws, w_avg_of(G).shape[-1]))
  out = psp_convert.EncoderCheckpoint(ENCODER_TYPES[task], encoder, variables,
                                      jax.device_get(latent_avg), {})
  psp_convert.save_native_encoder(out_path, out, half=half)
  return out
