"""``preim3d``: PREIM3D's W+ encoder training into a frozen EG3D generator (RECIPES.md 3).

Trained: ``WPlusEncoder`` (group ``encoder``, Ranger 1e-4, train-mode BatchNorm). Frozen: G,
LPIPS, ArcFace. The alternating training scheme: even steps take an in-domain batch generated on
device (z ~ N(0, I), one uniform yaw +-30 / pitch +-20 deg camera per batch, psi 0.7, the render
camera as the mapping's conditioning), odd steps an out-of-domain batch (real images from
``data.path``; under ``runlocal`` images of the same G from a second pose distribution,
``config.stand_in``; with ``preim3d.real='world'`` photos of the procedural world
``jaxinv.data.world`` rendered on device at ``stand_in``'s cameras -- the toy world's real images)
-- 1:1, in-domain first, chosen inside the jitted step.

Loss (Eqs. 4-7): ``l2 * L2 + lpips * LPIPS + lambda_w(step) * L_w [in-domain only]
+ id * ID(x, G(E(x), c)) + lambda_sur(step) * mean_i ID(x, G(E(x), c_sur_i))`` with L2 1.0,
LPIPS 0.8, lambda_ori (``losses.id``) 0.4; ``c_sur_i``: ``views`` cameras at the input pose
+ U(+-sur_yaw) yaw, U(+-sur_pitch) pitch (the paper's wording; the code centres them on the
frontal view). Ramps (``config.preim3d``, ``preset``):

* ``paper``: lambda_w = 1e-4 * (1 + floor((step - 20k) / 5k)) from 20k; lambda_sur = 1e-4 *
  (1 + floor((step - 100k) / 5k)) from 100k; 4 views.
* ``release`` (the released code): lambda_w += 0.1 every 5k steps (first at 5k), at most 100
  increments; lambda_sur = 0.1 constant from 100k; 3 views; batch 2. (The code's quirk that an
  increment only fires on in-domain steps is not reproduced; its latent discriminator is off.)

The multi-view renders run only once lambda_sur > 0 (``lax.cond``). Metrics: ``l2``, ``lpips``,
``id``, ``w_rec`` (0 on out-of-domain steps), ``id_multi``, ``lambda_w``, ``lambda_sur``,
``in_domain``.
"""
from __future__ import annotations

import math

import jax
import jax.numpy as jnp

from jaxinv.data import synthetic, world
from jaxinv.losses import adversarial as adv
from jaxinv.train.optimizers import make_optimizer
from jaxinv.train.tasks import psp_family as F
from jaxinv.train.tasks.base import Phase, Task, TaskInit


