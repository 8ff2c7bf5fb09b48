"""Jobs: the tenant's jobs with state, progress and why each waits; usage against each quota; and one
job's live view (refreshed by a ``gr.Timer`` while it has not ended): train-loss and dev-metric curves
from its events, the event timeline, the log tail, cancel/pause/resume, where its experiment tracking
is (the `doctune jobs tensorboard` line that serves its TensorBoard logs on the user's machine, and its
MLflow run), and once finished the report (baseline beside fine-tuned, per-class or per-type metrics,
the confusion matrix for classification)."""

from __future__ import annotations

from typing import Any

import gradio as gr
import pandas as pd

from doctune.client import DoctuneClient
from doctune.console.context import Console, action
from doctune.errors import DoctuneError

ENDED = {"succeeded", "failed", "cancelled"}
LIST_COLUMNS = ["id", "name", "task", "status", "progress", "waiting because", "created_at"]
EVENT_COLUMNS = ["at", "kind", "status", "reason", "data"]
LOG_TAIL_CHARS = 6000
REFRESH_S = 3.0


def build(console: Console) -> None:
    usage = console.add("jobs.usage", gr.Dataframe(pd.DataFrame(columns=["quota", "used", "limit"]), label="Usage and quotas",
                                                   interactive=False, elem_id="jobs-usage"))
    table = console.add("jobs.list", gr.Dataframe(pd.DataFrame(columns=LIST_COLUMNS), label="Jobs", interactive=False,
                                                  wrap=True, elem_id="jobs-list"))
    with gr.Row():
        refresh = console.add("jobs.refresh", gr.Button("Refresh", scale=1, elem_id="jobs-refresh"))
        pick = console.add("jobs.pick", gr.Dropdown([], label="Job", allow_custom_value=True, scale=3, elem_id="jobs-pick"))
        cancel = console.add("jobs.cancel", gr.Button("Cancel", variant="stop", scale=1, elem_id="jobs-cancel"))
        pause = console.add("jobs.pause", gr.Button("Pause", scale=1, elem_id="jobs-pause"))
        resume = console.add("jobs.resume", gr.Button("Resume", scale=1, elem_id="jobs-resume"))
    console.writes(cancel, pause, resume)
    view = _build_view(console)
    timer = gr.Timer(REFRESH_S, active=False)
    _wire(console, usage, table, refresh, pick, cancel, pause, resume, view, timer)


def _build_view(console: Console) -> dict[str, Any]:
    v: dict[str, Any] = {"header": console.add("jobs.header", gr.Markdown("", elem_id="jobs-header")),
                         "tracking": console.add("jobs.tracking", gr.Markdown("", elem_id="jobs-tracking"))}
    with gr.Row():
        v["loss"] = console.add("jobs.loss", gr.LinePlot(pd.DataFrame({"step": [], "loss": []}), x="step", y="loss",
                                                         label="Train loss", elem_id="jobs-loss"))
        v["dev"] = console.add("jobs.dev", gr.LinePlot(pd.DataFrame({"step": [], "value": [], "metric": []}), x="step",
                                                       y="value", color="metric", label="Dev metrics", elem_id="jobs-dev"))
    v["report"] = console.add("jobs.report", gr.Dataframe(label="Report: baseline beside fine-tuned (test split)",
                                                          interactive=False, elem_id="jobs-report"))
    with gr.Row():
        v["per_class"] = console.add("jobs.per_class", gr.Dataframe(label="Per class / per type", interactive=False,
                                                                    elem_id="jobs-per-class"))
        v["confusion"] = console.add("jobs.confusion", gr.Dataframe(label="Confusion matrix (rows: gold, columns: predicted)",
                                                                    interactive=False, elem_id="jobs-confusion"))
    with gr.Accordion("Events and log", open=False):
        v["events"] = console.add("jobs.events", gr.Dataframe(pd.DataFrame(columns=EVENT_COLUMNS), label="Events",
                                                              interactive=False, wrap=True, elem_id="jobs-events"))
        v["logs"] = console.add("jobs.logs", gr.Textbox(label="Log tail", lines=12, max_lines=30, elem_id="jobs-logs"))
    return v


