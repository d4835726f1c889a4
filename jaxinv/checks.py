"""Input checks shared by every public boundary.

Each check raises ``ValueError``/``TypeError`` with a message that names the argument, what was
expected and what arrived. Nothing is coerced silently: a check either passes the value through
unchanged or refuses it. This module imports nothing from jaxinv, so every layer may use it.

Where the checks run:

* **Shape and dtype** checks always run, also under ``jax.jit`` (they read static metadata).
* **Value** checks (NaN/inf, ranges, camera rows) need the values:

  - numpy arrays and Python numbers are checked on the host;
  - concrete ``jax.Array`` inputs are reduced **on their device** to a few scalars, and only those
    scalars are fetched (explicitly, so ``jax.transfer_guard("disallow")`` is satisfied); the array
    itself never travels to the host;
  - inside ``jax.jit`` / ``grad`` / ``vmap`` the values are tracers and **no value check runs** --
    unless the traced function is wrapped with :func:`checked`, which turns every value check into a
    ``jax.experimental.checkify`` check whose error the caller throws::

        err, out = jax.jit(checks.checked(lambda ws, c: G.synthesis(ws, c)))(ws, c)
        err.throw()   # ValueError-like JaxRuntimeError naming the argument, if a check failed
"""
from __future__ import annotations

import contextvars
import functools
from typing import Callable, Sequence

import numpy as np

_CHECKIFY = contextvars.ContextVar("jaxinv_checkify", default=False)


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


def is_tracer(x) -> bool:
  """True when ``x`` is an abstract value inside a jax transformation (jit, grad, vmap, ...)."""
  if not hasattr(x, "shape") or isinstance(x, np.ndarray):
    return False
  import jax
  return isinstance(x, jax.core.Tracer)


def is_concrete(x) -> bool:
  """True when ``x`` holds values (not a tracer inside jit/grad). Never copies ``x``."""
  return not is_tracer(x)


def _is_device_array(x) -> bool:
  if isinstance(x, np.ndarray) or not hasattr(x, "shape"):
    return False
  import jax
  return isinstance(x, jax.Array)


@functools.lru_cache(maxsize=None)
def _device_stats_fn():
  import jax
  import jax.numpy as jnp

  def stats(a):
    a = a.astype(jnp.float32) if not jnp.issubdtype(a.dtype, jnp.floating) else a
    finite = jnp.isfinite(a)
    big = jnp.asarray(jnp.inf, a.dtype)
    lo = jnp.min(jnp.where(finite, a, big), initial=big)
    hi = jnp.max(jnp.where(finite, a, -big), initial=-big)
    return jnp.all(finite), lo, hi

  return jax.jit(stats)


def value_stats(x) -> tuple[bool, float, float]:
  """``(all finite, min, max)`` of ``x`` over its finite entries (``(True, inf, -inf)`` if empty).

  A concrete ``jax.Array`` is reduced on its device and only the three scalars are fetched
  (explicitly: allowed under ``jax.transfer_guard("disallow")``). Not for tracers.
  """
  if _is_device_array(x):
    import jax
    with jax.ensure_compile_time_eval():  # a concrete input inside someone's jit trace
      finite, lo, hi = jax.device_get(_device_stats_fn()(x))
    return bool(finite), float(lo), float(hi)
  a = np.asarray(x)
  if not np.issubdtype(a.dtype, np.floating):
    a = a.astype(np.float64)
  finite = np.isfinite(a)
  if not finite.any():
    return bool(finite.all()), float("inf"), float("-inf")
  v = a[finite]
  return bool(finite.all()), float(v.min()), float(v.max())


def _traced_check(pred: Callable, x, message: str) -> None:
  """Under :func:`checked`, a checkify check of ``pred(x)``; otherwise nothing (see module doc)."""
  if not _CHECKIFY.get():
    return
  from jax.experimental import checkify
  checkify.check(pred(x), message.replace("{", "{{").replace("}", "}}"))


def check_finite(x, name: str) -> None:
  """Refuses NaN/inf (on the host for numpy, on the device for jax arrays; under jit only
  inside :func:`checked`)."""
  if is_tracer(x):
    import jax.numpy as jnp
    _traced_check(lambda a: jnp.all(jnp.isfinite(a)), x, f"{name}: contains NaN or inf")
    return
  if not value_stats(x)[0]:
    raise ValueError(f"{name}: contains NaN or inf")


def check_range(x, name: str, lo: float, hi: float, tol: float = 1e-3,
                hint: str = " (images are float NHWC in [-1, 1] inside jaxinv)") -> None:
  """Refuses NaN/inf and values outside ``[lo - tol, hi + tol]`` (value checks: see module doc)."""
  msg = f"{name}: values must lie in [{lo}, {hi}]"
  if is_tracer(x):
    import jax.numpy as jnp
    _traced_check(lambda a: jnp.all((a >= lo - tol) & (a <= hi + tol)), x, msg + hint)
    return
  finite, amin, amax = value_stats(x)
  if not finite:
    raise ValueError(f"{name}: contains NaN or inf" + hint)
  if amin < lo - tol or amax > hi + tol:
    raise ValueError(f"{msg}, got [{amin:.4g}, {amax:.4g}]{hint}")


def require(x, name: str, pred: Callable, message: str) -> None:
  """A custom value check: ``pred(xp, x)`` -> boolean array (``xp`` = numpy or jax.numpy), all of
  which must be true. Runs on the device for jax arrays (one scalar fetched), on the host for numpy,
  and under jit only inside :func:`checked`. Pass a module-level ``pred``: its compiled form is
  cached by identity."""
  if is_tracer(x):
    import jax.numpy as jnp
    _traced_check(lambda a: jnp.all(pred(jnp, a)), x, f"{name}: {message}")
    return
  if _is_device_array(x):
    import jax
    with jax.ensure_compile_time_eval():
      ok = jax.device_get(_require_fn(pred)(x))
  else:
    ok = np.all(pred(np, np.asarray(x)))
  if not bool(ok):
    raise ValueError(f"{name}: {message}")


@functools.lru_cache(maxsize=64)
def _require_fn(pred):
  import jax
  import jax.numpy as jnp
  return jax.jit(lambda a: jnp.all(pred(jnp, a)))


def checked(fn: Callable) -> Callable:
  """``fn`` with jaxinv's value checks active while it is traced, via ``checkify``.

  Returns ``f(*args) -> (error, out)``; ``error.throw()`` raises if any check failed. Use it
  inside ``jax.jit`` (``jax.jit(checked(fn))``) to keep value checks in compiled code; each check
  costs a reduction over its argument.
  """
  from jax.experimental import checkify

  @functools.wraps(fn)
  def with_checks(*args, **kwargs):
    token = _CHECKIFY.set(True)
    try:
      return fn(*args, **kwargs)
    finally:
      _CHECKIFY.reset(token)

  return checkify.checkify(with_checks, errors=checkify.user_checks)


def check_image(x, name: str, channels: int = 3, size: tuple[int, int] | None = None,
                value_range: tuple[float, float] | None = (-1.0, 1.0)) -> None:
  """Checks a float NHWC image batch ``[B, H, W, C]``.

  Catches the common mistakes by name: NCHW input (channels first), wrong channel count,
  wrong size, integer pixels, NaN/inf and values outside [-1, 1] (value checks: see module doc).
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