def ramp(step, start: int, every: int, delta: float, max_increments: int = 1 << 30,
         constant: float = 0.0):
  """``constant + delta * min(1 + floor((step - start) / every), max_increments)`` from ``start``."""
  k = jnp.minimum(1 + (step - start) // max(every, 1), max_increments).astype(jnp.float32)
  return jnp.where(step >= start, constant + delta * k, 0.0)


def build(config) -> Task:
  G = F.build_generator(config)
  P = config.preim3d
  weights = {k: float(F.cfg_get(config.losses, k, 0.0)) for k in ("l2", "lpips", "id")}
  sur_on = float(P.sur_delta) > 0 or float(P.sur_constant) > 0
  nets = F.LossNets(config, any_id=weights["id"] > 0 or sur_on)
  encoder, enc_size = F.make_encoder(config, "wplus", G.num_ws)
  n = G.num_ws
  loss_size = int(F.cfg_get(config.losses, "resolution", enc_size))
  batch_size = int(config.batch_size)
  syn_in = F.synthetic_config(config, "synthetic")
  syn_out = F.synthetic_config(config, "stand_in")
  real_data = bool(F.cfg_get(config.data, "path", ""))
  real_source = str(F.cfg_get(P, "real", ""))
  if real_source not in ("", "world"):
    raise ValueError(f"preim3d.real: expected '' (data.path, else config.stand_in's generated "
                     f"images) or 'world', got {real_source!r}")
  if real_source == "world" and real_data:
    raise ValueError("preim3d.real='world' and data.path both name the real images: pick one")
  if real_source == "world" and G.config.z_dim != world.Z_DIM:
    raise ValueError(f"preim3d.real='world' needs a generator of the world (z_dim {world.Z_DIM}), "
                     f"got z_dim {G.config.z_dim}")
  views = int(P.views)
  sur_yaw, sur_pitch = math.radians(float(P.sur_yaw)), math.radians(float(P.sur_pitch))

  def init(key):
    k_e, k_n = jax.random.split(key)
    params, model_state = F.init_encoder(config, encoder, enc_size, k_e)
    frozen = dict(G=G, w_avg=F.w_avg_of(G), nets=nets.init(k_n, loss_size))
    return TaskInit(params=dict(encoder=params), model_state=model_state, frozen=frozen)

  def make_batch(frozen, key, step, host_batch):
    k_in, k_out = jax.random.split(key)

    def in_domain():
      b = F.generated(frozen["G"], k_in, batch_size, syn_in, enc_size, loss_size)
      return dict(b, in_domain=jnp.float32(1.0))

    def out_domain():
      if host_batch is not None:
        b = F.real(host_batch, enc_size, loss_size, n)
      elif real_source == "world":
        k_z, k_c = jax.random.split(k_out)
        c = synthetic.sample_poses(k_c, batch_size, syn_out.poses)
        img = world.render_jit(world.sample_z(k_z, batch_size), c, G.config.img_resolution)
        b = F.real(dict(image=img["image"], c=c), enc_size, loss_size, n)
      else:
        b = F.generated(frozen["G"], k_out, batch_size, syn_out, enc_size, loss_size)
        b["ws"] = jnp.zeros_like(b["ws"])  # not a target: stands in for a real photo
      return dict(b, in_domain=jnp.float32(0.0))

    return jax.lax.cond(step % 2 == 0, in_domain, out_domain)

  def multi_view_id(frozen, ws, batch, key):
    b = ws.shape[0]
    k_y, k_p, k_r = jax.random.split(key, 3)
    yaw, pitch = synthetic.pose_angles(batch["c"])
    dy = jax.random.uniform(k_y, (views, b), minval=-sur_yaw, maxval=sur_yaw)
    dp = jax.random.uniform(k_p, (views, b), minval=-sur_pitch, maxval=sur_pitch)
    c_sur = synthetic.look_at_labels((yaw[None] + dy).reshape(-1), (pitch[None] + dp).reshape(-1))
    ws_t = jnp.broadcast_to(ws[None], (views,) + ws.shape).reshape((-1,) + ws.shape[1:])
    y_sur = F.render(frozen["G"], ws_t, c_sur, k_r, loss_size)
    y_t = jnp.broadcast_to(batch["y"][None], (views,) + batch["y"].shape).reshape(y_sur.shape)
    return nets.id_loss(frozen["nets"], y_sur, y_t)

  def loss_fn(params, model_state, frozen, batch, key, step):
    k_render, k_views = jax.random.split(key)
    codes, model_state = F.apply_encoder(encoder, params["encoder"], model_state, batch["x"])
    ws = codes + frozen["w_avg"]
    y_hat = F.render(frozen["G"], ws, batch["c"], k_render, loss_size)
    total, terms = F.image_terms(nets, frozen["nets"], y_hat, batch["y"], weights)
    lam_w = ramp(step, int(P.w_start), int(P.w_every), float(P.w_delta), int(P.w_max_increments))
    terms["w_rec"] = adv.latent_regression_loss(ws, batch["ws"]) * batch["in_domain"]
    total = total + lam_w * terms["w_rec"]
    if sur_on:
      lam_sur = ramp(step, int(P.sur_start), int(P.sur_every), float(P.sur_delta),
                     constant=float(P.sur_constant))
      terms["id_multi"] = jax.lax.cond(lam_sur > 0,
                                       lambda: multi_view_id(frozen, ws, batch, k_views),
                                       lambda: jnp.zeros((), jnp.float32))
      total = total + lam_sur * terms["id_multi"]
      terms["lambda_sur"] = lam_sur
    terms["lambda_w"] = lam_w
    terms["in_domain"] = batch["in_domain"]
    return total, dict(metrics=terms, model_state=model_state)

  def preview(params, model_state, frozen, batch):
    codes = encoder.apply({"params": params["encoder"], **model_state}, batch["x"])
    return F.preview_images(frozen["G"], codes + frozen["w_avg"], batch, loss_size)

  return Task(name="preim3d", init=init, phases=(Phase("encoder", loss_fn),),
              optimizers=dict(encoder=make_optimizer(config.optimizer)), make_batch=make_batch,
              needs_real_data=real_data, preview=preview, in_domain_metric="l2")
