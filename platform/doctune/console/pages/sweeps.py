"""Sweeps: launch one from a job spec plus a search space (``POST /v1/sweeps``), list the tenant's
sweeps, show a sweep's leaderboard with a plot of each hyperparameter against the dev metric, and
"Promote winner" (``POST /v1/promotions`` with the sweep id) with the champion/challenger comparison."""

from __future__ import annotations

from typing import Any

import gradio as gr
import pandas as pd
import yaml

from doctune.console.context import Console, action
from doctune.errors import DoctuneError
from doctune.spec import SweepSpec

SWEEP_COLUMNS = ["id", "name", "task", "status", "best_job_id", "created_at"]
BOARD_COLUMNS = ["rank", "job_id", "status", "dev", "test", "steps", "cost_cpu_seconds", "stopped_early", "model_id"]
JOB_EXAMPLE = """task: classification
base_model: all-minilm-l6-v2
dataset: {id: <dataset-id>}
tuning: {method: lora}
max_steps: 40
num_workers: 1
"""
SPACE_EXAMPLE = """learning_rate: {type: loguniform, low: 1.0e-4, high: 1.0e-3}
tuning.lora.r: {type: choice, values: [4, 8]}
"""


def _mapping(text: str, field: str) -> dict[str, Any]:
    """A YAML (or JSON) mapping typed into a box, or a field error naming the box."""
    try:
        data = yaml.safe_load(text or "")
    except yaml.YAMLError as e:
        raise DoctuneError(f"{field} is not valid YAML: {str(e).splitlines()[0]}", "invalid_spec", field=field) from None
    if not isinstance(data, dict) or not data:
        raise DoctuneError(f"{field} must be a YAML mapping of fields to values, e.g.\n{JOB_EXAMPLE if field == 'job' else SPACE_EXAMPLE}",
                           "invalid_spec", field=field)
    return data


def sweep_body(job: str, space: str, algorithm: str, num_samples: float, concurrent: float, metric: str, name: str) -> dict[str, Any]:
    """The POST /v1/sweeps body from the form (the API validates it and names every bad field)."""
    body = {"job": _mapping(job, "job"), "search_space": _mapping(space, "search_space"), "algorithm": algorithm,
            "num_samples": int(num_samples or 1), "max_concurrent_trials": int(concurrent or 1)}
    return body | {k: v for k, v in (("metric", (metric or "").strip()), ("name", (name or "").strip())) if v}


def sweeps_table(sweeps: list[dict[str, Any]]) -> pd.DataFrame:
    return pd.DataFrame([{c: s.get(c) if c != "name" else (s.get("spec") or {}).get("name") for c in SWEEP_COLUMNS}
                         for s in sweeps], columns=SWEEP_COLUMNS)


