"""TriPlaneNet training (Bhattarai et al., WACV 2024): the pSp branch and the tri-plane offset branch.

Config: ``configs/triplanenet.py`` (its docstring lists the paper/code differences and switches).

Two param groups, two phases per step, branch 1 first. ``schedule.branch_order='paper'``
(default): both branch losses see the same phi, as in eq. 8 and the v1 coach (one forward, two
backward passes): branch 1 leaves its detached ``w+`` and renders in
``model_state['first_pass']`` and branch 2 starts from them (one phi forward a step; after
``stop_psp`` phi runs on its running BatchNorm statistics, v1's ``eval()``). ``'v2'``: branch 2
re-runs phi after branch 1's update, as the v2 coach's second ``net.forward``:

* ``psp`` (branch 1, phi): ``w+ = phi(x) + w_avg``; ``y_hat = R(G(w+), c)``, ``y_hat_m = R(G(w+), c_m)``;
  eq. 11 with the L2 pixel term (``jaxinv.losses.triplanenet.branch_loss``). Active while
  ``step < schedule.stop_psp``; after that the phase is skipped (``lax.cond``) and its optimizer
  makes zero updates (the first branch is frozen).
* ``triplane`` (branch 2, psi): ``w+`` and the first-pass renders are ``stop_gradient``-ed (the
  code's ``requires_grad_(False)`` on phi: no gradient from this loss reaches phi),
  ``dT = psi([y_hat, x - y_hat, x_m - y_hat_m])``, ``y = R(G(w+) + dT, c)``, ``y_m`` at ``c_m``;
  eq. 11 with smooth-L1. Updated only from ``step >= schedule.add_triplanenet`` (zero updates
  before; its forward still runs so ``tri_pixel``, the final reconstruction error, is always
  logged).
* BatchNorm (the release IR-SE trunks of both encoders): train mode, as both coaches train under
  ``net.train()``. Every training forward normalises with its batch's statistics and updates the
  running ones in ``model_state``: branch 1's forward while it is active (phi) and branch 2's
  every step (psi; with ``branch_order='v2'`` also phi's, as the v2 coach's ``net.forward``,
  even after ``stop_psp``). The discriminator phase's forward keeps no statistics; ``preview``
  and inference use the running ones. ``model.batchnorm='frozen'`` uses the running statistics throughout
  (runlocal: at batch 1 batch statistics normalise every image by its own).
* optional image discriminator (v2 code only): ``discriminator`` group, a StyleGAN2-resnet D
  (``jaxinv.models.stylegan2_discriminator``) on the offset branch's render, non-saturating
  loss, lazy R1; the adversarial term joins branch 2 from ``discriminator.start``.

Metrics (unweighted): ``psp_{pixel,lpips,id,symmetry,lpips_mirror,id_mirror}``,
``tri_{...}`` (same names), ``psp_active``, ``tri_active``; with D: ``tri_adv``, ``d_loss``, ``d_r1``.
"""
from __future__ import annotations

import json
import logging
import os
import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax.core import unfreeze

from jaxinv.data import synthetic
from jaxinv.inversion.triplanenet import synthesize_planes
from jaxinv.losses import adversarial
from jaxinv.losses.triplanenet import BranchWeights, branch_loss
from jaxinv.models.eg3d import tiny_eg3d
from jaxinv.ops.pooling import adaptive_avg_pool2d
from jaxinv.train.optimizers import make_optimizer
from jaxinv.train.tasks.base import Phase, Task, TaskInit

log = logging.getLogger(__name__)

MIRROR = "x_m"


# ------------------------------------------------------------------ helpers shared with nerf3de.py

def get(cfg, name, default=None):
  try:
    return cfg[name]
  except (KeyError, AttributeError):
    return default


def runlocal(config) -> bool:
  return bool(get(config, "runlocal", False))


