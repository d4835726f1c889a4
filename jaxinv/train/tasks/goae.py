"""GOAE training, both stages, as phases of the one train loop (config: ``configs/goae.py``).

Stage 1 (``config.stage = 1``, paper §4.1, eqs. 2-5, 10-11), groups ``encoder`` and ``latent_d``,
alternating updates in every step:

* phase ``encoder``: ``w+ = E(pool(I)) + w_avg`` (progressive: the coarse / mid / fine deltas are
  switched on at ``progressive.stage_list``); the planes of ``w+`` are rendered from the input
  camera (``L_rec = l2 * ||I_w+ - I||^2 + lpips * LPIPS + id * ID``) and from ``C_FRONT``
  (``L_BG`` against ``frozen['bg_depth_avg']``, background from opacity: ``bg_depth.mask``);
  plus ``adv * L_adv^E`` (eq. 3, against the current D) and ``w_delta * L_w+``. Its (detached)
  ``w+`` goes to ``model_state['fake_ws']``;
* phase ``latent_d``: eq. 2 without R1 on fresh ``w_c = mapping(z, C_FRONT)`` (real) against
  every entry ``w_i`` of that ``w+`` (fake) -- the encoder runs once per step;
* phase ``latent_d_r1`` (every ``latent_d.r1_every`` steps): ``gamma/2 ||dD/dw_c||^2`` times
  ``r1_every`` (lazy R1, as e4e).

Stage 2 (``config.stage = 2``, §4.2-4.5), group ``afa``: the stage-1 encoder is frozen (in
``frozen``: it is never differentiated nor updated). ``F`` = the generator's 32x32 feature map of
``w+``; ``F* = AFA(I, I_w+, F)``; the input-view render of the refined tri-plane (or of the
occlusion-mixed one, ``stage2.render = 'mixed'``) gets ``L_rec``, its front view ``L_BG``, and
``delta_f * ||F* - F||``. With ``losses.stage2_latent_d > 0`` (the released code's 0.1) the latent
D keeps training and ``L_adv^E`` is added (logged) although it cannot move the AFA.

``frozen`` holds ``G``, the loss networks, ``bg_depth_avg`` (``inversion.goae.
average_background_depth``, computed once by ``init`` on device, or ``bg_depth.value``), the
encoder (stage 2) and the AFA's BatchNorm statistics. Metrics (unweighted): ``l2``, ``lpips``,
``id``, ``bg_depth``, ``adv_e``, ``w_delta``, ``delta_f``, ``progressive_level``, ``d_loss``,
``d_real``, ``d_fake``, ``d_r1``; ``l2`` is the in-domain metric.
"""
from __future__ import annotations

import logging
import math
import os

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from jaxinv.inversion import goae as gi
from jaxinv.losses import goae as L
from jaxinv.losses.arcface import id_loss
from jaxinv.losses.lpips import lpips_loss
from jaxinv.models.eg3d import tiny_eg3d
from jaxinv.models.encoders.goae import AFA, AFAConfig, GOAEncoder, GOAEncoderConfig
from jaxinv.nn.irse import irse_units
from jaxinv.nn.swin import SwinV2Config
from jaxinv.ops.pooling import adaptive_avg_pool2d
from jaxinv.train.optimizers import make_optimizer
from jaxinv.train.tasks.base import Phase, Task, TaskInit

log = logging.getLogger("jaxinv.train.goae")

LEVELS = ("base", "coarse", "mid", "fine")


# ------------------------------------------------------------------------ model configurations

def encoder_config(size: str) -> GOAEncoderConfig:
  """``release``: GOAE's Swin-V2 encoder (swinv2.yaml); ``tiny``: a 64x64 CPU-sized one;
  ``toy``: the toy world's (64x64, a wider trunk than tiny's)."""
  if size == "release":
    return GOAEncoderConfig()
  if size == "tiny":
    return GOAEncoderConfig(
        swin=SwinV2Config(img_size=64, embed_dim=8, depths=(2, 1, 1, 1), num_heads=(1, 1, 2, 2),
                          window_size=4, pretrained_window_sizes=(3, 3, 3, 2)),
        w_dim=512, ws_split=(1, 3, 3, 7), ca_heads=2, ca_ffn=16)
  if size == "toy":   # the toy world's: tiny's layout, a 16-wide trunk (the heads dominate)
    return GOAEncoderConfig(
        swin=SwinV2Config(img_size=64, embed_dim=16, depths=(2, 2, 2, 2), num_heads=(1, 2, 4, 8),
                          window_size=4, pretrained_window_sizes=(3, 3, 3, 2)),
        w_dim=512, ws_split=(1, 3, 3, 7), ca_heads=4, ca_ffn=64)
  raise ValueError(f"model.encoder must be 'release', 'tiny' or 'toy', got {size!r}")


