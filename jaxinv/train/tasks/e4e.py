"""``e4e``: encoder4editing (Tov et al. 2021) training into a frozen EG3D generator.

Groups: ``encoder`` (``Encoder4Editing``, Ranger lr 1e-4, train-mode BatchNorm) and ``disc``
(e4e's latent ``LatentDiscriminator``, Adam lr 2e-5). Phases, in order, inside one step:

1. ``encoder``: pSp's image losses (L2 1.0, LPIPS 0.8, ID 0.1) on ``G.synthesis(ws, c)`` plus
   ``delta_norm * sum_i mean_b ||delta_i||_2`` over the active deltas (2e-4) plus
   ``w_discriminator * mean_{i <= stage} softplus(-D(ws_i))`` (0.1).
   Progressive training: at stage ``k`` only the deltas ``1..k`` are added to ``w0`` (the others
   rows are ``w0``); stage ``k`` starts at ``progressive_start + (k-1) * progressive_step_every``.
   The stage is computed from the traced step (all deltas are computed and masked), so one
   compiled step serves every stage.
2. ``disc``: non-saturating D loss on real ``w = G.mapping(z, c_front)`` vs fake codes drawn from
   a pool of the last ``w_pool_size`` encoder codes (``model_state["w_pool"]``; e4e's
   ``LatentCodesPool`` mixes old and new codes 50/50, here every pooled code is equally likely).
3. ``disc_r1`` (every ``d_reg_every`` = 16 steps): ``r1_gamma / 2 * R1 * d_reg_every`` on real w.

Metrics: ``l2``, ``lpips``, ``id``, ``delta_reg``, ``enc_adv``, ``stage``, ``d_loss``,
``d_real``, ``d_fake``, ``d_r1``.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp

from jaxinv.data import synthetic
from jaxinv.losses import adversarial as adv
from jaxinv.models.discriminators import LatentDiscriminator
from jaxinv.train.optimizers import make_optimizer
from jaxinv.train.tasks import psp_family as F
from jaxinv.train.tasks.base import Phase, Task, TaskInit


def progressive_stage(step, n_styles: int, start: int, every: int):
  """Traced e4e stage: 0 before ``start``, then +1 every ``every`` steps, at most n_styles - 1."""
  if start < 0:
    return jnp.int32(n_styles - 1)
  k = jnp.where(step >= start, 1 + (step - start) // max(every, 1), 0)
  return jnp.minimum(k, n_styles - 1).astype(jnp.int32)


def build(config) -> Task:
  G = F.build_generator(config)
  E = config.e4e
  weights = {k: float(F.cfg_get(config.losses, k, 0.0)) for k in ("l2", "lpips", "id")}
  nets = F.LossNets(config, any_id=weights["id"] > 0)
  encoder, enc_size = F.make_encoder(config, "e4e", G.num_ws)
  n = G.num_ws
  loss_size = int(F.cfg_get(config.losses, "resolution", enc_size))
  batch_size = int(config.batch_size)
  syn = F.synthetic_config(config)
  real_data = bool(F.cfg_get(config.data, "path", ""))
  disc = LatentDiscriminator(512, int(E.disc_layers))
  pool = int(E.w_pool_size)
  lam_delta, lam_adv = float(E.delta_norm), float(E.w_discriminator)
  start, every = int(E.progressive_start), int(E.progressive_step_every)
  gamma, d_every = float(E.r1_gamma), int(E.d_reg_every)

  def init(key):
    k_e, k_d, k_n = jax.random.split(key, 3)
    params, model_state = F.init_encoder(config, encoder, enc_size, k_e)
    model_state = dict(model_state, w_pool=jnp.zeros((max(pool, 1), 512), jnp.float32),
                       pool_count=jnp.zeros((), jnp.int32))
    d_params = disc.init(k_d, jnp.zeros((1, 512)))["params"]
    frozen = dict(G=G, w_avg=F.w_avg_of(G), nets=nets.init(k_n, loss_size))
    return TaskInit(params=dict(encoder=params, disc=d_params), model_state=model_state,
                    frozen=frozen)

  def make_batch(frozen, key, step, host_batch):
    k_img, k_real = jax.random.split(key)
    if host_batch is not None:
      b = F.real(host_batch, enc_size, loss_size, n)
    else:
      b = F.generated(frozen["G"], k_img, batch_size, syn, enc_size, loss_size)
    z = synthetic.sample_latents(k_real, batch_size, frozen["G"].z_dim)
    real_w = frozen["G"].mapping(z, synthetic.canonical_cameras(batch_size))[:, 0]
    return dict(b, real_w=jax.lax.stop_gradient(real_w))

  def d_apply(p, w):
    return disc.apply({"params": p}, w)

  def encoder_loss(params, model_state, frozen, batch, key, step):
    k_render, k_row = jax.random.split(key)
    bs = {"batch_stats": model_state["batch_stats"]}
    codes, bs = F.apply_encoder(encoder, params["encoder"], bs, batch["x"])
    stage = progressive_stage(step, n, start, every)
    rows = jnp.arange(n)
    active = (rows <= stage)[None, :, None]
    w0 = codes[:, :1]
    deltas = codes - w0
    codes = w0 + jnp.where(active, deltas, 0.0)
    ws = codes + frozen["w_avg"]
    y_hat = F.render(frozen["G"], ws, batch["c"], k_render, loss_size)
    total, terms = F.image_terms(nets, frozen["nets"], y_hat, batch["y"], weights)
    sq = jnp.sum(jnp.square(deltas[:, 1:]), axis=-1)           # [B, n-1]
    norms = jnp.where(sq > 0, jnp.sqrt(jnp.where(sq > 0, sq, 1.0)), 0.0)
    terms["delta_reg"] = jnp.sum(jnp.mean(norms, axis=0) * (rows[1:] <= stage))
    # e4e discriminates every active row; averaging D over them (mask) is the same estimate.
    logits = d_apply(params["disc"], ws.reshape(-1, 512)).reshape(ws.shape[0], n)
    mask = (rows <= stage).astype(jnp.float32)
    terms["enc_adv"] = jnp.sum(jnp.mean(jax.nn.softplus(-logits), 0) * mask) / jnp.sum(mask)
    terms["stage"] = stage.astype(jnp.float32)
    total = total + lam_delta * terms["delta_reg"] + lam_adv * terms["enc_adv"]
    # Pool: one random active row per sample (the D's fake w), ring-buffered.
    pick = jax.random.randint(k_row, (ws.shape[0],), 0, stage + 1)
    fake = jax.lax.stop_gradient(jnp.take_along_axis(ws, pick[:, None, None], axis=1)[:, 0])
    count = model_state["pool_count"]
    idx = (count + jnp.arange(ws.shape[0])) % model_state["w_pool"].shape[0]
    new_ms = dict(model_state, batch_stats=bs["batch_stats"],
                  w_pool=model_state["w_pool"].at[idx].set(fake),
                  pool_count=count + ws.shape[0])
    return total, dict(metrics=terms, model_state=new_ms)

  def disc_loss(params, model_state, frozen, batch, key, step):
    filled = jnp.minimum(model_state["pool_count"], model_state["w_pool"].shape[0])
    idx = jax.random.randint(key, (batch_size,), 0, jnp.maximum(filled, 1))
    fake = model_state["w_pool"][idx]
    real_logits = d_apply(params["disc"], batch["real_w"])
    fake_logits = d_apply(params["disc"], fake)
    loss = adv.d_logistic_loss(real_logits, fake_logits)
    return loss, dict(metrics=dict(d_loss=loss, d_real=jnp.mean(real_logits),
                                   d_fake=jnp.mean(fake_logits)))

  def r1_loss(params, model_state, frozen, batch, key, step):
    r1 = adv.r1_penalty(lambda w: d_apply(params["disc"], w), batch["real_w"])
    return gamma / 2 * r1 * d_every, dict(metrics=dict(d_r1=r1))

  def preview(params, model_state, frozen, batch):
    codes = encoder.apply({"params": params["encoder"],
                           "batch_stats": model_state["batch_stats"]}, batch["x"])
    return F.preview_images(frozen["G"], codes + frozen["w_avg"], batch, loss_size)

  phases = [Phase("encoder", encoder_loss)]
  if lam_adv > 0:
    phases += [Phase("disc", disc_loss), Phase("disc", r1_loss, every=d_every, name="disc_r1")]
  return Task(name="e4e", init=init, phases=tuple(phases),
              optimizers=dict(encoder=make_optimizer(config.optimizer),
                              disc=make_optimizer(dict(name="adam", lr=float(E.disc_lr)))),
              make_batch=make_batch, needs_real_data=real_data, preview=preview,
              in_domain_metric="l2")
