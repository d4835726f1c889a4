"""Records ``reference.npz`` for tests/test_train_bn.py::test_ranger_matches_the_official_step.

The official ``Ranger`` of the pSp family (``training/ranger.py``: RAdam + Lookahead + gradient
centralisation, the same file in eladrich/pixel2style2pixel, omertov/encoder4editing,
mybabyyh/Preim3D and anantarb/triplanenet) run on fixed gradient sequences for a conv weight, a
linear weight, a bias and a parameter with tiny gradients (eps regime), 14 steps (past RAdam's
N_sma threshold at step 6 and two Lookahead syncs at 6 and 12), with weight decay on one group.

  python tests/data/ranger/record.py /path/to/triplanenet   # a checkout holding training/ranger.py
(needs torch; run once, the .npz is committed).
"""
import os
import sys

import numpy as np
import torch

sys.path.insert(0, sys.argv[1])
from training.ranger import Ranger  # noqa: E402

STEPS = 14
rng = np.random.default_rng(0)
shapes = {"conv": (4, 3, 3, 3), "linear": (5, 4), "bias": (5,), "tiny": (3, 2)}
init = {k: rng.normal(size=s).astype(np.float32) for k, s in shapes.items()}
scale = {"conv": 1.0, "linear": 3.0, "bias": 0.5, "tiny": 1e-6}
grads = {k: (rng.normal(size=(STEPS,) + s) * scale[k] + 0.3 * scale[k]).astype(np.float32)
         for k, s in shapes.items()}
out = {}
for wd, tag in ((0.0, "plain"), (0.01, "wd")):
  ps = {k: torch.nn.Parameter(torch.from_numpy(v.copy())) for k, v in init.items()}
  opt = Ranger(list(ps.values()), lr=1e-2, weight_decay=wd)
  traj = {k: [] for k in ps}
  for t in range(STEPS):
    for k, p in ps.items():
      p.grad = torch.from_numpy(grads[k][t].copy())
    opt.step()
    for k, p in ps.items():
      traj[k].append(p.detach().numpy().copy())
  for k in ps:
    out[f"{tag}/{k}"] = np.stack(traj[k])
np.savez(os.path.join(os.path.dirname(os.path.abspath(__file__)), "reference.npz"),
         **{f"init/{k}": v for k, v in init.items()}, **{f"grads/{k}": v for k, v in grads.items()},
         **out)
print("wrote reference.npz")