def load_generator(config):
  """The frozen EG3D generator: ``config.generator.path`` (a file, or ``"toy"``: the built-in
  toy-world G) or (runlocal) a tiny random one."""
  g = config.generator
  overrides = {}
  if get(g, "neural_rendering_resolution"):
    overrides["neural_rendering_resolution"] = int(g.neural_rendering_resolution)
  if get(g, "path"):
    from jaxinv.convert import eg3d as eg3d_convert
    if g.path != eg3d_convert.TOY and not os.path.exists(g.path):   # "toy": the built-in G
      raise FileNotFoundError(f"config.generator.path: no such file {g.path!r}")
    return eg3d_convert.load(g.path, **overrides)
  if not runlocal(config):
    raise FileNotFoundError("config.generator.path is empty: name an EG3D checkpoint (.pkl / "
                            ".npz), or use the runlocal config (tiny random generator)")
  log.warning("runlocal: a tiny random-init EG3D generator stands in for the real one")
  G = tiny_eg3d(int(get(g, "tiny_seed", 0)), **overrides)
  # Host copies, as a loaded checkpoint gives: the jitted init may hand out one buffer for
  # several equal leaves, which the donated train step must never see twice.
  return type(G)(G.config, jax.tree_util.tree_map(np.asarray, G.params))


def load_loss_nets(config, terms=(("lpips", "lpips_path"), ("id", "arcface_path"))) -> dict:
  """Frozen LPIPS / ArcFace variables. A term without its weight file is switched off with a
  logged notice under ``runlocal`` and is an error otherwise (unless its weights are all 0)."""
  lc = config.losses
  nets = {}
  for term, field in terms:
    path = get(lc, field, "")
    weights = [float(v) for k, v in lc.items() if k == term or k.startswith(term + "_")
               and not k.endswith(("_path", "_net", "_crop"))]
    if not any(weights):
      continue
    if not path:
      if not runlocal(config):
        raise FileNotFoundError(f"config.losses.{field} is empty but the {term} terms have "
                                "non-zero weights: name the converted weights (or set them to 0)")
      log.warning("runlocal: no config.losses.%s, the %s terms are off", field, term)
      continue
    if not os.path.exists(path):
      raise FileNotFoundError(f"config.losses.{field}: no such file {path!r}")
    if term == "lpips":
      from jaxinv.convert.lpips import load_native_lpips
      net, variables = load_native_lpips(path)
      if net != get(lc, "lpips_net", "alex"):
        raise ValueError(f"config.losses.lpips_path holds LPIPS-{net}, losses.lpips_net is "
                         f"{lc.lpips_net!r}")
      nets["lpips"] = variables
    else:
      from jaxinv.convert.irse import load_native_arcface
      nets["arcface"] = load_native_arcface(path)[1]
  return nets


def perceptual_fns(config, frozen):
  """``(lpips_fn, id_fn)`` of ``(pred, target) -> scalar`` reading the nets from ``frozen``."""
  from jaxinv.losses import arcface, lpips
  lc = config.losses
  lpips_fn = id_fn = None
  if "lpips" in frozen["nets"]:
    net = get(lc, "lpips_net", "alex")
    lpips_fn = lambda a, b: lpips.lpips_loss(frozen["nets"]["lpips"], a, b, net)
  if "arcface" in frozen["nets"]:
    crop = get(lc, "id_crop", "psp")
    id_fn = lambda a, b: arcface.id_loss(frozen["nets"]["arcface"], a, b, crop)
  return lpips_fn, id_fn


def pool(image, size: int):
  """Average-pool renders to the loss / encoder resolution (TriPlaneNet: 256)."""
  if image.shape[1:3] == (size, size):
    return image
  return adaptive_avg_pool2d(image, (size, size))


def pose_labels(config):
  """FFHQ camera labels ``[N, 25]`` from ``config.data.pose_labels`` (a ``dataset.json``), or None."""
  path = get(config.data, "pose_labels", "")
  if not path:
    return None
  if not os.path.exists(path):
    raise FileNotFoundError(f"config.data.pose_labels: no such file {path!r}")
  with open(path) as f:
    labels = json.load(f)["labels"]
  return np.asarray([l for _, l in labels], np.float32)


def pose_distribution(config, labels):
  sc = config.data.synthetic
  if labels is not None:
    return synthetic.PoseDistribution.labels(flip_prob=float(sc.flip_prob))
  kind = str(get(sc, "kind", "gaussian"))
  if kind == "uniform":   # the toy world's orbit (its G was trained on it): half widths in radians
    return synthetic.PoseDistribution(kind="uniform", yaw_range=float(sc.yaw_range),
                                      pitch_range=float(sc.pitch_range),
                                      flip_prob=float(sc.flip_prob))
  if not runlocal(config):
    log.warning("config.data.pose_labels is empty: cameras from EG3D's Gaussian FFHQ-like "
                "sampler instead of FFHQ's labels")
  return synthetic.PoseDistribution(yaw_std=float(sc.yaw_std), pitch_std=float(sc.pitch_std),
                                    flip_prob=float(sc.flip_prob))


