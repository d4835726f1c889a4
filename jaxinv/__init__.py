"""jaxinv: 3D GAN inversion in JAX/Flax.

Public API only; everything heavy is imported on first use so that ``import jaxinv`` stays light.
"""
from __future__ import annotations

import importlib

__version__ = "0.1.0"

# public name -> "module:attribute"
_PUBLIC = {
    "load_generator": "jaxinv.api:load_generator",
    "load_encoder": "jaxinv.api:load_encoder",
    "preprocess": "jaxinv.api:preprocess",
    "Camera": "jaxinv.render.camera:Camera",
    "invert": "jaxinv.api:invert",
    "Inversion": "jaxinv.inversion.result:Inversion",
}

__all__ = sorted(_PUBLIC)


def __getattr__(name):
  if name in _PUBLIC:
    mod, attr = _PUBLIC[name].split(":")
    return getattr(importlib.import_module(mod), attr)
  raise AttributeError(f"module 'jaxinv' has no attribute {name!r}")
