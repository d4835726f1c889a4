"""Training methods: ``TASKS[name](config) -> Task`` (see ``base.py`` for the interface).

Each method lives in its own module with ``build(config) -> Task``. The registry imports a
method's module only when it is asked for, so a half-finished or heavy method never slows down
or breaks ``import jaxinv.train``. To add one: write ``jaxinv/train/tasks/METHOD.py`` with
``build`` and add ``"METHOD": "jaxinv.train.tasks.METHOD"`` to ``_MODULES``.
"""
from __future__ import annotations

import importlib
from typing import Callable, Mapping

from jaxinv.train.tasks.base import Phase, Task, TaskInit

_MODULES = {
    "debug": "jaxinv.train.tasks.debug",
    "psp": "jaxinv.train.tasks.psp",
    "e4e": "jaxinv.train.tasks.e4e",
    "preim3d": "jaxinv.train.tasks.preim3d",
    "goae": "jaxinv.train.tasks.goae",
    "triplanenet": "jaxinv.train.tasks.triplanenet",
    "nerf3de": "jaxinv.train.tasks.nerf3de",
    "toy_eg3d": "jaxinv.train.tasks.toy_eg3d",
    "zignerf": "jaxinv.train.tasks.zignerf",
}


class _Registry(Mapping):
  """``TASKS[name]`` -> that module's ``build``; unknown names get a clear KeyError."""

  def __getitem__(self, name: str) -> Callable[..., Task]:
    if name not in _MODULES:
      raise KeyError(f"unknown task {name!r}; known tasks: {sorted(_MODULES)}")
    try:
      module = importlib.import_module(_MODULES[name])
    except ModuleNotFoundError as e:
      if e.name == _MODULES[name]:
        raise KeyError(f"task {name!r} is registered but {_MODULES[name]} is not written yet") from e
      raise
    return module.build

  def __iter__(self):
    return iter(_MODULES)

  def __len__(self):
    return len(_MODULES)

  def __contains__(self, name):
    return name in _MODULES


TASKS = _Registry()


def build_task(config) -> Task:
  """The ``Task`` named by ``config.task``."""
  task = TASKS[config.task](config)
  if not isinstance(task, Task):
    raise TypeError(f"{_MODULES[config.task]}.build returned {type(task).__name__}, not a Task")
  return task


__all__ = ["TASKS", "Phase", "Task", "TaskInit", "build_task"]
