"""Evaluation: the papers' metrics (:mod:`jaxinv.eval.metrics`), ground-truth novel views on the
procedural world (:mod:`jaxinv.eval.world_views`) and the ``jaxinv eval`` protocol
(:func:`jaxinv.eval.run.evaluate`)."""
from jaxinv.eval import metrics, world_views
from jaxinv.eval.run import EvalWeights, evaluate
