"""`doctune tasks`: the task plugins the API knows (``GET /v1/tasks``).

The CLI holds no task knowledge of its own: reports ask this route how to label a
metric and which metric heads a task, so a new task plugin shows up in the CLI's
output with no edit here.
"""

from __future__ import annotations

from typing import Any

import typer

from doctune.cli.output import show
from doctune.cli.session import ApiKey, connect, list_items
from doctune.client import DoctuneClient
from doctune.errors import DoctuneError

__all__ = ["app", "task_info"]

app = typer.Typer(help="The task plugins the platform knows, with their metrics.", no_args_is_help=True)

TASK_COLUMNS = ("name", "primary_metric", "metric_names")


@app.command("list")
def tasks_list(api_key: ApiKey = None) -> None:
    """Each task: its name, headline metric and every metric it reports."""
    show(list_items(connect(api_key), "/v1/tasks"), TASK_COLUMNS)


def task_info(client: DoctuneClient, task: str | None) -> dict[str, Any]:
    """What the API says about ``task`` (``primary_metric``, ``metric_labels``, ...); an
    empty dict for a task it does not list, or an API without ``/v1/tasks``."""
    try:
        tasks = list_items(client, "/v1/tasks")
    except DoctuneError as exc:
        if exc.code != "not_found":
            raise
        return {}
    return next((t for t in tasks if t.get("name") == task), {})