def afa_config(size: str, feat_dim: int) -> AFAConfig:
  """``release``: GOAE's AFA; ``tiny``: one IR-SE unit per stage, 16/16/32 channels; ``toy``:
  32/32/64."""
  if size == "release":
    return AFAConfig(feat_dim=feat_dim)
  if size == "tiny":
    return AFAConfig(units=irse_units(((16, 1), (16, 1), (32, 1)), in_ch=16), stem=16,
                     feat_dim=feat_dim, num_heads=2, ffn_dim=16)
  if size == "toy":
    return AFAConfig(units=irse_units(((32, 1), (32, 1), (64, 1)), in_ch=32), stem=32,
                     feat_dim=feat_dim, num_heads=4, ffn_dim=64)
  raise ValueError(f"model.afa must be 'release', 'tiny' or 'toy', got {size!r}")


class LatentDiscriminator(nn.Module):
  """e4e's ``LatentCodesDiscriminator``: ``n_mlp - 1`` x (Dense(w_dim), leaky ReLU 0.2), Dense(1).

  ``[M, w_dim] -> [M]`` logits. (Used until ``jaxinv.models.discriminators`` provides it.)
  """
  w_dim: int = 512
  n_mlp: int = 4

  @nn.compact
  def __call__(self, w):
    x = w
    for i in range(self.n_mlp - 1):
      x = nn.leaky_relu(nn.Dense(self.w_dim, name=f"fc{i}")(x), 0.2)
    return nn.Dense(1, name=f"fc{self.n_mlp - 1}")(x)[..., 0]


# -------------------------------------------------------------------------------- pure pieces

def row_levels(ws_split) -> np.ndarray:
  """Level (0 base, 1 coarse, 2 mid, 3 fine) of every ``w+`` row, ``[num_ws]``."""
  return np.repeat(np.arange(4), np.asarray(ws_split))


def progressive_level(step, stage_list):
  """How many delta levels are on at ``step``: ``#{s in stage_list : step >= s}`` (0..3)."""
  return sum(jnp.asarray(step >= int(s), jnp.int32) for s in stage_list) + jnp.int32(0)


def encode_ws(ecfg: GOAEncoderConfig, encoder, x, w_avg, level=3):
  """``w+ = E(x) + w_avg`` with the deltas of levels above ``level`` switched off.

  Rows of an inactive level take ``ws_base`` (e4e's progressive training); at ``level = 3`` this
  is exactly ``inversion.goae.encode``.
  """
  out = GOAEncoder(ecfg).apply(encoder, x)
  return select_levels(out["ws"], out["ws_base"], ecfg.ws_split, level) + w_avg


def select_levels(ws, ws_base, ws_split, level):
  """Rows of ``ws [B, N, C]`` whose level is above ``level`` replaced by ``ws_base``'s."""
  active = jnp.asarray(row_levels(ws_split))[None, :, None] <= level
  return jnp.where(active, ws, ws_base)


def group_start_rows(ws_split) -> np.ndarray:
  """e4e's ``get_deltas_starting_dimensions``: row 0 and the first row of each delta group."""
  return np.cumsum([0] + list(ws_split[:-1]))


def _front(b):
  return jnp.broadcast_to(jnp.asarray(gi.C_FRONT), (b, 25))


def render_two_views(G, planes, ws, c, key, nrr):
  """One render of ``planes`` from ``c`` and from ``C_FRONT`` (concatenated on the batch)."""
  b = ws.shape[0]
  out = G.render_planes(jnp.concatenate([planes, planes]), jnp.concatenate([ws, ws]),
                        jnp.concatenate([c, _front(b)]), key=key,
                        neural_rendering_resolution=nrr)
  view = {k: v[:b] for k, v in out.items()}
  front = {k: v[b:] for k, v in out.items()}
  return view, front


# ------------------------------------------------------------------------------------ helpers

def _get(cfg, name, default=None):
  try:
    return cfg[name]
  except (KeyError, AttributeError):
    return default


def _runlocal(config) -> bool:
  return bool(_get(config, "runlocal", False))


