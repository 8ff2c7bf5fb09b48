"""`doctune sweeps`: hyperparameter sweeps (Ray Tune) and their leaderboards."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Optional

import typer

from doctune.cli.jobs import read_spec
from doctune.cli.output import count_bar, show, wants_table
from doctune.cli.session import ApiKey, Limit, TaskFilter, connect, list_items
from doctune.client import DoctuneClient
from doctune.errors import DoctuneError
from doctune.states import JobState, SweepState

__all__ = ["app"]

app = typer.Typer(help="Hyperparameter sweeps (Ray Tune) and their leaderboards.", no_args_is_help=True)

SWEEP_COLUMNS = ("id", "tenant", "task", "status", "best_job_id")
LEADER_COLUMNS = ("rank", "job_id", "status", "dev", "test", "cost_cpu_seconds", "steps", "settings", "stopped_early")


@app.command("submit")
def sweeps_submit(
    spec: Path = typer.Argument(..., help="SweepSpec YAML file: job, search_space, algorithm, num_samples, ..."),
    dataset: Optional[str] = typer.Option(None, help="Dataset id (overrides job.dataset.id in the file)."),
    watch: bool = typer.Option(True, help="Follow the sweep until it ends, then print its leaderboard."),
    api_key: ApiKey = None,
) -> None:
    """Submit a sweep: Ray Tune runs trials of the job over the search space."""
    body = read_spec(spec, None)
    if dataset:
        body["job"] = {**(body.get("job") or {}), "dataset": {"id": dataset}}
    client = connect(api_key)
    sweep = client.submit_sweep(body)
    typer.echo(f"submitted {sweep['id']}")
    if not watch:
        return
    board = _watch_sweep(client, sweep["id"])
    show(board["trials"], LEADER_COLUMNS)
    typer.echo(f"sweep {sweep['id']} {board['status']}; winner {board['best_job_id']} ({board['metric']})")
    if board["status"] != SweepState.SUCCEEDED:
        raise typer.Exit(1)


def _watch_sweep(client: DoctuneClient, sweep_id: str, poll_s: float = 3.0) -> dict[str, Any]:
    """Count finished trials on a bar until the sweep ends; its final leaderboard."""
    trial_ended, sweep_ended = {s.value for s in JobState.terminal()}, {s.value for s in SweepState.terminal()}
    board = client.sweep_leaderboard(sweep_id)
    with count_bar("trials finished", "trial") as bar:
        while board["status"] not in sweep_ended:
            bar.update(sum(t["status"] in trial_ended for t in board["trials"]) - bar.n)
            time.sleep(poll_s)
            board = client.sweep_leaderboard(sweep_id)
    return board


@app.command("list")
def sweeps_list(
    state: Optional[SweepState] = typer.Option(None, "--state", help="Only sweeps in this state."),
    task: TaskFilter = None,
    limit: Limit = None,
    api_key: ApiKey = None,
) -> None:
    """Your tenant's sweeps, newest first."""
    show(list_items(connect(api_key), "/v1/sweeps", limit, state=state, task=task), SWEEP_COLUMNS)


@app.command("show")
def sweeps_show(sweep_id: str, api_key: ApiKey = None) -> None:
    """A sweep's spec, status and winner."""
    show(connect(api_key).get_sweep(sweep_id))


@app.command("leaderboard")
def sweeps_leaderboard(
    sweep_id: Optional[str] = typer.Argument(None, help="A sweep; without it, --task ranks all your finished jobs."),
    task: Optional[str] = typer.Option(None, help="Rank the tenant's finished jobs of this task (no sweep id)."),
    metric: Optional[str] = typer.Option(None, help="Dev metric to rank on (default: the task's primary metric)."),
    api_key: ApiKey = None,
) -> None:
    """Trials (or a task's jobs) ranked by dev metric, with their settings and cost."""
    client = connect(api_key)
    if sweep_id:
        board = client.sweep_leaderboard(sweep_id)
        rows = board["trials"]
    elif task:
        board = client.request("GET", "/v1/leaderboard", params={"task": task, **({"metric": metric} if metric else {})})
        rows = board["boards"][0]["jobs"] if board["boards"] else []
    else:
        raise DoctuneError("give a sweep id or --task", "invalid_request", field="sweep_id")
    show(rows if wants_table() else board, LEADER_COLUMNS)


@app.command("cancel")
def sweeps_cancel(sweep_id: str, api_key: ApiKey = None) -> None:
    """Cancel a sweep and every trial of it that has not ended; running trials stop at their next progress report."""
    show(connect(api_key).cancel_sweep(sweep_id))
