"""GOAE's occlusion-aware mixed tri-plane on scenes whose visibility is known analytically."""
import numpy as np
import jax
import jax.numpy as jnp
import pytest

from jaxinv.inversion import goae as goae_inv
from jaxinv.render import rays as rays_lib

# GOAE's frontal camera (``Net.c_front``): at z = 2.7 looking down -z, focal 4.2647.
C_FRONT = np.array([1, 0, 0, 0, 0, -1, 0, 0, 0, 0, -1, 2.7, 0, 0, 0, 1,
                    4.2647, 0, 0.5, 0, 4.2647, 0.5, 0, 0, 1], np.float32)[None]


def _blur_reference(img, sigma, taps=9):
  """Independent 2-D convolution with the outer-product kernel and reflect padding (numpy)."""
  x = np.linspace(-(taps - 1) / 2, (taps - 1) / 2, taps)
  k = np.exp(-0.5 * (x / sigma) ** 2)
  k /= k.sum()
  k2 = np.outer(k, k)
  p = taps // 2
  pad = np.pad(img, p, mode="reflect")
  h, w = img.shape
  out = np.zeros((h, w))
  for i in range(taps):
    for j in range(taps):
      out += k2[i, j] * pad[i:i + h, j:j + w]
  return out


def test_gaussian_blur_matches_2d_reference():
  rng = np.random.default_rng(0)
  img = (rng.random((2, 20, 24)) > 0.7).astype(np.float32)
  got = np.asarray(goae_inv.gaussian_blur(jnp.asarray(img), jnp.array([1.0, 1.7])))
  for b, s in enumerate((1.0, 1.7)):
    np.testing.assert_allclose(got[b], _blur_reference(img[b], s), atol=1e-6)


def test_surface_texels_marks_exactly_the_hit_texels():
  r = 16
  # Points at chosen texel centres of the XY plane (z is irrelevant for plane 0).
  cols = np.array([0, 3, 15, 7])
  rows = np.array([2, 3, 9, 15])
  xy = (np.stack([cols, rows], -1) + 0.5) / r - 0.5
  pts = np.concatenate([xy, np.full((4, 1), 0.3)], -1)[None].astype(np.float32)
  origins = np.zeros_like(pts)
  depth = np.linalg.norm(pts, axis=-1, keepdims=True)
  dirs = pts / depth
  hit = np.asarray(goae_inv.surface_texels(jnp.asarray(origins), jnp.asarray(dirs),
                                           jnp.asarray(depth), r))
  expected = np.zeros((1, r, r), np.float32)
  expected[0, rows, cols] = 1
  np.testing.assert_array_equal(hit, expected)


def _card_scene(resolution=256, card_z=0.2, card_half=0.15, back_z=-0.3):
  """Frontal rays hitting an opaque square card in front of an opaque back wall.

  Returns rays, analytic depth, and the world half-width of the card's shadow on the wall.
  """
  origins, dirs = rays_lib.rays_from_label(jnp.asarray(C_FRONT), resolution)
  o, d = np.asarray(origins, np.float64), np.asarray(dirs, np.float64)
  t_card = (card_z - o[..., 2]) / d[..., 2]
  p_card = o + t_card[..., None] * d
  on_card = np.all(np.abs(p_card[..., :2]) < card_half, axis=-1)
  t_back = (back_z - o[..., 2]) / d[..., 2]
  depth = np.where(on_card, t_card, t_back)[..., None].astype(np.float32)
  shadow = card_half * (2.7 - back_z) / (2.7 - card_z)
  return origins, dirs, jnp.asarray(depth), shadow