def w_avg_of(G, num: int = 1):
  """``G``'s average latent ``[num_ws, w_dim]`` (the mapping with ``psi = 0`` returns it)."""
  z = jnp.zeros((num, G.z_dim), jnp.float32)
  return G.mapping(z, synthetic.canonical_cameras(num), truncation_psi=0.0)[0]


def gated(inner: optax.GradientTransformation, start: int = 0, stop: int | None = None):
  """``inner`` active only for update calls ``start <= n < stop`` (``n`` counts calls = steps).

  Outside the window the updates are zero and ``inner``'s state is left as it was, so a frozen
  group's parameters stay bit-identical (momentum does not keep moving them).
  """
  stop = np.iinfo(np.int32).max if stop is None else int(stop)

  def init(params):
    return {"count": jnp.zeros((), jnp.int32), "inner": inner.init(params)}

  def update(grads, state, params=None):
    n = state["count"]
    active = (n >= start) & (n < stop)
    upd, new_inner = inner.update(grads, state["inner"], params)
    upd = jax.tree_util.tree_map(lambda u: jnp.where(active, u, jnp.zeros_like(u)), upd)
    new_inner = jax.tree_util.tree_map(lambda a, b: jnp.where(active, a, b), new_inner,
                                       state["inner"])
    return upd, {"count": n + 1, "inner": new_inner}

  return optax.GradientTransformation(init, update)


def skip_unless(active, fn, *args):
  """``lax.cond(active, fn, zeros-like-fn)``: run ``fn(*args) -> (loss, metrics)`` only when active."""
  shapes = jax.eval_shape(fn, *args)
  zeros = lambda *_: jax.tree_util.tree_map(lambda s: jnp.zeros(s.shape, s.dtype), shapes)
  return jax.lax.cond(active, fn, zeros, *args)


def split_variables(variables):
  """linen variables -> (trainable ``params``, constant rest e.g. inference BatchNorm stats)."""
  variables = dict(variables)
  return variables.pop("params"), variables


# ------------------------------------------------------------------------------------ models

def _models(config, G):
  from jaxinv.models.encoders.nerf3de import NeRF3DEConfig, PooledEncoder
  from jaxinv.models.encoders.psp import GradualStyleEncoder
  from jaxinv.models.encoders.triplanenet import TriPlaneEncoder
  from jaxinv.models.encoders.triplanenet_small import SmallOffsetEncoder
  m = config.model
  in_ch = {"paper": 9, "v1": 6}[m.offset_input]
  size = int(config.losses.loss_resolution)
  planes_res = int(G.planes_resolution) if hasattr(G, "planes_resolution") else 256
  if m.size == "toy":   # the toy world's encoders: psp's tiny trunk, 64 px inputs, losses at size
    from jaxinv.train.tasks.psp_family import TINY_TAPS, TINY_UNITS
    enc_size = int(get(m, "input_size", 0) or size)
    psp = GradualStyleEncoder(n_styles=G.num_ws, input_size=enc_size, units=TINY_UNITS,
                              taps=TINY_TAPS)
    tri = SmallOffsetEncoder(in_ch, int(m.small_widths[0]), planes_res)
    return psp, tri, in_ch, size, enc_size
  if m.size == "small":
    ncfg = NeRF3DEConfig(num_ws=G.num_ws, input_size=size, backbone="small",
                         small_widths=tuple(m.small_widths), small_stem=int(m.small_widths[0]))
    psp = PooledEncoder(ncfg._small_units(), ncfg.small_stem, G.num_ws, 512, 3)
    tri = SmallOffsetEncoder(in_ch, int(m.small_widths[0]), planes_res)
  elif m.size == "release":
    if size != 256:
      raise ValueError(f"model.size='release' needs losses.loss_resolution=256, got {size}")
    psp = GradualStyleEncoder(n_styles=G.num_ws, in_ch=3)
    tri = TriPlaneEncoder(in_ch=in_ch)
  else:
    raise ValueError(f"model.size must be 'release', 'small' or 'toy', got {m.size!r}")
  return psp, tri, in_ch, size, size


