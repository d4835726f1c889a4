"""`jaxinv eval` sharded over 2 (host) devices gives the single-device numbers (own process: the
device count is fixed at jax import)."""
import json
import os
import pathlib
import subprocess
import sys

import pytest

import test_eval_world as T
from jaxinv.eval import run as eval_run

ROOT = pathlib.Path(__file__).resolve().parents[1]
CHILD = r"""
import json, sys
sys.path.insert(0, sys.argv[2])
import jax
import test_eval_world as T
from jaxinv.eval import run as eval_run
from jaxinv.inversion import invert as _invert
assert jax.device_count() == 2, jax.devices()
seen = []
def spy(image, **kw):
    seen.append(len(image.sharding.device_set))
    return _invert.invert(image, **kw)
res = eval_run.evaluate(T.METHOD, "world", sys.argv[1], T._weights(), num=2, batch=2,
                        yaws=(0.3,), options=T.OPTS, progress=False, invert_fn=spy)
print(json.dumps(dict(res=res["input_view"], views=res["per_yaw"], seen=seen)))
"""


@pytest.mark.slow
def test_sharded_eval_equals_single_device(tmp_path):
  env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=2", JAX_PLATFORMS="cpu")
  p = subprocess.run([sys.executable, "-c", CHILD, str(tmp_path / "two"), str(ROOT / "tests")],
                     env=env, capture_output=True, text=True, timeout=900)
  assert p.returncode == 0, p.stderr[-3000:]
  two = json.loads(p.stdout.strip().splitlines()[-1])
  assert two["seen"] == [2]          # the batch was split over both devices
  one = eval_run.evaluate(T.METHOD, "world", str(tmp_path / "one"), T._weights(), num=2, batch=2,
                          yaws=(0.3,), options=T.OPTS, progress=False)
  for k, v in one["input_view"].items():
    assert two["res"][k] == pytest.approx(v, rel=1e-4, abs=1e-6), k
  for y, m in one["per_yaw"].items():
    for k, v in m.items():
      assert two["views"][y][k] == pytest.approx(v, rel=1e-4, abs=1e-6), (y, k)