def _load_generator(config):
  g = config.generator
  overrides = {}
  if _get(g, "neural_rendering_resolution"):
    overrides["neural_rendering_resolution"] = int(g.neural_rendering_resolution)
  if g.path:
    from jaxinv.convert import eg3d as eg3d_convert
    if g.path != eg3d_convert.TOY and not os.path.exists(g.path):   # "toy": the built-in G
      raise FileNotFoundError(f"config.generator.path: no such file {g.path!r}")
    return eg3d_convert.load(g.path, **overrides)
  if not _runlocal(config):
    raise FileNotFoundError("config.generator.path is empty: name an EG3D checkpoint (.pkl / "
                            ".npz), or use the runlocal config (tiny random generator)")
  log.warning("runlocal: a tiny random-init EG3D generator stands in for the real one")
  return tiny_eg3d(int(_get(g, "tiny_seed", 0)), **overrides)


def _load_loss_nets(config) -> dict:
  """Frozen LPIPS / ArcFace variables; a term whose file is not given is off (logged)."""
  lc = config.losses
  nets = {}
  for term, field in (("lpips", "lpips_path"), ("id", "arcface_path")):
    path = _get(lc, field, "")
    if float(lc[term]) == 0:
      continue
    if not path:
      if not _runlocal(config):
        raise FileNotFoundError(f"config.losses.{field} is empty but losses.{term} = "
                                f"{lc[term]}: name the converted weights (or set the weight to 0)")
      log.warning("runlocal: no config.losses.%s, the %s term is off", field, term)
      continue
    if not os.path.exists(path):
      raise FileNotFoundError(f"config.losses.{field}: no such file {path!r}")
    if term == "lpips":
      from jaxinv.convert.lpips import load_native_lpips
      net, variables = load_native_lpips(path)
      if net != lc.lpips_net:
        raise ValueError(f"config.losses.lpips_path holds LPIPS-{net}, losses.lpips_net is "
                         f"{lc.lpips_net!r}")
      nets["lpips"] = variables
    else:
      from jaxinv.convert.irse import load_native_arcface
      nets["arcface"] = load_native_arcface(path)[1]   # variables only: frozen is a jit argument
  return nets


def _rec_terms(config, nets, y_hat, y):
  """``(weighted L_rec, metrics)`` on images pooled to ``losses.loss_resolution``."""
  lc = config.losses
  res = int(lc.loss_resolution)
  if y_hat.shape[1] != res:
    y_hat, y = adaptive_avg_pool2d(y_hat, res), adaptive_avg_pool2d(y, res)
  m = {"l2": jnp.mean(jnp.square(y_hat - y))}
  m["lpips"] = lpips_loss(nets["lpips"], y_hat, y, lc.lpips_net) if "lpips" in nets else 0.0
  m["id"] = id_loss(nets["arcface"], y_hat, y, lc.id_crop) if "arcface" in nets else 0.0
  m = {k: jnp.asarray(v, jnp.float32) for k, v in m.items()}
  loss = float(lc.l2) * m["l2"] + float(lc.lpips) * m["lpips"] + float(lc.id) * m["id"]
  return loss, m


BG_MASKS = ("own", "average", "union")


def _bg_mode(config) -> str:
  mode = str(_get(config.bg_depth, "mask", "union"))
  if mode not in BG_MASKS:
    raise ValueError(f"bg_depth.mask must be one of {BG_MASKS}, got {mode!r}")
  return mode


def _bg_terms(config, frozen, front):
  """``(L_BG, background fraction)`` of the front-view render ``front``.

  The mask (``bg_depth.mask``): ``'own'`` = the render's own opacity (an encoder can escape the
  term by filling the background with density); ``'average'`` = ``frozen['bg_mask_avg']``, the
  rays the average canonical sample leaves empty (fixed, cannot be escaped); ``'union'`` (default)
  = background where either says so.
  """
  if "bg_depth_avg" not in frozen:   # losses.bg_depth = 0: no L_BG, no D_avg pass
    return jnp.float32(0.0), jnp.float32(0.0)
  mode = _bg_mode(config)
  mask = L.background_mask(front["weights_sum"], float(config.bg_depth.mask_threshold))
  if mode != "own":
    avg = jnp.broadcast_to(frozen["bg_mask_avg"], mask.shape)
    mask = avg if mode == "average" else jnp.maximum(mask, avg)
  bg = L.background_depth_loss(front["image_depth"], mask, frozen["bg_depth_avg"],
                               squared=bool(config.bg_depth.squared))
  return bg, jnp.mean(mask)