def _psp_init(path: str, psp_model, enc_size: int, G):
  """``model.psp_init``: branch 1's ``(params, model_state)`` from a native pSp encoder file
  (``"toy"``: the built-in toy pSp), or None. The file's network must be branch 1's, and its
  ``latent_avg`` the generator's ``w_avg`` (both add it to the encoder's output)."""
  if not path:
    return None
  from jaxinv.convert.common import check_tree_matches
  from jaxinv.convert.psp import PSP, _canonical_type, load_native_encoder, toy_encoder_path
  if path == "toy":
    path = toy_encoder_path("psp")
    if path is None:
      raise FileNotFoundError("model.psp_init='toy': the built-in toy pSp encoder "
                              "(jaxinv/assets/toy_psp.npz) is not shipped in this install")
  if not os.path.isfile(path):
    raise FileNotFoundError(f"model.psp_init: no such file: {path}")
  ck = load_native_encoder(path)
  if _canonical_type(ck.encoder_type) != PSP:
    raise ValueError(f"model.psp_init: {path} holds a {ck.encoder_type} encoder, not pSp's "
                     f"{PSP}")
  template = jax.eval_shape(psp_model.init, jax.random.PRNGKey(0),
                            jnp.zeros((1, enc_size, enc_size, 3)))
  check_tree_matches(template, ck.variables, f"model.psp_init {path}: branch 1's variables")
  w_avg = np.broadcast_to(np.asarray(w_avg_of(G), np.float32), (G.num_ws, G.config.w_dim))
  if ck.latent_avg is None or not np.allclose(ck.latent_avg, w_avg, atol=2e-2):
    raise ValueError(f"model.psp_init: {path}'s latent_avg is not this generator's w_avg "
                     "(an encoder of another generator)")
  variables = jax.tree_util.tree_map(jnp.asarray, dict(ck.variables))
  params = variables.pop("params")
  return params, variables


# --------------------------------------------------------------------------------- the task

def _weights(lc, prefix: str, pixel_key: str) -> BranchWeights:
  return BranchWeights(pixel=float(lc[pixel_key]), lpips=float(lc[f"lpips_{prefix}"]),
                       id=float(lc[f"id_{prefix}"]), mirror=float(lc.mirror),
                       symmetry=float(lc[f"symmetry_{prefix}"]),
                       lpips_mirror=float(lc[f"lpips_{prefix}_mirror"]),
                       id_mirror=float(lc[f"id_{prefix}_mirror"]))