def _wire(console: Console, usage, table, refresh, pick, cancel, pause, resume, view, timer) -> None:
    outs = [view[k] for k in ("header", "tracking", "loss", "dev", "report", "per_class", "confusion", "events",
                              "logs")] + [timer]

    @action
    def list_jobs(request: gr.Request):
        client = console.client(request)
        jobs = client.list_jobs(limit=100)
        return (usage_frame(client, console.user(request).tenant, jobs), jobs_frame(jobs),
                gr.update(choices=[(f"{j['id']} · {j['status']}", j["id"]) for j in jobs]))

    @action
    def list_rows(request: gr.Request):
        """The usage and the jobs table, without touching the picker (a live view's tick refreshes
        them, so the row of the job being watched never shows a state its header has left)."""
        return list_jobs(request)[:2]

    @action
    def show_job(job_id: str | None, request: gr.Request):
        if not job_id:
            return [gr.update()] * (len(outs) - 1) + [gr.Timer(active=False)]
        return job_view(console.client(request), job_id)

    def change(verb: str):
        @action
        def act(job_id: str | None, request: gr.Request):
            if not job_id:
                raise DoctuneError(f"Pick a job to {verb}.", "invalid_request", field="job")
            console.client(request).request("POST", f"/v1/jobs/{job_id}/{verb}")
            return [*list_jobs(request), *job_view(console.client(request), job_id)]
        return act

    console.on_sign_in(list_jobs, [usage, table, pick])
    refresh.click(list_jobs, None, [usage, table, pick], api_name="list_jobs")
    pick.change(show_job, [pick], outs, api_name="show_job")
    timer.tick(show_job, [pick], outs, api_visibility="private").then(list_rows, None, [usage, table],
                                                                    api_visibility="private")
    for button, verb in ((cancel, "cancel"), (pause, "pause"), (resume, "resume")):
        button.click(change(verb), [pick], [usage, table, pick, *outs], api_name=f"{verb}_job")


def job_view(client: DoctuneClient, job_id: str) -> list[Any]:
    """What the job view shows, in ``outs`` order; the timer keeps ticking until the job has ended."""
    job = client.get_job(job_id)
    events = _events(client, job_id)
    logs = client.request("GET", f"/v1/jobs/{job_id}/logs")["text"][-LOG_TAIL_CHARS:]
    report, per_class, confusion = report_frames(job)
    return [header(job), tracking(job), loss_frame(events), dev_frame(events), report, per_class, confusion,
            events_frame(events), logs, gr.Timer(active=job["status"] not in ENDED)]


def _events(client: DoctuneClient, job_id: str, most: int = 5000) -> list[dict[str, Any]]:
    events: list[dict[str, Any]] = []
    after = 0
    while len(events) < most:
        page = client.request("GET", f"/v1/jobs/{job_id}/events", params={"after": after, "limit": 1000})
        events += page["events"]
        if len(page["events"]) < 1000:
            return events
        after = page["next_after"]
    return events


def header(job: dict[str, Any]) -> str:
    pr = job.get("progress") or {}
    step, total = pr.get("step"), pr.get("total_steps")
    parts = [f"### {job['id']} · {job['task']} · **{job['status']}**"]
    if step is not None and total:
        parts.append(f"step {step}/{total} ({100 * step / total:.0f}%)"
                     + (f", loss {pr['loss']:.4f}" if isinstance(pr.get("loss"), (int, float)) else "")
                     + (f", about {pr['eta_s'] / 60:.1f} min left" if isinstance(pr.get("eta_s"), (int, float)) else ""))
    if job["status"] == "queued":
        parts.append(f"waiting: {pr.get('queue_reason') or 'for the dispatcher'}")
    if job.get("error"):
        parts.append(f"error: {job['error'].get('message', job['error'])}")
    if job.get("model_id"):
        parts.append(f"model: `{job['model_id']}`")
    best = (job.get("report") or {}).get("best_baseline")
    if best and best.get("margin") is not None:
        parts.append(f"best cheap baseline: {best['name']} {best['metric']} {best['value']:.3f}; "
                     f"fine-tuned {best['margin']:+.3f}")
    return "\n\n".join(parts)


def tracking(job: dict[str, Any]) -> str:
    """Where the job's experiment tracking is: the command that downloads its TensorBoard logs and serves
    them on the user's own machine (the console cannot start a process there), and its MLflow run."""
    if job["status"] == "queued":
        return ""
    lines = [f"**TensorBoard**: `doctune jobs tensorboard {job['id']}` downloads this job's logs (train loss, "
             "learning rate, dev metrics, throughput, memory) and serves them on 127.0.0.1; name more job ids "
             "to compare them."]
    run = (job.get("metrics") or {}).get("mlflow")
    if isinstance(run, dict) and run.get("run_id"):
        lines.append(f"**MLflow**: run `{run['run_id']}` in experiment `{run.get('experiment', '')}`.")
    return "\n\n".join(lines)