def _init_variables(module, key, *args, fast: bool = False):
  """``module.init`` (jitted), or with ``fast`` (runlocal) numpy draws on ``eval_shape``'s tree.

  ``fast`` skips compiling one initialiser per leaf, which dominates a CPU smoke run's start:
  kernels ``N(0, 1/fan_in)`` (EqualConv ``weight`` ``N(0, 1)``, scaled at run time), norms'
  scales 1, BatchNorm statistics (0, 1), PReLU slopes 0.25, Swin-V2 logit scales log(10),
  everything else 0.
  """
  if not fast:
    return jax.jit(module.init)(key, *args)
  shapes = jax.eval_shape(module.init, key, *args)
  rng = np.random.default_rng(np.asarray(jax.random.key_data(key)).ravel().tolist())

  def fill(path, leaf):
    name = str(getattr(path[-1], "key", path[-1]))
    shape = leaf.shape
    if name in ("var", "scale"):
      v = np.ones(shape)
    elif name == "logit_scale":
      v = np.full(shape, math.log(10.0))
    elif name == "alpha":
      v = np.full(shape, 0.25)
    elif name in ("kernel", "weight") and len(shape) >= 2:
      v = rng.standard_normal(shape) / (1.0 if name == "weight" else math.sqrt(np.prod(shape[:-1])))
    else:
      v = np.zeros(shape)
    return jnp.asarray(v, leaf.dtype)

  return jax.tree_util.tree_map_with_path(fill, shapes)


def _bg_depth_avg(config, G, key, nrr) -> dict:
  """``frozen`` entries of L_BG: ``bg_depth_avg`` (D_avg) and, unless ``bg_depth.mask='own'``,
  ``bg_mask_avg`` ``[R, R, 1]`` (the average canonical sample's background)."""
  if float(config.losses.bg_depth) == 0:   # the term is off (e.g. the toy world: no background)
    return {}
  v = float(_get(config.bg_depth, "value", 0.0) or 0.0)
  thr = float(config.bg_depth.mask_threshold)
  mode = _bg_mode(config)
  if v > 0 and mode == "own":
    return dict(bg_depth_avg=jnp.float32(v))
  d, opacity = gi.average_background_depth(
      G, key, int(config.bg_depth.num_samples), int(config.bg_depth.batch_size),
      mask_threshold=thr, truncation_psi=float(config.bg_depth.truncation_psi),
      neural_rendering_resolution=nrr, return_opacity=True)
  out = {} if mode == "own" else dict(bg_mask_avg=L.background_mask(opacity, thr))
  if v > 0:
    return dict(out, bg_depth_avg=jnp.float32(v))
  d_host = float(jax.device_get(d))
  if not math.isfinite(d_host):
    raise ValueError("bg_depth: no background pixel (weights_sum < bg_depth.mask_threshold = "
                     f"{config.bg_depth.mask_threshold}) in {config.bg_depth.num_samples} "
                     "canonical samples; raise the threshold or set bg_depth.value")
  log.info("D_avg (average canonical background depth over %d samples) = %.6f "
           "(set bg_depth.value to reuse it)", int(config.bg_depth.num_samples), d_host)
  return dict(out, bg_depth_avg=d)


def _synthetic_config(config, G):
  from jaxinv.data import synthetic
  s = config.data.synthetic
  if str(_get(s, "kind", "gaussian")) == "uniform":   # half widths in radians (the toy orbit)
    poses = synthetic.PoseDistribution(kind="uniform", yaw_range=float(s.yaw_range),
                                       pitch_range=float(s.pitch_range),
                                       flip_prob=float(s.flip_prob))
  else:
    poses = synthetic.PoseDistribution(yaw_std=float(s.yaw_std), pitch_std=float(s.pitch_std),
                                       flip_prob=float(s.flip_prob))
  return synthetic.SyntheticConfig(poses=poses, truncation_psi=float(s.truncation_psi),
                                   conditioning=s.conditioning,
                                   neural_rendering_resolution=G.config.neural_rendering_resolution)


