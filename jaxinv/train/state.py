"""The train state: one pytree that is donated to, and returned by, the jitted train step.

``TrainState`` fields (all arrays; the whole thing is what a checkpoint holds):

``step``        int32 scalar: number of completed steps.
``params``      ``dict[group -> pytree]``: the trainable parameters (float32).
``opt_state``   ``dict[group -> optax state]``: one optimizer state per group.
``model_state`` mutable non-trainable state of the task (BatchNorm running stats, pools, ...).
``rng``         uint32[2]: the run's base PRNG key; step ``s`` uses ``fold_in(rng, s)``, so the
                randomness of a step depends only on (seed, step) and resume is exact.
``nonfinite``   int32[2]: ``(index of the first non-finite metric, step)``; ``(-1, -1)`` while
                every metric has been finite. Sticky: the first failure is kept, so the NaN/Inf
                guard can name the term and step even when it only looks every few steps.

The frozen networks (G, ArcFace, LPIPS) are not part of it: they are passed beside it.
"""
from __future__ import annotations

from typing import Any

import flax.struct
import jax
import jax.numpy as jnp


@flax.struct.dataclass
class TrainState:
  step: jax.Array
  params: dict
  opt_state: dict
  model_state: Any
  rng: jax.Array
  nonfinite: jax.Array


def create(params: dict, model_state, optimizers, seed: int) -> TrainState:
  """A fresh state at step 0 (``optimizers``: group -> optax transformation)."""
  opt_state = {g: optimizers[g].init(params[g]) for g in optimizers}
  # Ranger's Lookahead starts its slow weights as the params arrays themselves: the donated
  # step must never receive one buffer twice.
  opt_state = jax.tree_util.tree_map(jnp.copy, opt_state)
  return TrainState(step=jnp.zeros((), jnp.int32), params=params, opt_state=opt_state,
                    model_state=model_state, rng=jax.random.PRNGKey(seed),
                    nonfinite=jnp.full((2,), -1, jnp.int32))