def loss_frame(events: list[dict[str, Any]]) -> pd.DataFrame:
    rows = [(e["data"]["step"], e["data"]["loss"]) for e in events if e["kind"] == "progress"
            and isinstance(e["data"].get("step"), (int, float)) and isinstance(e["data"].get("loss"), (int, float))]
    return pd.DataFrame(rows, columns=["step", "loss"])


def dev_frame(events: list[dict[str, Any]]) -> pd.DataFrame:
    """Each dev evaluation's metrics (loss apart: it has its own scale) as (step, value, metric) rows."""
    rows = [(e["data"]["step"], v, k) for e in events if e["kind"] == "eval" and "step" in e["data"]
            for k, v in e["data"].items() if k not in ("step", "loss", "n") and isinstance(v, (int, float))]
    return pd.DataFrame(rows, columns=["step", "value", "metric"])


def events_frame(events: list[dict[str, Any]]) -> pd.DataFrame:
    rows = [[str(e["at"])[:19], e["kind"], e.get("status") or "", e.get("reason") or "",
             ", ".join(f"{k}={_short(v)}" for k, v in (e.get("data") or {}).items())] for e in events[-200:]]
    return pd.DataFrame(rows[::-1], columns=EVENT_COLUMNS)


def _short(v: Any) -> str:
    return f"{v:.4g}" if isinstance(v, float) else str(v)[:60]


def report_frames(job: dict[str, Any]) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """(baseline beside fine-tuned, per-class or per-type metrics, confusion matrix); empty until the job has them."""
    report = job.get("report") or {}
    rows = [[name, *(m.get(k) for k in ("baseline", "fine_tuned"))] for name, m in (report.get("metrics") or {}).items()]
    compare = pd.DataFrame(rows, columns=["metric", f"baseline ({report.get('baseline', '')})", "fine-tuned"])
    test = (job.get("metrics") or {}).get("test") or {}
    per = next((test[k] for k in ("per_class", "per_type", "per_field", "per_relation") if isinstance(test.get(k), dict)), {})
    per_rows = [{"": name, **{k: round(v, 4) if isinstance(v, float) else v for k, v in vals.items()}}
                for name, vals in per.items() if isinstance(vals, dict)]
    matrix = test.get("confusion_matrix") or {}
    labels = matrix.get("labels") or []
    confusion = pd.DataFrame([[gold, *row] for gold, row in zip(labels, matrix.get("matrix") or [])],
                             columns=["gold \\ predicted", *labels])
    return compare, pd.DataFrame(per_rows), confusion


def jobs_frame(jobs: list[dict[str, Any]]) -> pd.DataFrame:
    rows = []
    for j in jobs:
        pr = j.get("progress") or {}
        step, total = pr.get("step"), pr.get("total_steps")
        progress = f"{step}/{total} ({100 * step / total:.0f}%)" if step is not None and total else ""
        waiting = (pr.get("queue_reason") or "") if j["status"] == "queued" else ""
        rows.append([j["id"], j["spec"].get("name") or "", j["task"], j["status"], progress, waiting,
                     str(j.get("created_at") or "")[:19]])
    return pd.DataFrame(rows, columns=LIST_COLUMNS)


def usage_frame(client: DoctuneClient, tenant: str | None, jobs: list[dict[str, Any]]) -> pd.DataFrame:
    """The tenant's use of each quota (a platform admin, who has no tenant, sees the first tenant's usage rows only)."""
    usage = next(iter(client.request("GET", "/v1/usage")["items"]), None) or {}
    quota = client.request("GET", f"/v1/tenants/{tenant}")["quota"] if tenant else {}
    active = [j for j in jobs if j["status"] in ("starting", "running")]
    cpus = sum(_workers(j) * float(((j["spec"].get("resources_per_worker") or {}).get("cpu")) or 1.0) for j in active)
    rows = [("jobs running or starting", len(active), quota.get("max_concurrent_jobs")),
            ("jobs queued", sum(j["status"] == "queued" for j in jobs), quota.get("max_queued_jobs")),
            ("CPUs held by running jobs", cpus, quota.get("max_cpus")),
            ("storage bytes", usage.get("storage_bytes"), quota.get("max_storage_bytes")),
            ("trained tokens", usage.get("trained_tokens"), None),
            ("worker CPU seconds", usage.get("worker_cpu_seconds"), None)]
    return pd.DataFrame([[k, "" if u is None else str(u), "unlimited" if lim is None else str(lim)] for k, u, lim in rows],
                        columns=["quota", "used", "limit"])


def _workers(job: dict[str, Any]) -> int:
    return int(job["spec"].get("num_workers") or 2)