def leaderboard_frames(board: dict[str, Any]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(the ranked trials with one column per setting, the long table of setting, value, dev for the plot)."""
    settings = sorted({k for t in board["trials"] for k in t["settings"]})
    table = pd.DataFrame([{**{c: t.get(c) for c in BOARD_COLUMNS}, **t["settings"]} for t in board["trials"]],
                         columns=BOARD_COLUMNS + settings)
    points = [{"setting": k, "value": float(v), "dev": t["dev"], "job_id": t["job_id"]}
              for t in board["trials"] for k, v in t["settings"].items()
              if t["dev"] is not None and isinstance(v, (int, float)) and not isinstance(v, bool)]
    return table, pd.DataFrame(points, columns=["setting", "value", "dev", "job_id"])


def comparison_markdown(result: dict[str, Any]) -> str:
    champion, challenger = result.get("champion") or {}, result["challenger"]
    fmt = lambda v: "—" if v is None else f"{v:.4f}"  # noqa: E731
    return (f"**{result['decision']}**: {result['summary']}\n\n| | model | test {result['metric']} |\n|---|---|---|\n"
            f"| champion | {champion.get('model_id', '(none)')} | {fmt(champion.get('test'))} |\n"
            f"| challenger | {challenger['model_id']} | {fmt(challenger.get('test'))} |")


def _launch_form(console: Console) -> list[Any]:
    fields = SweepSpec.model_fields
    with gr.Row():
        job = console.add("sweeps.job", gr.Code(JOB_EXAMPLE, language="yaml", label="Job spec (YAML)"))
        space = console.add("sweeps.search_space", gr.Code(SPACE_EXAMPLE, language="yaml", label="Search space (YAML)"))
    with gr.Row():
        algorithm = console.add("sweeps.algorithm", gr.Dropdown(["random", "grid", "asha"], value="random", label="algorithm",
                                                               info=fields["algorithm"].description))
        samples = console.add("sweeps.num_samples", gr.Number(4, precision=0, label="num_samples",
                                                             info=fields["num_samples"].description))
        concurrent = console.add("sweeps.max_concurrent_trials", gr.Number(2, precision=0, label="max_concurrent_trials",
                                                                          info=fields["max_concurrent_trials"].description))
        metric = console.add("sweeps.metric", gr.Textbox(label="metric", info=fields["metric"].description))
        name = console.add("sweeps.name", gr.Textbox(label="name", info=fields["name"].description))
    return [job, space, algorithm, samples, concurrent, metric, name]


def build(console: Console) -> None:
    with gr.Accordion("Launch a sweep", open=False):
        form = _launch_form(console)
        launch = console.add("sweeps.launch", gr.Button("Launch sweep", variant="primary", elem_id="sweeps-launch"))
        launched = gr.Markdown(elem_id="sweeps-launched")
    refresh = console.add("sweeps.refresh", gr.Button("Refresh", elem_id="sweeps-refresh"))
    sweeps = console.add("sweeps.list", gr.Dataframe(headers=SWEEP_COLUMNS, interactive=False, label="Sweeps"))
    chosen = console.add("sweeps.sweep", gr.Dropdown(label="Sweep", choices=[], allow_custom_value=True, elem_id="sweeps-sweep"))
    board = console.add("sweeps.leaderboard", gr.Dataframe(interactive=False, label="Leaderboard"))
    setting = console.add("sweeps.setting", gr.Dropdown(label="Hyperparameter", choices=[]))
    plot = console.add("sweeps.plot", gr.ScatterPlot(x="value", y="dev", label="Hyperparameter vs dev metric",
                                                    tooltip=["job_id", "value", "dev"]))
    points = gr.State(None)
    with gr.Row():
        endpoint = console.add("sweeps.endpoint", gr.Textbox(label="Endpoint to promote to"))
        force = console.add("sweeps.force", gr.Checkbox(label="Force (even if not better)"))
        promote = console.add("sweeps.promote", gr.Button("Promote winner", variant="primary", elem_id="sweeps-promote"))
    comparison = gr.Markdown(elem_id="sweeps-comparison")
    console.writes(launch, promote, endpoint, force)
    _wire(console, form, (launch, launched), (refresh, sweeps, chosen), (board, setting, plot, points),
          (endpoint, force, promote, comparison))


def _wire(console: Console, form: list[Any], launching: tuple, listing: tuple, ranking: tuple, promoting: tuple) -> None:
    launch, launched = launching
    refresh, sweeps, chosen = listing
    board, setting, plot, points = ranking
    endpoint, force, promote, comparison = promoting

    def listed(request: gr.Request):
        rows = console.client(request).list_sweeps(limit=200)
        return [sweeps_table(rows), gr.update(choices=[s["id"] for s in rows])]

    @action
    def sweeps_launch(values: dict[Any, Any], request: gr.Request):
        """``values``: the form's values by component (gradio passes a set of inputs as one dict)."""
        sweep = console.client(request).submit_sweep(sweep_body(*[values[c] for c in form]))
        table, _ = listed(request)
        return [f"Sweep **{sweep['id']}** queued ({sweep['status']}).", table,
                gr.update(choices=list(table["id"]), value=sweep["id"])]

    @action
    def sweeps_refresh(request: gr.Request):
        return listed(request)

    @action
    def sweeps_leaderboard(sweep_id: str, request: gr.Request):
        if not sweep_id:
            return [gr.update(), gr.update(), gr.update(), None]
        table, long = leaderboard_frames(console.client(request).sweep_leaderboard(sweep_id))
        names = sorted(set(long["setting"]))
        first = names[0] if names else None
        return [table, gr.update(choices=names, value=first), _plot(long, first), long.to_dict("records")]

    def sweeps_plot(name: str, rows: Any):
        return _plot(pd.DataFrame(rows or [], columns=["setting", "value", "dev", "job_id"]), name)

    @action
    def sweeps_promote(sweep_id: str, name: str, forced: bool, request: gr.Request):
        if not sweep_id or not (name or "").strip():
            raise DoctuneError("Choose a sweep and name the endpoint to promote its winner to.", "invalid_request",
                               field="endpoint")
        return comparison_markdown(console.client(request).promote(name.strip(), sweep_id=sweep_id, force=bool(forced)))

    launch.click(sweeps_launch, set(form), [launched, sweeps, chosen], api_name="sweeps_launch")
    refresh.click(sweeps_refresh, None, [sweeps, chosen], api_name="sweeps_refresh")
    chosen.change(sweeps_leaderboard, [chosen], [board, setting, plot, points], api_name="sweeps_leaderboard")
    setting.change(sweeps_plot, [setting, points], [plot], api_name="sweeps_plot")
    promote.click(sweeps_promote, [chosen, endpoint, force], [comparison], api_name="sweeps_promote")
    console.on_sign_in(listed, [sweeps, chosen])


def _plot(long: pd.DataFrame, name: str | None) -> Any:
    rows = long[long["setting"] == name] if name else long.iloc[0:0]
    return gr.update(value=rows, x="value", y="dev", title=f"{name or 'setting'} vs dev metric")
