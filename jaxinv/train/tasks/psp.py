"""``psp``: pSp (Richardson et al. 2021) encoder training into a frozen EG3D generator.

Trained: the ``GradualStyleEncoder`` (group ``encoder``, Ranger lr 1e-4, BatchNorm in train mode:
its running statistics are ``model_state``). Frozen: G, LPIPS, ArcFace.
Loss (pSp's ``calc_loss``, its defaults): ``l2 * L2 + lpips * LPIPS + id * ID + w_norm * WNorm``
with 1.0 / 0.8 / 0.1 / 0, on the reconstruction ``G.synthesis(E(x) + w_avg, c)`` at the input
camera. Batches: real images from ``config.data.path`` when set, else in-domain images generated
on device (``config.synthetic``) -- under ``runlocal`` those are the stand-in for real images.
Metrics: ``l2``, ``lpips``, ``id``, ``w_norm`` (unweighted).
"""
from __future__ import annotations

import jax

from jaxinv.train.optimizers import make_optimizer
from jaxinv.train.tasks import psp_family as F
from jaxinv.train.tasks.base import Phase, Task, TaskInit


def build(config) -> Task:
  G = F.build_generator(config)
  weights = {k: float(F.cfg_get(config.losses, k, 0.0)) for k in ("l2", "lpips", "id", "w_norm")}
  nets = F.LossNets(config, any_id=weights["id"] > 0)
  encoder, enc_size = F.make_encoder(config, "psp", G.num_ws)
  loss_size = int(F.cfg_get(config.losses, "resolution", enc_size))
  batch_size = int(config.batch_size)
  syn = F.synthetic_config(config)
  real_data = bool(F.cfg_get(config.data, "path", ""))

  def init(key):
    k_e, k_n = jax.random.split(key)
    params, model_state = F.init_encoder(config, encoder, enc_size, k_e)
    frozen = dict(G=G, w_avg=F.w_avg_of(G), nets=nets.init(k_n, loss_size))
    return TaskInit(params=dict(encoder=params), model_state=model_state, frozen=frozen)

  def make_batch(frozen, key, step, host_batch):
    if host_batch is not None:
      return F.real(host_batch, enc_size, loss_size, G.num_ws)
    return F.generated(frozen["G"], key, batch_size, syn, enc_size, loss_size)

  def loss_fn(params, model_state, frozen, batch, key, step):
    codes, model_state = F.apply_encoder(encoder, params["encoder"], model_state, batch["x"])
    ws = codes + frozen["w_avg"]
    y_hat = F.render(frozen["G"], ws, batch["c"], key, loss_size)
    total, terms = F.image_terms(nets, frozen["nets"], y_hat, batch["y"], weights)
    if weights["w_norm"]:
      terms["w_norm"] = F.w_norm(codes)
      total = total + weights["w_norm"] * terms["w_norm"]
    return total, dict(metrics=terms, model_state=model_state)

  def preview(params, model_state, frozen, batch):
    codes = encoder.apply({"params": params["encoder"], **model_state}, batch["x"])
    return F.preview_images(frozen["G"], codes + frozen["w_avg"], batch, loss_size)

  return Task(name="psp", init=init, phases=(Phase("encoder", loss_fn),),
              optimizers=dict(encoder=make_optimizer(config.optimizer)), make_batch=make_batch,
              needs_real_data=real_data, preview=preview, in_domain_metric="l2")