def build(config) -> Task:
  G0 = load_generator(config)
  labels = pose_labels(config)
  nets = load_loss_nets(config)
  # size: the loss resolution; enc_size: both encoders' input (smaller for the toy encoders):
  # inputs and first-pass renders are average-pooled to it, as at inference.
  psp_model, tri_model, in_ch, size, enc_size = _models(config, G0)
  lc, sched = config.losses, config.schedule
  add_tri, stop_psp = int(sched.add_triplanenet), int(sched.stop_psp)
  if stop_psp < add_tri:
    raise ValueError(f"schedule.stop_psp ({stop_psp}) must be >= schedule.add_triplanenet "
                     f"({add_tri}), as the official coach asserts")
  w_psp, w_tri = _weights(lc, "psp", "l2_psp"), _weights(lc, "triplane", "smooth_l1_triplane")
  sym = dict(symmetry_eps=float(lc.symmetry_eps), normalize_symmetry=bool(lc.normalize_mirror))
  batch_size = int(config.batch_size)
  syn_cfg = synthetic.SyntheticConfig(
      poses=pose_distribution(config, labels), truncation_psi=float(config.data.synthetic.truncation_psi),
      conditioning=str(config.data.synthetic.conditioning),
      random_render=bool(config.data.synthetic.random_render))
  real = bool(get(config.data, "real", False))
  bn_mode = str(get(config.model, "batchnorm", "train"))
  if bn_mode not in ("train", "frozen"):
    raise ValueError(f"model.batchnorm must be 'train' or 'frozen', got {bn_mode!r}")
  bn_train = bn_mode == "train"
  order = str(get(sched, "branch_order", "paper"))
  if order not in ("paper", "v2"):
    raise ValueError(f"schedule.branch_order must be 'paper' or 'v2', got {order!r}")
  keep_psp_stats = order == "v2"
  use_stash = order == "paper"
  dcfg = config.discriminator
  use_d = bool(dcfg.enabled)
  psp_init = _psp_init(str(get(config.model, "psp_init", "") or ""), psp_model, enc_size, G0)

  def init(key):
    k1, k2, k3 = jax.random.split(key, 3)
    psp_p, psp_c = split_variables(psp_model.init(k1, jnp.zeros((1, enc_size, enc_size, 3))))
    tri_p, tri_c = split_variables(tri_model.init(k2, jnp.zeros((1, enc_size, enc_size, in_ch))))
    if psp_init is not None:   # branch 1 starts from a trained pSp encoder (model.psp_init)
      psp_p, psp_c = psp_init
    params = {"psp": psp_p, "triplane": tri_p}
    # BatchNorm statistics (the release IR-SE trunks) are model_state: both coaches train with
    # ``net.train()``, i.e. batch statistics, and update the running ones on every forward.
    model_state = {"psp": unfreeze(psp_c), "triplane": unfreeze(tri_c)}
    if use_stash:   # written by branch 1 each step before branch 2 reads it
      img = jnp.zeros((batch_size, enc_size, enc_size, 3), jnp.float32)
      model_state["first_pass"] = {"ws": jnp.zeros((batch_size, G0.num_ws, G0.config.w_dim),
                                                         jnp.float32),
                                   "y0": img, **({"y0_m": img} if in_ch == 9 else {})}
    frozen = {"G": G0, "nets": nets, "w_avg": w_avg_of(G0)}
    if labels is not None:
      frozen["labels"] = jnp.asarray(labels)
    if use_d:
      from jaxinv.models import stylegan2_discriminator as sd
      d_model = sd.from_config(dcfg, size)
      params["discriminator"] = d_model.init(k3, jnp.zeros((1, size, size, 3)))["params"]
    return TaskInit(params, model_state, frozen)

  def make_batch(frozen, key, step, host_batch):
    if real:
      x, c = pool(host_batch["image"], size), host_batch["c"]
    else:
      out = synthetic.generate(frozen["G"], key, batch_size, syn_cfg, labels=frozen.get("labels"))
      x, c = pool(out["image"], size), out["c"]
    x = jax.lax.stop_gradient(x)
    return {"x": x, "c": c, MIRROR: synthetic.flip_images(x), "c_m": synthetic.flip_yaw(c)}

  def encode(params, model_state, frozen, x, train: bool):
    """``(w+, new psp model_state)``; ``train``: batch statistics (torch ``train()``)."""
    v = {"params": params["psp"], **model_state["psp"]}
    x = pool(x, enc_size)
    if not (train and bn_train):
      return psp_model.apply(v, x) + frozen["w_avg"], model_state["psp"]
    codes, upd = psp_model.apply(v, x, mutable=list(model_state["psp"]))
    return codes + frozen["w_avg"], {**model_state["psp"], **unfreeze(upd)}

  def render(G, ws, c, key):
    return pool(G.synthesis(ws, c, key=key)["image"], size)

  def psp_loss(params, model_state, frozen, batch, key, step):
    lpips_fn, id_fn = perceptual_fns(config, frozen)

    def run(params, model_state, batch, key):
      G = frozen["G"]
      k1, k2 = jax.random.split(key)
      ws, new_psp = encode(params, model_state, frozen, batch["x"], train=True)
      y = render(G, ws, batch["c"], k1)
      y_m = render(G, ws, batch["c_m"], k2) if w_psp.mirror else None
      total, terms = branch_loss(batch["x"], y, batch[MIRROR], y_m, None, weights=w_psp,
                                 pixel="l2", lpips_fn=lpips_fn, id_fn=id_fn, **sym)
      stash = first_pass(G, ws, y, y_m, batch, k2) if use_stash else {}
      return total, {f"psp_{k}": v for k, v in terms.items()}, new_psp, stash

    shapes = jax.eval_shape(run, params, model_state, batch, key)

    def off(params, model_state, batch, key):   # frozen branch 1: no loss, statistics kept
      zeros = jax.tree_util.tree_map(lambda s: jnp.zeros(s.shape, s.dtype), shapes[:2])
      stash = {}
      if use_stash:   # v1: phi in eval() after stop_psp
        G = frozen["G"]
        k1, k2 = jax.random.split(key)
        ws, _ = encode(params, model_state, frozen, batch["x"], train=False)
        stash = first_pass(G, ws, render(G, ws, batch["c"], k1), None, batch, k2)
      return (*zeros, model_state["psp"], stash)

    active = step < stop_psp
    total, metrics, new_psp, stash = jax.lax.cond(active, run, off, params, model_state, batch,
                                                  key)
    metrics["psp_active"] = active.astype(jnp.float32)
    new_ms = {**model_state, "psp": new_psp}
    if use_stash:
      new_ms["first_pass"] = stash
    return total, {"metrics": metrics, "model_state": new_ms}

  def first_pass(G, ws, y, y_m, batch, key):
    """Branch 1's detached ``w+`` and renders (at the encoders' input size), for branch 2 in the
    same step ('paper' order)."""
    out = {"ws": ws, "y0": pool(y, enc_size)}
    if in_ch == 9:
      out["y0_m"] = pool(y_m if y_m is not None else render(G, ws, batch["c_m"], key), enc_size)
    return jax.tree_util.tree_map(jax.lax.stop_gradient, out)

  def triplane_forward(params, model_state, frozen, batch, key, train: bool = True):
    """``(y, y_m, new model_state)``: branch 2's renders (``train``: BatchNorm batch statistics
    in both encoders and their running statistics updated, as the v2 coach's ``net.forward``)."""
    G = frozen["G"]
    # key None: the renderer's deterministic samples, as at inference (preview)
    k0, k1, k2, k3 = [None] * 4 if key is None else jax.random.split(key, 4)
    x, xm = batch["x"], batch[MIRROR]
    if train and use_stash:   # branch 1's first pass of this step (one phi forward a step)
      fp, new_psp = model_state["first_pass"], model_state["psp"]
      ws, y0, y0_m = fp["ws"], fp["y0"], fp.get("y0_m")
    else:
      ws, new_psp = encode(params, model_state, frozen, x, train)
      ws = jax.lax.stop_gradient(ws)   # phi gets no gradient from L_psi
      y0 = jax.lax.stop_gradient(pool(render(G, ws, batch["c"], k0), enc_size))
      y0_m = (jax.lax.stop_gradient(pool(render(G, ws, batch["c_m"], k1), enc_size))
              if in_ch == 9 else None)
    x, xm = pool(x, enc_size), pool(xm, enc_size)
    parts = [y0, x - y0]
    if in_ch == 9:
      parts.append(xm - y0_m)
    v = {"params": params["triplane"], **model_state["triplane"]}
    inp = jnp.concatenate(parts, axis=-1)
    if train and bn_train:
      offsets, upd = tri_model.apply(v, inp, mutable=list(model_state["triplane"]))
      new_tri = {**model_state["triplane"], **unfreeze(upd)}
    else:
      offsets, new_tri = tri_model.apply(v, inp), model_state["triplane"]
    planes = jax.lax.stop_gradient(G.planes(ws)) + offsets
    y = pool(synthesize_planes(G, ws, batch["c"], planes, key=k2)["image"], size)
    y_m = None
    if w_tri.mirror:
      y_m = pool(synthesize_planes(G, ws, batch["c_m"], planes, key=k3)["image"], size)
    if not keep_psp_stats:   # 'paper' order: phi's statistics move once a step, in branch 1
      new_psp = model_state["psp"]
    return y, y_m, {**model_state, "psp": new_psp, "triplane": new_tri}

  def triplane_loss(params, model_state, frozen, batch, key, step):
    lpips_fn, id_fn = perceptual_fns(config, frozen)
    k_fwd, k_d = jax.random.split(key)
    y, y_m, new_ms = triplane_forward(params, model_state, frozen, batch, k_fwd)
    total, terms = branch_loss(batch["x"], y, batch[MIRROR], y_m, None, weights=w_tri,
                               pixel="smooth_l1", lpips_fn=lpips_fn, id_fn=id_fn, **sym)
    metrics = {f"tri_{k}": v for k, v in terms.items()}
    if use_d:
      from jaxinv.models import stylegan2_discriminator as sd
      d_model = sd.from_config(dcfg, size)
      adv = adversarial.g_nonsaturating_loss(d_model.apply({"params": params["discriminator"]}, y))
      on = (step >= int(dcfg.start)).astype(jnp.float32)
      metrics["tri_adv"] = adv
      total = total + on * float(dcfg.adv_lambda) * adv
    metrics["tri_active"] = (step >= add_tri).astype(jnp.float32)
    return total, {"metrics": metrics, "model_state": new_ms}

  # 'paper': branch 2 reads branch 1's detached first pass of this step (the phi branch 1's loss
  # saw, before its update); 'v2': branch 2 re-runs phi after the update.
  phases = [Phase("psp", psp_loss), Phase("triplane", triplane_loss)]
  oc = config.optim
  optimizers = {"psp": gated(make_optimizer(oc.psp), 0, stop_psp),
                "triplane": gated(make_optimizer(oc.triplane), add_tri)}

  if use_d:
    from jaxinv.models import stylegan2_discriminator as sd
    d_model = sd.from_config(dcfg, size)
    d_start = int(dcfg.start)

    def d_apply(params, img):
      return d_model.apply({"params": params}, img)

    def d_loss(params, model_state, frozen, batch, key, step):
      y, _, _ = triplane_forward(params, model_state, frozen, batch, key)  # statistics not kept
      y = jax.lax.stop_gradient(y)
      loss = adversarial.d_logistic_loss(d_apply(params["discriminator"], batch["x"]),
                                         d_apply(params["discriminator"], y))
      if bool(dcfg.halve_loss):   # the v2 code's (softplus(-real) + softplus(fake)) / 2
        loss = loss / 2
      on = (step >= d_start).astype(jnp.float32)
      return on * loss, {"metrics": {"d_loss": loss}}

    def d_r1(params, model_state, frozen, batch, key, step):
      r1 = adversarial.r1_penalty(lambda im: d_apply(params["discriminator"], im), batch["x"])
      # lazy regularisation: gamma / 2 * R1 * interval (StyleGAN2 / the v2 code)
      on = (step >= d_start).astype(jnp.float32)
      return on * float(dcfg.r1_gamma) / 2 * r1 * int(dcfg.r1_every), {"metrics": {"d_r1": r1}}

    phases += [Phase("discriminator", d_loss, name="disc"),
               Phase("discriminator", d_r1, every=int(dcfg.r1_every), name="disc_r1")]
    # The D's two phases share one optimizer state, so it is not gated by a call count: before
    # ``discriminator.start`` its losses are multiplied by 0 (zero gradients, Adam moves nothing).
    optimizers["discriminator"] = make_optimizer(oc.discriminator)

  def preview(params, model_state, frozen, batch):
    y, y_m, _ = triplane_forward(params, model_state, frozen, batch, None, train=False)
    out = {"input": batch["x"], "triplanenet": y}
    if y_m is not None:
      out["mirror_view"] = y_m
    return out

  return Task(name="triplanenet", init=init, phases=tuple(phases), optimizers=optimizers,
              make_batch=make_batch, needs_real_data=real, preview=preview,
              in_domain_metric="tri_pixel")