def _make_batch_fn(config, G):
  """Real images (host batch) when ``data.path`` is set, else images generated on device."""
  b = int(config.batch_size)
  res = G.config.img_resolution
  if config.data.path:
    def make_batch(frozen, key, step, host_batch):
      img = jnp.asarray(host_batch["image"], jnp.float32)
      if img.shape[1] != res:
        img = jax.image.resize(img, (img.shape[0], res, res, 3), "linear", antialias=True)
      return dict(image=img, c=jnp.asarray(host_batch["c"], jnp.float32))
    return make_batch, True
  generated = bool(_get(config.data, "generated", False))   # the toy world: G's images
  if not (_runlocal(config) or generated):
    raise FileNotFoundError("config.data.path is empty: name an EG3D-format dataset, or use "
                            "the runlocal config (images generated by the frozen generator)")
  if not generated:
    log.warning("runlocal: no dataset; the 'real' images are generated on device by the frozen "
                "generator (random z, FFHQ-like poses)")
  from jaxinv.data import synthetic
  scfg = _synthetic_config(config, G)
  bank = int(_get(config.data.synthetic, "bank", 0) or 0)
  if bank:
    # A fixed set of generated images (``synthetic_bank``, made once by ``init``): the step
    # only indexes it, so it compiles and runs without a generator forward.
    def make_batch(frozen, key, step, host_batch):
      idx = jax.random.randint(key, (b,), 0, bank)
      return dict(image=frozen["bank"]["image"][idx], c=frozen["bank"]["c"][idx])
    return make_batch, False

  def make_batch(frozen, key, step, host_batch):
    out = synthetic.generate(frozen["G"], key, b, scfg)
    return dict(image=jax.lax.stop_gradient(jnp.clip(out["image"], -1, 1)), c=out["c"])
  return make_batch, False


def synthetic_bank(config, G, key):
  """``data.synthetic.bank`` images generated on device by the frozen ``G`` (or ``{}``)."""
  bank = int(_get(config.data.synthetic, "bank", 0) or 0)
  if config.data.path or not bank:
    return {}
  from jaxinv.data import synthetic
  scfg = _synthetic_config(config, G)
  out = jax.jit(lambda G, k: synthetic.generate(G, k, bank, scfg))(G, key)
  return dict(bank=dict(image=jnp.clip(out["image"], -1, 1), c=out["c"]))


def _latent_d_apply(dcfg):
  module = LatentDiscriminator(n_mlp=int(dcfg.n_mlp))
  return lambda variables: (lambda w: module.apply(variables, w))


def _latent_d_phases(config, ecfg):
  """The latent-D phases (main loss, lazy R1) shared by stage 1 and stage 2 (code variant).

  They run after the encoder / AFA phase of the same step and take its ``w+`` from
  ``model_state['fake_ws']`` (detached), so the encoder runs once per step.
  """
  dcfg = config.latent_d
  d_of = _latent_d_apply(dcfg)
  rows = (slice(None) if dcfg.rows == "all" else group_start_rows(ecfg.ws_split))
  r1_every = int(dcfg.r1_every)
  gamma = float(dcfg.r1_gamma)
  b = int(config.batch_size)

  def real_codes(G, key):
    z = jax.random.normal(key, (b, G.z_dim))
    return gi.canonical_latents(G, z, float(dcfg.real_truncation_psi))[:, 0]

  def d_loss(params, model_state, frozen, batch, key, step):
    G = frozen["G"]
    ws = jax.lax.stop_gradient(model_state["fake_ws"])[:, rows]
    d = d_of(params["latent_d"])
    real = real_codes(G, key)
    loss = L.latent_d_loss(d, real, ws)
    return loss, dict(metrics=dict(
        d_loss=loss, d_real=jnp.mean(jax.nn.softplus(-d(real))),
        d_fake=jnp.mean(jax.nn.softplus(d(L.latent_entries(ws))))))

  def r1_loss(params, model_state, frozen, batch, key, step):
    d = d_of(params["latent_d"])
    r1 = L.latent_d_r1(d, real_codes(frozen["G"], key), gamma=2.0)  # = E||grad||^2
    return 0.5 * gamma * r1 * r1_every, dict(metrics=dict(d_r1=r1))

  return (Phase("latent_d", d_loss),
          Phase("latent_d", r1_loss, every=r1_every, name="latent_d_r1")), d_of, rows


# -------------------------------------------------------------------------------------- stage 1

