"""``e4e``: encoder4editing (Tov et al. 2021) training into a frozen EG3D generator.

Groups: ``encoder`` (``Encoder4Editing``, Ranger lr 1e-4, train-mode BatchNorm) and ``disc``
(e4e's latent ``LatentDiscriminator``, Adam lr 2e-5). Phases, in the official coach's order,
inside one step:

1. ``disc``: non-saturating D loss on real ``w = G.mapping(z, c_front)`` vs fake codes. As the
   official ``sample_real_and_fake_latents``: the fake codes come from a train-mode encoder
   forward without gradient (so BatchNorm's running statistics move twice per step, as there),
   one random active row per sample, and *without* ``w_avg`` added (``e4e.disc_fake_w_avg=True``
   adds it, matching what the encoder's adversarial term feeds D); real and fake codes each go
   through e4e's ``LatentCodesPool`` (``latent_pool_query``; ``w_pool_size`` 0: no pool, the
   fake is then row 0 as upstream).
2. ``disc_r1`` (every ``d_reg_every`` = 16 steps): ``r1_gamma / 2 * R1 * d_reg_every`` on the
   pooled real codes of this step.
3. ``encoder``: pSp's image losses (L2 1.0, LPIPS 0.8, ID 0.1) on ``G.synthesis(ws, c)`` plus
   ``delta_norm * sum_i mean_b ||delta_i||_2`` over the active deltas (2e-4) plus
   ``w_discriminator * mean_{i <= stage} softplus(-D(ws_i))`` (0.1), with the D just updated.
   Progressive training: at stage ``k`` only the deltas ``1..k`` are added to ``w0`` (the others
   rows are ``w0``); stage ``k`` starts at ``progressive_start + (k-1) * progressive_step_every``.
   The stage is computed from the traced step (all deltas are computed and masked), so one
   compiled step serves every stage.

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


def latent_pool_query(pool, count, ws, key):
  """e4e's ``LatentCodesPool.query`` on device: ``(codes returned [B, D], new pool, new count)``.

  ``pool [P, D]`` holds ``count`` codes so far. The batch ``ws [B, D]`` is handled in order, as
  upstream: while the pool is not full each code is stored and returned as is; once full, with
  probability 1/2 a uniformly chosen stored code is returned and replaced by the new one, else
  the new code is returned. ``P == 0``: no pool, ``ws`` is returned.
  """
  size = pool.shape[0]
  if size == 0:
    return ws, pool, count

  def one(carry, inp):
    pool, count = carry
    w, k = inp
    k_u, k_i = jax.random.split(k)
    filling = count < size
    swap = jnp.logical_and(jnp.logical_not(filling), jax.random.uniform(k_u) > 0.5)
    slot = jnp.where(filling, count, jax.random.randint(k_i, (), 0, size))
    out = jnp.where(swap, pool[slot], w)
    pool = pool.at[slot].set(jnp.where(jnp.logical_or(filling, swap), w, pool[slot]))
    return (pool, count + filling.astype(count.dtype)), out

  keys = jax.random.split(key, ws.shape[0])
  (pool, count), out = jax.lax.scan(one, (pool, count), (ws, keys))
  return out, pool, count


def staged_codes(codes, stage):
  """``w0 + delta_i`` for the active rows ``i <= stage``, ``w0`` elsewhere; also the deltas."""
  active = (jnp.arange(codes.shape[1]) <= stage)[None, :, None]
  w0 = codes[:, :1]
  deltas = codes - w0
  return w0 + jnp.where(active, deltas, 0.0), deltas


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
  fake_avg = bool(F.cfg_get(E, "disc_fake_w_avg", False))
  lam_delta, lam_adv = float(E.delta_norm), float(E.w_discriminator)
  start, every = int(E.progressive_start), int(E.progressive_step_every)
  gamma, d_every = float(E.r1_gamma), int(E.d_reg_every)

  def init(key):
    k_e, k_d, k_n = jax.random.split(key, 3)
    params, model_state = F.init_encoder(config, encoder, enc_size, k_e)
    if lam_adv > 0:
      model_state = dict(model_state, real_w=jnp.zeros((batch_size, 512), jnp.float32))
    if lam_adv > 0 and pool > 0:
      model_state = dict(model_state, real_pool=jnp.zeros((pool, 512), jnp.float32),
                         fake_pool=jnp.zeros((pool, 512), jnp.float32),
                         real_count=jnp.zeros((), jnp.int32), fake_count=jnp.zeros((), jnp.int32))
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
    bs = {"batch_stats": model_state["batch_stats"]}
    codes, bs = F.apply_encoder(encoder, params["encoder"], bs, batch["x"])
    stage = progressive_stage(step, n, start, every)
    rows = jnp.arange(n)
    codes, deltas = staged_codes(codes, stage)
    ws = codes + frozen["w_avg"]
    y_hat = F.render(frozen["G"], ws, batch["c"], key, loss_size)
    total, terms = F.image_terms(nets, frozen["nets"], y_hat, batch["y"], weights)
    sq = jnp.sum(jnp.square(deltas[:, 1:]), axis=-1)           # [B, n-1]
    norms = jnp.where(sq > 0, jnp.sqrt(jnp.where(sq > 0, sq, 1.0)), 0.0)
    terms["delta_reg"] = jnp.sum(jnp.mean(norms, axis=0) * (rows[1:] <= stage))
    terms["stage"] = stage.astype(jnp.float32)
    total = total + lam_delta * terms["delta_reg"]
    if lam_adv > 0:
      # e4e discriminates every active row; averaging D over them (mask) is the same estimate.
      logits = d_apply(params["disc"], ws.reshape(-1, 512)).reshape(ws.shape[0], n)
      mask = (rows <= stage).astype(jnp.float32)
      terms["enc_adv"] = jnp.sum(jnp.mean(jax.nn.softplus(-logits), 0) * mask) / jnp.sum(mask)
      total = total + lam_adv * terms["enc_adv"]
    return total, dict(metrics=terms, model_state=dict(model_state, **bs))

  def disc_loss(params, model_state, frozen, batch, key, step):
    k_row, k_real, k_fake = jax.random.split(key, 3)
    bs = {"batch_stats": model_state["batch_stats"]}
    codes, bs = F.apply_encoder(encoder, params["encoder"], bs, batch["x"])
    stage = progressive_stage(step, n, start, every)
    codes = jax.lax.stop_gradient(staged_codes(codes, stage)[0])
    if fake_avg:
      codes = codes + frozen["w_avg"]
    b = codes.shape[0]
    row = jax.random.randint(k_row, (b,), 0, stage + 1) if pool else jnp.zeros((b,), jnp.int32)
    fake = jnp.take_along_axis(codes, row[:, None, None], axis=1)[:, 0]
    real = batch["real_w"]
    new_ms = dict(model_state, **bs)
    if pool:
      real, new_ms["real_pool"], new_ms["real_count"] = latent_pool_query(
          model_state["real_pool"], model_state["real_count"], real, k_real)
      fake, new_ms["fake_pool"], new_ms["fake_count"] = latent_pool_query(
          model_state["fake_pool"], model_state["fake_count"], fake, k_fake)
    new_ms["real_w"] = real
    real_logits = d_apply(params["disc"], real)
    fake_logits = d_apply(params["disc"], fake)
    loss = adv.d_logistic_loss(real_logits, fake_logits)
    return loss, dict(metrics=dict(d_loss=loss, d_real=jnp.mean(real_logits),
                                   d_fake=jnp.mean(fake_logits)), model_state=new_ms)

  def r1_loss(params, model_state, frozen, batch, key, step):
    r1 = adv.r1_penalty(lambda w: d_apply(params["disc"], w), model_state["real_w"])
    return gamma / 2 * r1 * d_every, dict(metrics=dict(d_r1=r1))

  def preview(params, model_state, frozen, batch):
    codes = encoder.apply({"params": params["encoder"],
                           "batch_stats": model_state["batch_stats"]}, batch["x"])
    return F.preview_images(frozen["G"], codes + frozen["w_avg"], batch, loss_size)

  phases = []
  if lam_adv > 0:
    phases += [Phase("disc", disc_loss), Phase("disc", r1_loss, every=d_every, name="disc_r1")]
  phases.append(Phase("encoder", encoder_loss))
  return Task(name="e4e", init=init, phases=tuple(phases),
              optimizers=dict(encoder=make_optimizer(config.optimizer),
                              disc=make_optimizer(dict(name="adam", lr=float(E.disc_lr)))),
              make_batch=make_batch, needs_real_data=real_data, preview=preview,
              in_domain_metric="l2")