def test_card_occludes_the_wall_behind_it():
  """XY texels of the wall hidden behind the card are not visible; card and open wall are."""
  r = 256
  origins, dirs, depth, shadow = _card_scene()
  hit = np.asarray(goae_inv.surface_texels(origins, dirs, depth, r))[0]
  centres = (np.arange(r) + 0.5) / r - 0.5
  cx, cy = np.meshgrid(centres, centres)  # [row, col] -> x = column, y = row
  cheb = np.maximum(np.abs(cx), np.abs(cy))
  one = 1.0 / r
  # The camera frustum meets the wall (z = -0.3) at |x|, |y| <= 3.0 * 0.5 / 4.2647.
  reach = 3.0 * (0.5 - 0.5 / 256) / 4.2647
  assert np.all(hit[cheb < 0.15 - one] == 1), "the card itself must be visible"
  annulus = (cheb > 0.15 + one) & (cheb < shadow - one)
  assert annulus.sum() > 500
  assert np.all(hit[annulus] == 0), "wall texels in the card's shadow must be occluded"
  open_wall = (cheb > shadow + one) & (cheb < reach - one)
  assert np.all(hit[open_wall] == 1), "the wall outside the shadow must be visible"

  mask = np.asarray(goae_inv.visibility_mask(origins, dirs, depth, r, sigmas=(1.5, 1.5)))[0]
  assert mask.min() >= 0 and mask.max() <= 1 + 1e-6
  assert np.all(mask[cheb < 0.15 - 6 * one] > 1 - 1e-5)
  assert np.all(mask[(cheb > shadow + 6 * one) & (cheb < reach - 6 * one)] > 1 - 1e-5)
  mid = np.abs(cheb - (0.15 + shadow) / 2) < 0.5 * one
  assert mid.sum() > 0 and np.all(mask[mid] < 0.1), mask[mid].max()


def test_mix_takes_refined_plane0_only_where_visible():
  r, c = 256, 2
  origins, dirs, depth, shadow = _card_scene()
  mask = goae_inv.visibility_mask(origins, dirs, depth, r, sigmas=(1.2, 1.8))
  rng = np.random.default_rng(1)
  pf = jnp.asarray(rng.normal(size=(1, 3, r, r, c)).astype(np.float32))
  pw = jnp.asarray(rng.normal(size=(1, 3, r, r, c)).astype(np.float32))
  mix = np.asarray(goae_inv.mix_triplanes(pf, pw, mask))
  m = np.asarray(mask)[0, :, :, None]
  np.testing.assert_allclose(mix[0, 0], m * pf[0, 0] + (1 - m) * pw[0, 0], atol=1e-6)
  np.testing.assert_array_equal(mix[0, 1:], np.asarray(pf)[0, 1:])
  # In the card's shadow plane 0 is the generator's own (w) feature; on the card, the refined one.
  centre_row = r // 2
  col_shadow = int((0.5 + (0.15 + shadow) / 2) * r)
  np.testing.assert_allclose(mix[0, 0, centre_row, col_shadow],
                             np.asarray(pw)[0, 0, centre_row, col_shadow], atol=0.15)
  np.testing.assert_allclose(mix[0, 0, centre_row, r // 2], np.asarray(pf)[0, 0, centre_row, r // 2],
                             atol=1e-5)


def test_mask_is_stochastic_only_through_key_and_carries_no_gradient():
  origins, dirs, depth, _ = _card_scene(resolution=64)
  a = goae_inv.visibility_mask(origins, dirs, depth, 64, key=jax.random.PRNGKey(0))
  b = goae_inv.visibility_mask(origins, dirs, depth, 64, key=jax.random.PRNGKey(0))
  c = goae_inv.visibility_mask(origins, dirs, depth, 64, key=jax.random.PRNGKey(1))
  np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
  assert not np.array_equal(np.asarray(a), np.asarray(c))
  s = goae_inv.blur_sigmas(jax.random.PRNGKey(3), 1000)
  assert float(s.min()) >= 1.0 and float(s.max()) <= 2.0
  g = jax.grad(lambda dd: goae_inv.visibility_mask(origins, dirs, dd, 64).sum())(depth)
  assert np.all(np.asarray(g) == 0)


def test_mix_rejects_mismatched_shapes():
  p = jnp.zeros((1, 3, 8, 8, 4))
  with pytest.raises(ValueError, match="planes_w"):
    goae_inv.mix_triplanes(p, jnp.zeros((1, 3, 8, 8, 5)), jnp.zeros((1, 8, 8)))
  with pytest.raises(ValueError, match="mask"):
    goae_inv.mix_triplanes(p, p, jnp.zeros((1, 4, 4)))
