"""Input checks shared by every public boundary.

Each check raises ``ValueError``/``TypeError`` with a message that names the argument, what was
expected and what arrived. Nothing is coerced silently: a check either passes the value through
unchanged or refuses it. This module imports nothing from jaxinv, so every layer may use it.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np


def _shape(x) -> tuple:
  return tuple(getattr(x, "shape", np.shape(x)))


def check_rank(x, name: str, rank: int, layout: str = "") -> None:
  """Refuses ``x`` unless it has exactly ``rank`` dimensions."""
  s = _shape(x)
  if len(s) != rank:
    hint = f" ({layout})" if layout else ""
    raise ValueError(f"{name}: expected {rank} dimensions{hint}, got shape {s}")


def check_shape(x, name: str, expected: Sequence[int | None], layout: str = "") -> None:
  """Refuses ``x`` unless its shape matches ``expected`` (``None`` matches any size)."""
  s = _shape(x)
  ok = len(s) == len(expected) and all(e is None or e == d for e, d in zip(expected, s))
  if not ok:
    want = "[" + ", ".join("*" if e is None else str(e) for e in expected) + "]"
    hint = f" ({layout})" if layout else ""
    raise ValueError(f"{name}: expected shape {want}{hint}, got {s}")


def check_floating(x, name: str) -> None:
  """Refuses integer/bool arrays where real numbers are expected."""
  # Not getattr(x, "dtype", np.asarray(x).dtype): the default is evaluated eagerly and fails on tracers.
  dt = np.dtype(x.dtype) if hasattr(x, "dtype") else np.asarray(x).dtype
  if not np.issubdtype(dt, np.floating):
    raise TypeError(f"{name}: expected a floating-point array, got dtype {dt}")


def is_concrete(x) -> bool:
  """True when ``x`` holds values (not a tracer inside jit/grad)."""
  try:
    np.asarray(x)
    return True
  except Exception:  # jax tracers refuse conversion
    return False


def check_finite(x, name: str) -> None:
  """Refuses NaN/inf when the values are available (skipped under tracing)."""
  if is_concrete(x) and not np.all(np.isfinite(np.asarray(x))):
    raise ValueError(f"{name}: contains NaN or inf")


def check_range(x, name: str, lo: float, hi: float, tol: float = 1e-3) -> None:
  """Refuses values outside ``[lo - tol, hi + tol]`` when values are available."""
  if not is_concrete(x):
    return
  a = np.asarray(x)
  if a.size and (a.min() < lo - tol or a.max() > hi + tol):
    raise ValueError(
        f"{name}: values must lie in [{lo}, {hi}], got [{a.min():.4g}, {a.max():.4g}]"
        " (images are float NHWC in [-1, 1] inside jaxinv)")


def check_image(x, name: str, channels: int = 3, size: tuple[int, int] | None = None,
                value_range: tuple[float, float] | None = (-1.0, 1.0)) -> None:
  """Checks a float NHWC image batch ``[B, H, W, C]``.

  Catches the common mistakes by name: NCHW input (channels first), wrong channel count,
  wrong size, integer pixels, values outside [-1, 1].
  """
  s = _shape(x)
  if len(s) != 4:
    raise ValueError(f"{name}: expected a batch of images [B, H, W, {channels}], got shape {s}")
  if s[-1] != channels:
    if s[1] == channels:
      raise ValueError(f"{name}: got shape {s}, which looks channels-first (NCHW); "
                       f"jaxinv takes NHWC [B, H, W, {channels}]")
    raise ValueError(f"{name}: expected {channels} channels last [B, H, W, {channels}], got {s}")
  if size is not None and tuple(s[1:3]) != tuple(size):
    raise ValueError(f"{name}: expected spatial size {tuple(size)}, got {tuple(s[1:3])}")
  check_floating(x, name)
  if value_range is not None:
    check_range(x, name, *value_range)
