"""NeRF-3DE training on EG3D (Li et al., "3D-Aware Encoding for Style-based Neural Radiance Fields").

No upstream code exists; the paper gives the losses (eqs. 5-12) but no optimiser, schedule,
margin or weights. The decisions (RECIPES 4.6; each a config field in ``configs/nerf3de.py``):

* **Data**: every batch is ``B`` identities x ``V`` views, generated on device by the frozen G:
  ``w_syn+ = mapping(z, c_front, psi)`` -- conditioned on the canonical camera for all views, so
  two views of one identity truly share the latent --, rendered at ``V`` cameras each (uniform
  yaw +-35 deg, pitch +-20 deg by default, the paper's render range). ``w_syn+`` is the latent
  target; the identity label drives the triplet loss.
* **Base phase** (group ``base``), eqs. 7-8: ``L_tri(w_base)`` (eq. 6 over the batch: every view
  is an anchor, positives are the other views of its identity, negatives the other identities,
  ``losses.mining`` 'hard' (batch-hard) or 'all') + ``L1(w_base, w_syn+)`` + the image terms
  (L2, LPIPS, ID; pSp weights 1 / 0.8 / 0.1) on ``x_hat_base = G(w_base+, c)``.
* **Refine phase** (group ``refiner``), eqs. 10-11: ``w_base`` and ``x_hat_base`` are
  ``stop_gradient``-ed, ``w_ref+ = w_base+ + E_ref([x, x_hat_base])`` (``schedule.
  refiner_iterations`` ReStyle steps, each on a detached input), ``L1(w_ref+, w_syn+)`` + image
  terms on ``G(w_ref+, c)``; no triplet on W+ (the paper: prone to overfitting).
* **Schedule**: eq. 12 is one sum, the text says "two-stage"; default two stages: the base trains
  alone until ``schedule.refiner_start``, then the refiner trains and the base is frozen
  (``schedule.freeze_base=True``; False keeps both training, i.e. eq. 12 jointly after the start).
  The refiner's forward runs from step 0 so ``ref_pixel`` (the final reconstruction) is always
  logged.
* **Margin**: ``losses.margin``; 0 (default) = measured at start: ``losses.margin_scale`` (0.1)
  times the median distance between the base codes' targets ``w`` of ``losses.margin_samples``
  generated identities (logged). ``losses.normalize_codes`` L2-normalises codes first (then use a
  fixed margin ~0.2).
* Real images (FFHQ in the paper, image terms only) are not mixed in (synthetic only).

Metrics (unweighted): ``base_{triplet,l1,pixel,lpips,id}``, ``ref_{l1,pixel,lpips,id}``,
``margin``, ``base_active``, ``ref_active``.
"""
from __future__ import annotations

import logging
import math

import jax
import jax.numpy as jnp
import numpy as np

from jaxinv.data import synthetic
from jaxinv.inversion import nerf3de as n3
from jaxinv.losses import triplet
from jaxinv.models.encoders.nerf3de import NeRF3DEConfig
from jaxinv.train.optimizers import make_optimizer
from jaxinv.train.tasks.base import Phase, Task, TaskInit
from jaxinv.train.tasks.triplanenet import (gated, get, load_generator, load_loss_nets,
                                            perceptual_fns, pool, skip_unless, split_variables,
                                            w_avg_of)

log = logging.getLogger(__name__)


def _poses(config):
  p = config.data.poses
  if p.kind == "uniform":
    return synthetic.PoseDistribution(kind="uniform", yaw_range=math.radians(float(p.yaw_deg)),
                                      pitch_range=math.radians(float(p.pitch_deg)),
                                      flip_prob=float(p.flip_prob))
  if p.kind == "gaussian":
    return synthetic.PoseDistribution(yaw_std=float(p.yaw_std), pitch_std=float(p.pitch_std),
                                      flip_prob=float(p.flip_prob))
  raise ValueError(f"data.poses.kind must be 'uniform' or 'gaussian', got {p.kind!r}")


def measure_margin(G, key, num: int, scale: float, psi: float) -> float:
  """``scale x`` the median pairwise distance of ``w = mapping(z, c_front)`` over ``num`` z."""
  z = synthetic.sample_latents(key, num, G.z_dim)
  w = G.mapping(z, synthetic.canonical_cameras(num), truncation_psi=psi)[:, 0]
  d = np.asarray(triplet.pairwise_distances(w))
  return float(scale * np.median(d[np.triu_indices(num, 1)]))


