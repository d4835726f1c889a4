"""Value checks promised at the public boundary: they run (on the device for jax arrays, never
copying an array to the host), they are honest about jit (skipped unless ``checks.checked``), and a
jitted render under ``jax.transfer_guard("disallow")`` raises nothing."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxinv import checks
from jaxinv.losses import lpips, ssim
from jaxinv.models import eg3d
from jaxinv.render.camera import Camera

R = 16


def _images(lo, hi, shape=(1, 16, 16, 3), seed=0):
  return np.random.default_rng(seed).uniform(lo, hi, shape).astype(np.float32)


def test_ssim_refuses_other_value_scales():
  x, y = _images(0, 255), _images(0, 255, seed=1)
  with pytest.raises(ValueError, match=r"data_range=2.*data_range=255"):
    ssim.ssim(x, y)
  assert np.isfinite(ssim.ssim(x, y, data_range=255.0)).all()
  ok = ssim.ssim(_images(-1, 1), _images(-1, 1, seed=1))
  assert ok.shape == (1,)
  with pytest.raises(ValueError, match="NaN"):
    ssim.ssim(np.full((1, 16, 16, 3), np.nan, np.float32), _images(-1, 1))
  with pytest.raises(ValueError, match="values must lie"):
    ssim.ms_ssim(jnp.asarray(_images(0, 255, (1, 161, 161, 3))),
                 jnp.asarray(_images(0, 255, (1, 161, 161, 3))))


def test_lpips_refuses_nan_before_running():
  x = _images(-1, 1, (1, 64, 64, 3))
  bad = x.copy()
  bad[0, 3, 3, 1] = np.nan
  with pytest.raises(ValueError, match="in1: contains NaN"):
    lpips.lpips_distance(None, x, bad)
  with pytest.raises(ValueError, match="in0: contains NaN"):
    lpips.lpips_distance(None, jnp.asarray(bad), x)


@pytest.mark.parametrize("kw", [dict(yaw=np.nan), dict(pitch=np.inf), dict(radius=np.nan),
                                dict(lookat=(0, np.nan, 0)), dict(focal=np.nan), dict(radius=-1)])
def test_look_at_refuses_non_finite(kw):
  with pytest.raises(ValueError, match="Camera.look_at"):
    Camera.look_at(**kw)


def test_value_stats_on_device_and_host():
  a = np.array([[1.0, -2.0], [np.nan, 3.0]], np.float32)
  assert checks.value_stats(a) == (False, -2.0, 3.0)
  assert checks.value_stats(jnp.asarray(a)) == (False, -2.0, 3.0)
  assert checks.value_stats(np.zeros((0, 3))) == (True, float("inf"), float("-inf"))
  with pytest.raises(ValueError, match="NaN"):
    checks.check_range(a, "a", -5, 5)


def _bad_row_label(batch=1):
  c = np.asarray(Camera.look_at(np.zeros(batch)).label).copy()
  c[:, 12:16] = [0.0, 0.0, 1.0, 1.0]  # last cam2world row is not [0, 0, 0, 1]
  return c


def test_single_label_broadcasts_and_bad_rows_are_refused():
  c = np.asarray(Camera.look_at(0.2).label)
  out = eg3d._check_c(c[0], 3)
  assert out.shape == (3, 25)
  np.testing.assert_array_equal(np.asarray(out)[2], c[0])
  with pytest.raises(ValueError, match="last row"):
    eg3d._check_c(_bad_row_label(2), 2, render=True)
  with pytest.raises(ValueError, match="last row"):
    eg3d._check_c(jnp.asarray(_bad_row_label(2)), 2, render=True)
  eg3d._check_c(np.zeros((2, 25), np.float32), 2)  # conditioning labels: only shape + finite
  with pytest.raises(ValueError, match=r"\[B, 25\].*\[25\]"):
    eg3d._check_c(c[0, :24], 3)


# --- a real (tiny) generator: one build for the module -----------------------------------------

@pytest.fixture(scope="module")
def gen():
  G = eg3d.tiny_eg3d(0)
  z = jax.device_put(np.random.default_rng(0).standard_normal((1, G.z_dim)).astype(np.float32))
  c = jax.device_put(np.asarray(Camera.look_at(0.3).label))
  ws = G.mapping(z, c)
  render = jax.jit(lambda G, ws, c: G.synthesis(ws, c, neural_rendering_resolution=R)["image"])
  render(G, ws, c).block_until_ready()  # compile outside the guard
  G.synthesis(ws, c, neural_rendering_resolution=R)["image"].block_until_ready()
  return G, ws, c, render


def test_preprocess_style_label_goes_straight_into_mapping(gen):
  G, ws, c, _ = gen
  z = np.random.default_rng(0).standard_normal((1, G.z_dim)).astype(np.float32)
  single = np.asarray(c)[0]  # what jaxinv.preprocess returns: [25]
  np.testing.assert_array_equal(np.asarray(G.mapping(z, single)), np.asarray(ws))


def test_jitted_render_under_transfer_guard(gen):
  G, ws, c, render = gen
  bad = jax.device_put(_bad_row_label())
  nan_ws = jax.device_put(np.full(ws.shape, np.nan, np.float32))
  with jax.transfer_guard("disallow"):
    img = render(G, ws, c)
    direct = G.synthesis(ws, c, neural_rendering_resolution=R)["image"]
    # the boundary checks still run on device arrays (and refuse), without copying them
    with pytest.raises(ValueError, match="last row"):
      G.synthesis(ws, bad, neural_rendering_resolution=R)
    with pytest.raises(ValueError, match="ws: contains NaN"):
      G.synthesis(nan_ws, c, neural_rendering_resolution=R)
  np.testing.assert_allclose(np.asarray(img), np.asarray(direct), atol=1e-5)


def test_checked_mode_keeps_value_checks_under_jit(gen):
  G, ws, c, render = gen
  bad = jax.device_put(_bad_row_label())
  # plain jit: no value check can run (documented), the bad camera renders
  assert render(G, ws, bad).shape[0] == 1
  f = jax.jit(checks.checked(lambda ws, c: G.synthesis(ws, c, neural_rendering_resolution=R)))
  err, _ = f(ws, c)
  assert err.get() is None
  err, _ = f(ws, bad)
  with pytest.raises(Exception, match="not a valid camera label"):
    err.throw()


def test_checked_ssim_under_jit():
  f = jax.jit(checks.checked(ssim.ssim))
  err, _ = f(_images(0, 255), _images(0, 255, seed=1))
  with pytest.raises(Exception, match="values must lie"):
    err.throw()
  err, _ = f(_images(-1, 1), _images(-1, 1, seed=1))
  assert err.get() is None
