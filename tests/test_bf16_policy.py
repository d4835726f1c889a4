"""The bfloat16 policy (``EG3DConfig.bf16_convs``): where it is on, and how close it stays to float32.

Measured on the EG3D ``tiny`` fixture generator (CPU, half draws, R=32, images in [-1, 1]):
  * 'superresolution' (SR convolutions in bf16): image max |diff| 0.023, mean 0.0035; image_raw,
    depth, feature image and weights are bitwise unchanged (rendering stays float32).
  * bf16 backbone convolutions as well (not offered by the config): planes move by up to 0.32
    (range +-15), which the fixture's density calibration amplifies into image_raw max 0.068 /
    mean 0.0043 and image max 0.11: not safe, so the backbone stays float32.
The parity bound of the SR policy is therefore max 0.05 and mean 0.006 on ``image`` (about 2x the
measured values, ~1/40 of the image range; a wrong layer or a missing cast back moves it by > 0.2).
"""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxinv.ops.modconv import modulated_conv2d
from test_eg3d_generator import fixture_generator, half_draws

IMAGE_MAX = 0.05
IMAGE_MEAN = 0.006


def test_modulated_conv_bf16_stays_float32_outside():
  rng = np.random.default_rng(0)
  x = jnp.asarray(rng.normal(size=(2, 8, 8, 16)), jnp.float32)
  w = jnp.asarray(rng.normal(size=(3, 3, 16, 8)), jnp.float32)
  s = jnp.asarray(rng.normal(size=(2, 16)) + 1, jnp.float32)
  for up in (1, 2):
    ref = modulated_conv2d(x, w, s, up=up, padding=1)
    got = modulated_conv2d(x, w, s, up=up, padding=1, conv_dtype=jnp.bfloat16)
    assert got.dtype == jnp.float32 and got.shape == ref.shape
    err = np.abs(np.asarray(got) - np.asarray(ref)).max() / np.abs(np.asarray(ref)).max()
    assert 0 < err < 2e-2, err  # bf16 really ran (not bitwise equal), and stayed close


def test_sr_bf16_parity_on_the_fixture():
  G, st, cfg = fixture_generator("tiny")
  ws, c = st["synthesis.ws"], st["synthesis.c"]
  r = int(st["synthesis.neural_rendering_resolution"])
  ref = G.synthesis(ws, c, draws=half_draws(2, r, cfg), neural_rendering_resolution=r)
  out = G.replace(bf16_convs="superresolution").synthesis(ws, c, draws=half_draws(2, r, cfg),
                                                         neural_rendering_resolution=r)
  for k in ("image_raw", "image_depth", "feature_image", "weights_sum"):  # rendering: float32
    assert out[k].dtype == jnp.float32
    np.testing.assert_array_equal(np.asarray(out[k]), np.asarray(ref[k]), err_msg=k)
  assert out["image"].dtype == jnp.float32
  err = np.abs(np.asarray(out["image"], np.float64) - np.asarray(ref["image"], np.float64))
  assert 0 < err.max() <= IMAGE_MAX and err.mean() <= IMAGE_MEAN, (err.max(), err.mean())


def test_bf16_switch_is_validated():
  G, _, _ = fixture_generator("tiny")
  with pytest.raises(ValueError, match="bf16_convs"):
    G.replace(bf16_convs="backbone")
  assert G.config.bf16_convs == "none"
  # The switch changes no parameter: the same pytree serves both policies.
  assert G.replace(bf16_convs="superresolution").params is G.params