def image_terms(lc, x, y, lpips_fn, id_fn):
  """``(weighted sum, terms)`` of eq. 8 / 10: L2 + LPIPS + ID."""
  terms = {"pixel": jnp.mean(jnp.square(x - y))}
  total = float(lc.l2) * terms["pixel"]
  if lpips_fn is not None:
    terms["lpips"] = lpips_fn(y, x)
    total = total + float(lc.lpips) * terms["lpips"]
  if id_fn is not None:
    terms["id"] = id_fn(y, x)
    total = total + float(lc.id) * terms["id"]
  return total, terms


def build_model(config, G) -> n3.NeRF3DE:
  """The two encoders of ``config.model`` for ``G``; their input is ``model.input_size`` (0: the
  loss resolution)."""
  m = config.model
  enc_size = int(get(m, "input_size", 0) or config.losses.loss_resolution)
  return n3.NeRF3DE.build(NeRF3DEConfig(num_ws=G.num_ws, input_size=enc_size,
                                        backbone=str(m.backbone),
                                        small_widths=tuple(m.small_widths),
                                        small_stem=int(m.small_widths[0])))


def build(config) -> Task:
  G0 = load_generator(config)
  nets = load_loss_nets(config)
  lc, sched, dc = config.losses, config.schedule, config.data
  model = build_model(config, G0)
  ncfg = model.config
  # size: the loss resolution; enc_size: the encoders' input (smaller for the toy encoders):
  # images and the renders fed back to the refiner are average-pooled to it, as at inference.
  size, enc_size = int(lc.loss_resolution), ncfg.input_size
  n_id, n_view = int(dc.identities), int(dc.views)
  if n_id * n_view != int(config.batch_size):
    raise ValueError(f"batch_size ({config.batch_size}) must be data.identities x data.views "
                     f"= {n_id} x {n_view}")
  if n_id < 2 or n_view < 2:
    raise ValueError("the triplet loss needs data.identities >= 2 and data.views >= 2")
  poses = _poses(config)
  psi = float(dc.truncation_psi)
  margin = float(lc.margin)
  if margin <= 0:
    margin = measure_margin(G0, jax.random.PRNGKey(int(config.seed) + 7919), int(lc.margin_samples),
                            float(lc.margin_scale), psi)
    log.warning("NeRF-3DE: triplet margin measured at start: %.4g (%.2f x the median "
                "inter-identity distance of %d samples)", margin, float(lc.margin_scale),
                int(lc.margin_samples))
  start, freeze = int(sched.refiner_start), bool(sched.freeze_base)
  iters = int(sched.refiner_iterations)
  identity = jnp.repeat(jnp.arange(n_id), n_view)

  def init(key):
    k1, k2 = jax.random.split(key)
    v = model.init(k1)
    base_p, base_c = split_variables(v["base"])
    ref_p, ref_c = split_variables(v["refiner"])
    frozen = {"G": G0, "nets": nets, "w_avg": w_avg_of(G0)[0],
              "consts": {"base": base_c, "refiner": ref_c}}
    return TaskInit({"base": base_p, "refiner": ref_p}, {}, frozen)

  def make_batch(frozen, key, step, host_batch):
    G = frozen["G"]
    kz, kc, kr = jax.random.split(key, 3)
    z = synthetic.sample_latents(kz, n_id, G.z_dim)
    ws = G.mapping(z, synthetic.canonical_cameras(n_id), truncation_psi=psi)
    ws = jnp.repeat(ws, n_view, axis=0)                       # [B*V, num_ws, 512], identity-major
    c = synthetic.sample_poses(kc, n_id * n_view, poses)
    out = G.synthesis(ws, c, key=kr if bool(dc.random_render) else None)
    x = jax.lax.stop_gradient(pool(out["image"], size))
    return {"x": x, "c": c, "ws": ws, "identity": identity}

  def variables(params, frozen):
    return {"base": {"params": params["base"], **frozen["consts"]["base"]},
            "refiner": {"params": params["refiner"], **frozen["consts"]["refiner"]},
            "w_avg": frozen["w_avg"]}

  def render(G, ws, c, key):
    return pool(G.synthesis(ws, c, key=key)["image"], size)

  def base_loss(params, model_state, frozen, batch, key, step):
    lpips_fn, id_fn = perceptual_fns(config, frozen)

    def run(params, batch, key):
      v = variables(params, frozen)
      w = n3.encode_base(model, v, pool(batch["x"], enc_size))
      terms = {"triplet": triplet.batch_triplet_loss(w, batch["identity"], margin, str(lc.mining),
                                                     bool(lc.normalize_codes)),
               "l1": triplet.latent_l1(w, batch["ws"])}
      y = render(frozen["G"], n3.repeat_ws(w, ncfg.num_ws), batch["c"], key)
      img, it = image_terms(lc, batch["x"], y, lpips_fn, id_fn)
      terms.update(it)
      total = (float(lc.feat_base) * (float(lc.triplet) * terms["triplet"] + float(lc.l1_base)
                                      * terms["l1"]) + float(lc.img_base) * img)
      return total, {f"base_{k}": t for k, t in terms.items()}

    active = (step < start) | (not freeze)
    total, metrics = skip_unless(active, run, params, batch, key)
    metrics["base_active"] = jnp.asarray(active, jnp.float32)
    metrics["margin"] = jnp.float32(margin)
    return total, {"metrics": metrics}

  def refine(params, frozen, batch, key):
    v = variables(params, frozen)
    G = frozen["G"]
    keys = [None] * (iters + 1) if key is None else jax.random.split(key, iters + 1)
    x = pool(batch["x"], enc_size)
    ws = jax.lax.stop_gradient(n3.repeat_ws(n3.encode_base(model, v, x), ncfg.num_ws))
    y = jax.lax.stop_gradient(render(G, ws, batch["c"], keys[0]))
    for t in range(iters):
      ws = n3.refine_step(model, v, x, pool(y, enc_size), jax.lax.stop_gradient(ws))
      y = render(G, ws, batch["c"], keys[t + 1])
    return ws, y

  def ref_loss(params, model_state, frozen, batch, key, step):
    lpips_fn, id_fn = perceptual_fns(config, frozen)
    ws, y = refine(params, frozen, batch, key)
    terms = {"l1": triplet.latent_l1(ws, batch["ws"])}
    img, it = image_terms(lc, batch["x"], y, lpips_fn, id_fn)
    terms.update(it)
    total = float(lc.feat_ref) * float(lc.l1_ref) * terms["l1"] + float(lc.img_ref) * img
    metrics = {f"ref_{k}": t for k, t in terms.items()}
    metrics["ref_active"] = (step >= start).astype(jnp.float32)
    return total, {"metrics": metrics}

  oc = config.optim
  optimizers = {"base": gated(make_optimizer(oc.base), 0, start if freeze else None),
                "refiner": gated(make_optimizer(oc.refiner), start)}

  def preview(params, model_state, frozen, batch):
    _, y = refine(params, frozen, batch, None)   # deterministic renders, as at inference
    return {"input": batch["x"], "nerf3de": y}

  return Task(name="nerf3de", init=init,
              phases=(Phase("base", base_loss), Phase("refiner", ref_loss)),
              optimizers=optimizers, make_batch=make_batch, preview=preview,
              in_domain_metric="ref_pixel")