def _build_stage1(config) -> Task:
  G0 = _load_generator(config)
  ecfg = encoder_config(config.model.encoder)
  if ecfg.num_ws != G0.num_ws or ecfg.w_dim != G0.config.w_dim:
    raise ValueError(f"the encoder predicts [{ecfg.num_ws}, {ecfg.w_dim}] codes, the generator "
                     f"takes [{G0.num_ws}, {G0.config.w_dim}]")
  nrr = G0.config.neural_rendering_resolution
  stage_list = tuple(int(s) for s in config.progressive.stage_list)
  if len(stage_list) != 3:
    raise ValueError(f"progressive.stage_list needs 3 steps (coarse, mid, fine), got {stage_list}")
  lc = config.losses
  make_batch, needs_real = _make_batch_fn(config, G0)
  s = ecfg.swin.img_size
  fast = bool(config.model.fast_init)

  def encoder_of(params, frozen, batch, step):
    G = frozen["G"]
    x = adaptive_avg_pool2d(batch["image"], s)
    return encode_ws(ecfg, params["encoder"], x, G.params["params"]["backbone"]["mapping"]["w_avg"],
                     progressive_level(step, stage_list))

  d_phases, d_of, rows = _latent_d_phases(config, ecfg)
  b = int(config.batch_size)

  def init(key):
    k_e, k_d, k_bg, k_data = jax.random.split(key, 4)
    enc = _init_variables(GOAEncoder(ecfg), k_e, jnp.zeros((1, s, s, 3)), fast=fast)
    dvars = _init_variables(LatentDiscriminator(n_mlp=int(config.latent_d.n_mlp)), k_d,
                            jnp.zeros((1, ecfg.w_dim)), fast=fast)
    frozen = dict(G=G0, **_bg_depth_avg(config, G0, k_bg, nrr),
                  **_load_loss_nets(config), **synthetic_bank(config, G0, k_data))
    return TaskInit(params=dict(latent_d=dvars, encoder=enc),
                    model_state=dict(fake_ws=jnp.zeros((b, ecfg.num_ws, ecfg.w_dim))),
                    frozen=frozen)

  def reconstruct(params, frozen, batch, step, key):
    G = frozen["G"]
    ws = encoder_of(params, frozen, batch, step)
    view, front = render_two_views(G, G.planes(ws), ws, batch["c"], key, nrr)
    return ws, view, front

  def encoder_loss(params, model_state, frozen, batch, key, step):
    ws, view, front = reconstruct(params, frozen, batch, step, key)
    rec, m = _rec_terms(config, frozen, view["image"], batch["image"])
    m["bg_depth"], m["bg_fraction"] = _bg_terms(config, frozen, front)
    m["adv_e"] = L.encoder_adv_loss(d_of(params["latent_d"]), ws[:, rows])
    m["w_delta"] = L.w_plus_delta_loss(ws)
    m["progressive_level"] = progressive_level(step, stage_list).astype(jnp.float32)
    loss = (rec + float(lc.adv) * m["adv_e"] + float(lc.bg_depth) * m["bg_depth"]
            + float(lc.w_delta) * m["w_delta"])
    return loss, dict(metrics=m, model_state=dict(fake_ws=jax.lax.stop_gradient(ws)))

  def preview(params, model_state, frozen, batch):
    _, view, front = reconstruct(params, frozen, batch, jnp.int32(1 << 30), None)
    return dict(input=batch["image"], reconstruction=jnp.clip(view["image"], -1, 1),
                front=jnp.clip(front["image"], -1, 1))

  oc = config.optim
  return Task(name="goae", init=init, phases=(Phase("encoder", encoder_loss),) + d_phases,
              optimizers=dict(latent_d=make_optimizer(oc.latent_d),
                              encoder=make_optimizer(oc.encoder)),
              make_batch=make_batch, needs_real_data=needs_real, preview=preview,
              in_domain_metric="l2")


# -------------------------------------------------------------------------------------- stage 2

def _stage1_encoder(config, ecfg, key, s):
  """The frozen stage-1 encoder: a stage-1 workdir, a GOAE encoder file, or (runlocal) random."""
  ec = config.encoder
  if ec.checkpoint:
    from jaxinv.train.checkpoint import load_checkpoint
    ck = load_checkpoint(ec.checkpoint, step=(int(ec.step) if ec.step else None))
    if "encoder" not in ck["params"]:
      raise ValueError(f"config.encoder.checkpoint {ec.checkpoint!r} holds no 'encoder' params "
                       f"(groups: {sorted(ck['params'])}); is it a GOAE stage-1 run?")
    log.info("stage 2: the frozen encoder is stage-1 step %d of %s", ck["step"], ec.checkpoint)
    return ecfg, jax.tree_util.tree_map(jnp.asarray, ck["params"]["encoder"]), ck
  if ec.path:
    from jaxinv.convert import goae as convert_goae
    if not os.path.exists(ec.path):
      raise FileNotFoundError(f"config.encoder.path: no such file {ec.path!r}")
    cfg, variables = convert_goae.load_any(ec.path, convert_goae.ENCODER_KIND)
    return cfg, variables, None
  if not _runlocal(config):
    raise FileNotFoundError("stage 2 needs the stage-1 encoder: set config.encoder.checkpoint "
                            "(a stage-1 workdir) or config.encoder.path (a GOAE encoder file)")
  log.warning("runlocal: no config.encoder.checkpoint; stage 2 runs on a random frozen encoder")
  return ecfg, _init_variables(GOAEncoder(ecfg), key, jnp.zeros((1, s, s, 3)),
                               fast=bool(config.model.fast_init)), None