# ----------------------------------------------------------------------------------- export

def export(workdir: str, out_path: str, config=None, step: int | None = None, half: bool = False):
  """A TriPlaneNet run -> the native file ``jaxinv.load_encoder`` and
  ``jaxinv.invert(method="triplanenet", weights={"encoder": out_path, ...})`` read: both encoders
  in eval mode (BatchNorm running statistics from the checkpoint's ``model_state``) and
  ``latent_avg`` = the generator's mean latent (the task's ``w+ = phi(x) + w_avg``). Inference
  runs TriPlaneNet v1, so only runs with ``model.offset_input='v1'`` export. ``half``: float32
  arrays stored as float16. Returns the ``TriPlaneNetCheckpoint`` written."""
  from jaxinv.convert import triplanenet as tpn_convert
  from jaxinv.train.checkpoint import load_checkpoint
  from jaxinv.train.tasks.psp_family import read_config
  config = read_config(workdir) if config is None else config
  if str(get(config, "task", "")) != "triplanenet":
    raise ValueError(f"{workdir}: a {get(config, 'task', '')!r} run, not a triplanenet one")
  if str(config.model.offset_input) != "v1":
    raise ValueError(f"{workdir}: model.offset_input={config.model.offset_input!r}; inference runs "
                     "TriPlaneNet v1 (6-channel offset input), so only 'v1' runs export")
  G = load_generator(config)
  psp_model, tri_model, _, _, _ = _models(config, G)
  ck = load_checkpoint(workdir, step)
  ms = ck.get("model_state") or {}

  def variables(group):
    v = {"params": ck["params"][group], **{k: x for k, x in (ms.get(group) or {}).items()}}
    return jax.tree_util.tree_map(lambda a: np.asarray(a, np.float32), v)
  out = tpn_convert.TriPlaneNetCheckpoint(psp_model, variables("psp"), tri_model,
                                          variables("triplane"), {}, {},
                                          np.asarray(w_avg_of(G), np.float32))
  tpn_convert.save_native_checkpoint(out_path, out, half=half)
  return out
