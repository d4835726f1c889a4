"""``debug``: a seconds-fast task that exercises every part of the loop (tests, smoke runs).

Regression of ``y = tanh(x @ A) @ B`` (fixed random ``A``, ``B`` in ``frozen``) from
``x ~ N(0, I)`` drawn inside the step, by a 2-layer MLP (group ``net``, Adam) with a
BatchNorm-style running mean of its hidden activations in ``model_state``; a second group
``critic`` (a scalar that tracks the mean loss) is updated by a lazy phase every
``config.critic_every`` steps. ``config.nan_at_step`` (default -1: never) multiplies the loss by
NaN from that step on, to test the NaN/Inf guard. With ``config.data.path`` set (an EG3D
dataset), ``x`` is read from the real images instead (their first ``dim`` pixel values), so the
host data path and its checkpointed position are exercised too. Config fields (besides the
required ones): ``width`` (16), ``dim`` (8), ``lr`` (1e-2), ``critic_every`` (2),
``nan_at_step`` (-1), ``data.path`` ("").
"""
from __future__ import annotations

import jax
import jax.numpy as jnp

from jaxinv.train.optimizers import make_optimizer
from jaxinv.train.tasks.base import Phase, Task, TaskInit


def build(config) -> Task:
  width = int(config.get("width", 16))
  dim = int(config.get("dim", 8))
  lr = float(config.get("lr", 1e-2))
  critic_every = int(config.get("critic_every", 2))
  nan_at = int(config.get("nan_at_step", -1))
  batch_size = int(config.batch_size)
  data = config.get("data", None)
  real = bool(data is not None and data.get("path", ""))

  def init(key):
    ka, kb, k1, k2 = jax.random.split(key, 4)
    frozen = dict(A=jax.random.normal(ka, (dim, dim)) / jnp.sqrt(dim),
                  B=jax.random.normal(kb, (dim, 1)))
    net = dict(w1=jax.random.normal(k1, (dim, width)) / jnp.sqrt(dim), b1=jnp.zeros((width,)),
               w2=jax.random.normal(k2, (width, 1)) / jnp.sqrt(width), b2=jnp.zeros((1,)))
    return TaskInit(params=dict(net=net, critic=dict(c=jnp.zeros(()))),
                    model_state=dict(hidden_mean=jnp.zeros((width,))), frozen=frozen)

  def make_batch(frozen, key, step, host_batch):
    if host_batch is not None:
      x = 3.0 * host_batch["image"].reshape(batch_size, -1)[:, :dim]
    else:
      x = jax.random.normal(key, (batch_size, dim))
    return dict(x=x, y=jnp.tanh(x @ frozen["A"]) @ frozen["B"])

  def predict(net, x):
    h = jnp.tanh(x @ net["w1"] + net["b1"])
    return h @ net["w2"] + net["b2"], h

  def net_loss(params, model_state, frozen, batch, key, step):
    pred, h = predict(params["net"], batch["x"])
    mse = jnp.mean((pred - batch["y"]) ** 2)
    loss = mse * jnp.where(jnp.logical_and(nan_at >= 0, step >= nan_at), jnp.nan, 1.0)
    hm = 0.9 * model_state["hidden_mean"] + 0.1 * jnp.mean(h, axis=0)
    return loss, dict(metrics=dict(mse=mse), model_state=dict(hidden_mean=hm))

  def critic_loss(params, model_state, frozen, batch, key, step):
    pred, _ = predict(params["net"], batch["x"])
    target = jnp.mean((pred - batch["y"]) ** 2)
    gap = (params["critic"]["c"] - target) ** 2
    return gap, dict(metrics=dict(critic_gap=gap))

  def preview(params, model_state, frozen, batch):
    pred, _ = predict(params["net"], batch["x"])
    img = jnp.tanh(jnp.broadcast_to(pred[:, :, None, None], (pred.shape[0], 4, 4, 3)))
    return dict(prediction=img)

  return Task(name="debug", init=init,
              phases=(Phase("net", net_loss), Phase("critic", critic_loss, every=critic_every)),
              optimizers=dict(net=make_optimizer(dict(name="adam", lr=lr)),
                              critic=make_optimizer(dict(name="adam", lr=lr))),
              make_batch=make_batch, preview=preview, in_domain_metric="mse",
              needs_real_data=real)