def _build_stage2(config) -> Task:
  G0 = _load_generator(config)
  nrr = G0.config.neural_rendering_resolution
  ecfg0 = encoder_config(config.model.encoder)
  acfg = afa_config(config.model.afa, gi._feature_channels(G0))
  lc = config.losses
  make_batch, needs_real = _make_batch_fn(config, G0)
  mode = config.stage2.render
  if mode not in ("refined", "mixed"):
    raise ValueError(f"stage2.render must be 'refined' or 'mixed', got {mode!r}")
  lam_d = float(lc.stage2_latent_d)
  img = G0.config.img_resolution
  fast = bool(config.model.fast_init)
  box_warp = G0.config.render_options.box_warp
  loaded = {}

  def frozen_ws(frozen, batch):
    G = frozen["G"]
    ecfg = loaded["ecfg"]
    x = adaptive_avg_pool2d(batch["image"], ecfg.swin.img_size)
    return jax.lax.stop_gradient(encode_ws(
        ecfg, frozen["encoder"], x, G.params["params"]["backbone"]["mapping"]["w_avg"]))

  def init(key):
    k_e, k_a, k_d, k_bg, k_data = jax.random.split(key, 5)
    ecfg, enc, ck = _stage1_encoder(config, ecfg0, k_e, ecfg0.swin.img_size)
    loaded["ecfg"] = ecfg
    if ecfg.num_ws != G0.num_ws or ecfg.w_dim != G0.config.w_dim:
      raise ValueError(f"the encoder predicts [{ecfg.num_ws}, {ecfg.w_dim}] codes, the "
                       f"generator takes [{G0.num_ws}, {G0.config.w_dim}]")
    z = jnp.zeros((1, img, img, 3))
    afa = _init_variables(AFA(acfg), k_a, z, z, jnp.zeros((1, 32, 32, acfg.feat_dim)), fast=fast)
    params = dict(afa=afa["params"])
    frozen = dict(G=G0, encoder=enc, afa_batch_stats=afa["batch_stats"],
                  **_bg_depth_avg(config, G0, k_bg, nrr), **_load_loss_nets(config),
                  **synthetic_bank(config, G0, k_data))
    if lam_d > 0:
      if ck is not None and "latent_d" in ck["params"]:
        params["latent_d"] = jax.tree_util.tree_map(jnp.asarray, ck["params"]["latent_d"])
      else:
        params["latent_d"] = _init_variables(LatentDiscriminator(n_mlp=int(config.latent_d.n_mlp)),
                                             k_d, jnp.zeros((1, ecfg.w_dim)), fast=fast)
    ms = dict(fake_ws=jnp.zeros((int(config.batch_size), ecfg.num_ws, ecfg.w_dim))) if lam_d > 0 \
        else {}
    return TaskInit(params=params, model_state=ms, frozen=frozen)

  def refine(params, frozen, batch, key):
    G = frozen["G"]
    k_w, k_f, k_mask, k_out = jax.random.split(key, 4) if key is not None else (None,) * 4
    ws = frozen_ws(frozen, batch)
    fm, partial = gi.backbone_head(G, ws)
    planes_w = gi.backbone_tail(G, ws, fm, partial)
    image_w = jax.lax.stop_gradient(G.render_planes(
        planes_w, ws, batch["c"], key=k_w, neural_rendering_resolution=nrr)["image"])
    afa = AFA(acfg).apply({"params": params["afa"], "batch_stats": frozen["afa_batch_stats"]},
                          batch["image"], image_w, fm)
    planes = gi.backbone_tail(G, ws, afa["feature_map_adain"], partial)
    if mode == "mixed":
      o = gi.render_planes(G, planes, ws, batch["c"], key=k_f, neural_rendering_resolution=nrr)
      mask = gi.visibility_mask(o["ray_origins"], o["ray_directions"], o["image_depth"],
                                planes.shape[2], box_warp, key=k_mask)
      planes = gi.mix_triplanes(planes, planes_w, mask)
    view, front = render_two_views(G, planes, ws, batch["c"], k_out, nrr)
    return ws, fm, afa, image_w, view, front

  def afa_loss(params, model_state, frozen, batch, key, step):
    ws, fm, afa, _, view, front = refine(params, frozen, batch, key)
    rec, m = _rec_terms(config, frozen, view["image"], batch["image"])
    m["bg_depth"], m["bg_fraction"] = _bg_terms(config, frozen, front)
    m["delta_f"] = L.feature_delta_loss(afa["feature_map_adain"], fm)
    loss = rec + float(lc.bg_depth) * m["bg_depth"] + float(lc.delta_f) * m["delta_f"]
    if lam_d > 0:
      m["adv_e"] = L.encoder_adv_loss(d_of(params["latent_d"]), ws[:, rows])
      loss = loss + lam_d * m["adv_e"]
      return loss, dict(metrics=m, model_state=dict(fake_ws=jax.lax.stop_gradient(ws)))
    return loss, dict(metrics=m)

  phases = (Phase("afa", afa_loss),)
  optimizers = dict(afa=make_optimizer(config.optim.afa))
  d_of, rows = None, slice(None)
  if lam_d > 0:
    d_phases, d_of, rows = _latent_d_phases(config, ecfg0)
    phases = phases + d_phases
    optimizers["latent_d"] = make_optimizer(config.optim.latent_d)

  def preview(params, model_state, frozen, batch):
    _, _, _, image_w, view, _ = refine(params, frozen, batch, None)
    return dict(input=batch["image"], reconstruction_w=jnp.clip(image_w, -1, 1),
                reconstruction=jnp.clip(view["image"], -1, 1))

  return Task(name="goae", init=init, phases=phases, optimizers=optimizers,
              make_batch=make_batch, needs_real_data=needs_real, preview=preview,
              in_domain_metric="l2")


