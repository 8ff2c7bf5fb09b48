"""The registered task plugins as the doors show them, and the check on a ``task`` filter.

Used by the API (``GET /v1/tasks``, and every list that filters on a task) so that a
door learns what tasks exist without importing the plugins itself.
"""

from __future__ import annotations

from typing import Any

from doctune import tasks
from doctune.tasks import get_task, metric_label

# capability flags a plugin may declare; read with getattr so that a plugin without them still lists
CAPABILITIES = ("multiplexable", "quantizable", "text_fields")


def known_task(name: str | None) -> str | None:
    """``name`` unchanged when it is a registered task (or None); else an ``invalid_spec`` error
    naming the field ``task`` and the tasks there are."""
    if name is not None:
        get_task(name)
    return name


def describe_task(name: str) -> dict[str, Any]:
    """A plugin's name, metrics (with how reports label them) and capability flags (None: not declared)."""
    plugin = get_task(name)
    metrics = list(plugin.metric_names)
    view: dict[str, Any] = {
        "name": plugin.name,
        "primary_metric": plugin.primary_metric,
        "metric_names": metrics,
        "metric_labels": {m: metric_label(plugin, m) for m in metrics},
    }
    for flag in CAPABILITIES:
        value = getattr(plugin, flag, None)
        view[flag] = list(value) if isinstance(value, (tuple, list)) else value
    return view


def task_names() -> list[str]:
    """The names of the registered task plugins, sorted."""
    return tasks.task_names()


def list_tasks() -> list[dict[str, Any]]:
    """Every registered task plugin, by name."""
    return [describe_task(name) for name in tasks.task_names()]