def export(workdir: str, out_path: str, config=None, step: int | None = None, half: bool = False):
  """A NeRF-3DE run -> the native file ``jaxinv.load_encoder`` and ``jaxinv.invert(method=
  "nerf3de", weights={"encoder": out_path, ...})`` read: both encoders (their constant BatchNorm
  statistics included) and ``w_avg`` = the generator's mean latent. ``half``: float32 arrays
  stored as float16. Returns ``(NeRF3DE, params)``."""
  from jaxinv.train.checkpoint import load_checkpoint
  from jaxinv.train.tasks.psp_family import read_config
  config = read_config(workdir) if config is None else config
  if str(get(config, "task", "")) != "nerf3de":
    raise ValueError(f"{workdir}: a {get(config, 'task', '')!r} run, not a nerf3de one")
  G = load_generator(config)
  model = build_model(config, G)
  ck = load_checkpoint(workdir, step)
  init = model.init(jax.random.PRNGKey(0))   # the constant (non-trained) collections
  params = {}
  for g in ("base", "refiner"):
    rest = {k: v for k, v in init[g].items() if k != "params"}
    params[g] = jax.tree_util.tree_map(lambda a: np.asarray(a, np.float32),
                                       {"params": ck["params"][g], **rest})
  params["w_avg"] = np.asarray(w_avg_of(G)[0], np.float32)
  n3.save(out_path, model, params, half=half)
  return model, params