def build(config) -> Task:
  stage = int(config.stage)
  if stage == 1:
    return _build_stage1(config)
  if stage == 2:
    return _build_stage2(config)
  raise ValueError(f"config.stage must be 1 or 2, got {stage!r}")


# ------------------------------------------------------------------------------------- export

def export(workdir: str, out_path: str, config=None, step: int | None = None, half: bool = False):
  """A GOAE run -> the native file ``jaxinv.inversion.goae.load_goae`` reads: stage 1 writes the
  encoder (kind ``goae_encoder``), stage 2 the AFA (``goae_afa``, its fixed BatchNorm statistics
  included; pair it with the stage-1 encoder it was trained on, ``config.encoder``). ``half``:
  float32 arrays stored as float16. Returns ``(config dataclass, variables)``."""
  from jaxinv.convert import common
  from jaxinv.convert import goae as convert_goae
  from jaxinv.train.checkpoint import load_checkpoint
  from jaxinv.train.tasks.psp_family import read_config
  config = read_config(workdir) if config is None else config
  if str(_get(config, "task", "")) != "goae":
    raise ValueError(f"{workdir}: a {_get(config, 'task', '')!r} run, not a goae one")
  ck = load_checkpoint(workdir, step)
  f32 = lambda t: jax.tree_util.tree_map(lambda a: np.asarray(a, np.float32), t)  # noqa: E731
  if int(config.stage) == 1:
    cfg, kind = encoder_config(config.model.encoder), convert_goae.ENCODER_KIND
    variables = f32(ck["params"]["encoder"])
  else:
    G = _load_generator(config)
    cfg, kind = afa_config(config.model.afa, gi._feature_channels(G)), convert_goae.AFA_KIND
    img = jnp.zeros((1, G.config.img_resolution, G.config.img_resolution, 3))
    fm = jnp.zeros((1, gi.SPLIT_RESOLUTION, gi.SPLIT_RESOLUTION, cfg.feat_dim))
    # The AFA's BatchNorm statistics are fixed (they live in ``frozen``, never in a checkpoint):
    # those of its initialisation, rebuilt as ``init`` makes them.
    shapes = jax.eval_shape(AFA(cfg).init, jax.random.PRNGKey(0), img, img, fm)
    stats = _init_variables(AFA(cfg), jax.random.PRNGKey(0), img, img, fm,
                            fast=bool(config.model.fast_init))["batch_stats"]
    variables = f32({"params": ck["params"]["afa"], "batch_stats": stats})
    common.check_tree_matches(shapes, variables, f"{workdir}: AFA variables")
  common.save_native(out_path, kind, convert_goae._config_to_json(cfg), variables, half=half)
  return cfg, variables
