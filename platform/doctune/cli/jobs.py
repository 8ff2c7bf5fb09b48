"""`doctune jobs`: plan, submit, follow, list, pause, resume and cancel fine-tuning jobs, and look at
their TensorBoard logs (`jobs tensorboard`).

Also the helpers other commands follow a job with: :func:`read_spec` (a YAML spec
file), :func:`watch_job` (a progress bar until the job ends) and :func:`report_job`
(test metrics beside the baseline's, labelled as the job's task plugin says).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated, Any, Optional

import typer

from doctune.cli.output import show, steps_bar, wants_table
from doctune.cli.session import ApiKey, Limit, TaskFilter, connect, list_items
from doctune.cli.tasks import task_info
from doctune.client import DoctuneClient
from doctune.errors import DoctuneError
from doctune.spec import read_spec_mapping
from doctune.states import JobState

__all__ = ["app", "download_tensorboard", "read_spec", "report_job", "serve_tensorboard", "watch_job"]

app = typer.Typer(help="Submit, follow and cancel fine-tuning jobs.", no_args_is_help=True)

JOB_COLUMNS = ("id", "tenant", "task", "status", "progress.step", "progress.total_steps", "progress.queue_reason",
               "model_id")
EVENT_COLUMNS = ("id", "at", "kind", "status", "reason", "data")
EVENTS_PAGE = 1000  # the most events the API gives per page
TERMINAL = tuple(s.value for s in JobState.terminal())

SpecFile = Annotated[Path, typer.Argument(help="JobSpec YAML file.")]
DatasetId = Annotated[Optional[str], typer.Option("--dataset", help="Dataset id (overrides dataset.id in the file).")]


def read_spec(spec: Path, dataset: str | None) -> dict[str, Any]:
    """A spec file's mapping; ``dataset`` replaces its ``dataset.id``."""
    body = read_spec_mapping(spec)
    if dataset:
        body["dataset"] = {"id": dataset}
    return body


@app.command("plan")
def jobs_plan(spec: SpecFile, dataset: DatasetId = None, api_key: ApiKey = None) -> None:
    """Estimate a job before running it: memory per worker, tokens, steps, time; warns if it won't fit."""
    plan = connect(api_key).plan_job(read_spec(spec, dataset))
    if wants_table():
        typer.echo("\n".join(plan_lines(plan)))
    else:
        show(plan)


def plan_lines(plan: dict[str, Any]) -> list[str]:
    m, t, st = plan["memory_per_worker_mb"], plan["tokens"], plan["steps"]
    lines = [
        f"model       {plan['base_model']}: {plan['model']['parameters']:,} parameters, "
        f"{plan['model']['trainable_parameters']:,} trainable ({plan['model']['method']})",
        f"memory      {m['total_mb'] / 1024:.2f} GiB per worker x {plan['workers']}: parameters {m['parameters_mb']:.0f} MiB, "
        f"gradients {m['gradients_mb']:.0f}, optimizer {m['optimizer_mb']:.0f}, activations {m['activations_mb']:.0f}, "
        f"runtime {m['runtime_mb']:.0f}",
        f"data        {plan['dataset']['train']} train documents, {t['tokens_per_epoch']:,} tokens per epoch "
        f"({t['truncated_documents']} truncated)",
        f"steps       {st['total']} ({st['per_epoch']} per epoch, {st['examples_per_step']} examples each), "
        f"{st['evaluations']} evaluations",
    ]
    est = plan["expected_time"]
    lines.append(f"time        about {est['total_s'] / 60:.1f} min ({est['basis']})" if est else "time        unknown")
    if target := plan.get("expected_time_to_target"):
        lines.append(f"to target   about {target['total_s'] / 60:.1f} min ({target['basis']})")
    lines += [f"warning     {w}" for w in plan["warnings"]]
    lines.append("fits        yes" if plan["fits"] else "fits        NO")
    return lines


@app.command("submit")
def jobs_submit(
    spec: SpecFile,
    dataset: DatasetId = None,
    watch: bool = typer.Option(True, help="Follow the job with a progress bar."),
    api_key: ApiKey = None,
) -> None:
    """Submit a fine-tuning job from a YAML spec."""
    client = connect(api_key)
    job = client.submit_job(read_spec(spec, dataset))
    typer.echo(f"submitted {job['id']}")
    if watch:
        job = watch_job(client, job["id"])
        report_job(client, job)
        if job["status"] != JobState.SUCCEEDED:
            raise typer.Exit(1)


@app.command("token")
def jobs_token(
    spec: SpecFile,
    quiet: bool = typer.Option(False, "--quiet", "-q", help="Print the token only (for TOKEN=$(doctune jobs token ...))."),
    api_key: ApiKey = None,
) -> None:
    """Mint a one-time token for `ray job submit` of this exact spec file (your tenant, 10 minutes),
    and print the `ray job submit` line that uses it."""
    minted = connect(api_key).request("POST", "/v1/jobs/tokens", json=read_spec(spec, None))
    if quiet:
        typer.echo(minted["token"])
        return
    show({**minted, "command": ray_submit_line(spec, minted["token"], minted.get("ray_address"))})


def ray_submit_line(spec: Path, token: str, ray_address: str | None) -> str:
    """The `ray job submit` line for a spec file: its folder travels with the job (``--working-dir``),
    and the job runs the platform's Python, which has doctune and ray_jobs."""
    import os
    import shlex

    folder = os.path.relpath(spec.resolve().parent) if spec.resolve().parent != Path.cwd().resolve() else "."
    address = f"--address {shlex.quote(ray_address)} " if ray_address else ""
    return (f"ray job submit {address}--working-dir {shlex.quote(folder)} -- python -m ray_jobs.finetune "
            f"--spec {shlex.quote(spec.name)} --token {shlex.quote(token)}")


@app.command("list")
def jobs_list(
    state: Optional[JobState] = typer.Option(None, "--state", help="Only jobs in this state."),
    task: TaskFilter = None,
    limit: Limit = None,
    api_key: ApiKey = None,
) -> None:
    """Your tenant's jobs (sweep trials too), newest first."""
    show(list_items(connect(api_key), "/v1/jobs", limit, state=state, task=task), JOB_COLUMNS)


@app.command("show")
def jobs_show(job_id: str, api_key: ApiKey = None) -> None:
    """A job's spec, status, progress, metrics and report."""
    show(connect(api_key).get_job(job_id))


app.command("get", help="Same as `jobs show`.")(jobs_show)


@app.command("report")
def jobs_report(job_id: str, api_key: ApiKey = None) -> None:
    """A finished job's test metrics beside its baselines' (`-o table` for the printed report); exit 1 unless it succeeded."""
    client = connect(api_key)
    job = client.get_job(job_id)
    if wants_table():
        report_job(client, job)
    else:
        show({"id": job["id"], "status": job["status"], "report": job.get("report")})
    if job["status"] != JobState.SUCCEEDED:
        raise typer.Exit(1)


@app.command("events")
def jobs_events(job_id: str, after: int = typer.Option(0, help="Only events after this event id."), limit: Limit = None,
                api_key: ApiKey = None) -> None:
    """A job's events, oldest first (status changes with reasons, progress, evals, checkpoints)."""
    client, events = connect(api_key), []
    while limit is None or len(events) < limit:
        size = EVENTS_PAGE if limit is None else min(EVENTS_PAGE, limit - len(events))
        page = client.request("GET", f"/v1/jobs/{job_id}/events",
                              params={"after": events[-1]["id"] if events else after, "limit": size})
        events += page["events"]
        if len(page["events"]) < size:
            break
    page = {"events": events, "next_after": events[-1]["id"] if events else after}
    show(events if wants_table() else page, EVENT_COLUMNS)


@app.command("logs")
def jobs_logs(job_id: str, follow: bool = typer.Option(False, "--follow", "-f", help="Keep printing until the job ends."),
              api_key: ApiKey = None) -> None:
    """The job's Ray driver log; -f follows it."""
    client = connect(api_key)
    offset = 0
    while True:
        chunk = client.request("GET", f"/v1/jobs/{job_id}/logs", params={"offset": offset})
        typer.echo(chunk["text"], nl=False)
        offset = chunk["offset"]
        if not follow:
            return
        if client.get_job(job_id)["status"] in TERMINAL:  # then print what the driver wrote last
            typer.echo(client.request("GET", f"/v1/jobs/{job_id}/logs", params={"offset": offset})["text"], nl=False)
            return
        time.sleep(2)


@app.command("pause")
def jobs_pause(job_id: str, api_key: ApiKey = None) -> None:
    """Pause a job: a running one checkpoints at its next step and stops."""
    show(connect(api_key).request("POST", f"/v1/jobs/{job_id}/pause"))


@app.command("resume")
def jobs_resume(job_id: str, api_key: ApiKey = None) -> None:
    """Re-queue a paused job; it continues from its pause checkpoint."""
    show(connect(api_key).request("POST", f"/v1/jobs/{job_id}/resume"))


@app.command("cancel")
def jobs_cancel(job_id: str, api_key: ApiKey = None) -> None:
    """Cancel a queued or running job."""
    show(connect(api_key).cancel_job(job_id))


@app.command("delete-checkpoints")
def jobs_delete_checkpoints(job_id: str, api_key: ApiKey = None) -> None:
    """Delete an ended job's checkpoints (its metrics and model stay); frees storage quota."""
    show(connect(api_key).delete_checkpoints(job_id))


@app.command("tensorboard")
def jobs_tensorboard(
    job_ids: list[str] = typer.Argument(..., metavar="JOB...", help="Job ids: one TensorBoard run each."),
    logdir: Optional[Path] = typer.Option(None, "--logdir", help="Download into this folder (default: a new "
                                                                 "temporary folder)."),
    serve: bool = typer.Option(True, "--serve/--no-serve", help="Serve the logs with TensorBoard on 127.0.0.1 "
                                                                "until Ctrl-C (--no-serve: download only)."),
    port: int = typer.Option(0, "--port", min=0, max=65535, help="TensorBoard's port (0: a free one)."),
    api_key: ApiKey = None,
) -> None:
    """Download jobs' TensorBoard logs (train loss, learning rate, dev metrics, throughput, memory), one folder
    per job, and serve them with TensorBoard on 127.0.0.1, printing its URL."""
    import tempfile

    client = connect(api_key)
    if logdir is None:  # under the user's own cache, not the shared /tmp where another user could read them
        base = Path.home() / ".cache" / "doctune" / "tensorboard"
        base.mkdir(parents=True, exist_ok=True, mode=0o700)
    out = logdir or Path(tempfile.mkdtemp(prefix="run-", dir=base))
    runs = download_tensorboard(client, job_ids, out)
    typer.echo(f"downloaded {sum(runs.values())} event files of {len(runs)} job(s) into {out}", err=True)
    if not serve:
        typer.echo(str(out))
        return
    proc, url = serve_tensorboard(out, port)
    typer.echo(f"TensorBoard at {url} (Ctrl-C stops it)")
    try:
        proc.wait()
    except KeyboardInterrupt:
        pass
    finally:
        stop_tensorboard(proc)


def run_folder(job: dict[str, Any]) -> str:
    """A job's folder (its TensorBoard run name): ``<name>-<id>``, or the id of a job without a name."""
    import re

    name = re.sub(r"[^A-Za-z0-9._-]+", "-", (job.get("spec") or {}).get("name") or "").strip("-.")[:80]
    return f"{name}-{job['id']}" if name else job["id"]


def download_tensorboard(client: DoctuneClient, job_ids: list[str], out: Path) -> dict[str, int]:
    """Each job's TensorBoard files (``GET /v1/jobs/{id}/tensorboard``: presigned URLs) into a folder of
    ``out`` per job (:func:`run_folder`); {folder: files}. A job with none yet is said on stderr."""
    import httpx

    runs: dict[str, int] = {}
    for job_id in dict.fromkeys(job_ids):
        job = client.get_job(job_id)
        files = client.request("GET", f"/v1/jobs/{job_id}/tensorboard")
        folder = out / run_folder(job)
        folder.mkdir(parents=True, exist_ok=True)
        if not files:
            typer.secho(f"job {job_id} ({job['status']}) has no TensorBoard files yet: its driver writes them at "
                        "each evaluation and checkpoint", fg="yellow", err=True)
        for f in files:
            if not f["path"] or "/" in f["path"] or "\\" in f["path"] or f["path"].startswith("."):
                raise DoctuneError(f"job {job_id}'s TensorBoard file {f['path']!r} is not a plain file name; nothing "
                                   "was written for it", "invalid_request", field="path")
            target = folder / f["path"]
            with httpx.stream("GET", f["url"], timeout=120) as r, open(target, "wb") as fh:
                if r.status_code >= 400:
                    raise DoctuneError(f"downloading {f['path']} of job {job_id} failed: HTTP {r.status_code}; "
                                       "presigned URLs are short-lived, so run the command again", "unavailable")
                for chunk in r.iter_bytes():
                    fh.write(chunk)
        runs[folder.name] = len(files)
    return runs


def serve_tensorboard(logdir: Path, port: int = 0, start_s: float = 120.0) -> tuple[Any, str]:
    """Start TensorBoard (this Python's ``tensorboard`` package) on 127.0.0.1 over ``logdir``; (its process,
    its URL) once it answers. Its output goes to ``logdir/tensorboard.log``."""
    import socket
    import subprocess
    import sys

    import httpx

    if not port:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
    url = f"http://127.0.0.1:{port}/"
    log = logdir / "tensorboard.log"
    with open(log, "wb") as fh:
        proc = subprocess.Popen([sys.executable, "-m", "tensorboard.main", "--logdir", str(logdir), "--host",
                                 "127.0.0.1", "--port", str(port), "--reload_interval", "5"],
                                stdout=fh, stderr=subprocess.STDOUT, start_new_session=True)
    deadline = time.monotonic() + start_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise DoctuneError(f"TensorBoard exited at start: {log.read_text(errors='replace')[-1500:]}", "unavailable")
        try:
            if httpx.get(url, timeout=2).status_code == 200:
                return proc, url
        except httpx.TransportError:
            pass
        time.sleep(0.5)
    stop_tensorboard(proc)
    raise DoctuneError(f"TensorBoard did not answer at {url} within {start_s:.0f} s; its log: {log}", "unavailable")


def stop_tensorboard(proc: Any) -> None:
    """Stop a TensorBoard that :func:`serve_tensorboard` started."""
    import subprocess

    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)


# ------------------------------------------------------------------- following a job
def watch_job(client: DoctuneClient, job_id: str, poll_s: float = 2.0) -> dict[str, Any]:
    """Follow a job with a progress bar (step, loss, dev metric, ETA) until it ends."""
    bar = None
    job = client.get_job(job_id)
    try:
        while job["status"] not in TERMINAL:
            pr = job.get("progress") or {}
            if bar is None and pr.get("total_steps"):
                bar = steps_bar(pr["total_steps"])
            if bar is not None:
                bar.n = min(pr.get("step", 0), bar.total)
                bar.set_postfix(_progress_postfix(pr), refresh=False)
                bar.refresh()
            time.sleep(poll_s)
            job = client.get_job(job_id)
        if bar is not None and job["status"] == JobState.SUCCEEDED:
            bar.n = bar.total
            bar.refresh()
    finally:
        if bar is not None:
            bar.close()
    return job


def _progress_postfix(pr: dict[str, Any]) -> dict[str, str]:
    post = {"phase": pr.get("phase", "")}
    if pr.get("loss") is not None:
        post["loss"] = f"{pr['loss']:.3f}"
    metric = pr.get("primary_metric")
    value = (pr.get("history") or [{}])[-1].get(metric) if metric else None
    if value is not None:
        post[f"dev_{metric}"] = f"{value:.3f}"
    return post


def best_baseline_line(best: dict[str, Any]) -> str:
    """The report's ``best_baseline`` as one line: ``best cheap baseline: tfidf_logreg macro_f1 0.912; fine-tuned +0.041``."""
    margin = "" if best.get("margin") is None else f"; fine-tuned {best['margin']:+.3f}"
    return f"best cheap baseline: {best['name']} {best['metric']} {best['value']:.3f}{margin}"


def report_job(client: DoctuneClient, job: dict[str, Any]) -> None:
    """Print a job's test metrics beside the baseline's (and model-free references), the best cheap
    baseline with the fine-tuned margin over it, then its headline metric under the label its task
    plugin gives it (``GET /v1/tasks``)."""
    if job["status"] != JobState.SUCCEEDED:
        err = job.get("error") or {}
        typer.secho(f"job {job['id']} {job['status']}: {err.get('message', '')}", fg="red", err=True)
        return
    m, report = job["metrics"], job.get("report") or {}
    typer.echo(f"job {job['id']} succeeded after {m['step']} steps (model {job['model_id']})")
    refs = report.get("references") or []  # model-free baselines, e.g. lead-1
    typer.echo(f"test split ({report.get('examples')} examples)   "
               f"base model, {report.get('baseline', 'untrained_head').replace('_', ' ')}   "
               + "".join(f"{r:>10}   " for r in refs) + "fine-tuned")
    for name, row in report.get("metrics", {}).items():
        base = "-" if row["baseline"] is None else f"{row['baseline']:.3f}"
        extra = "".join("-".rjust(10) + "   " if row.get(r) is None else f"{row[r]:>10.3f}   " for r in refs)
        typer.echo(f"  {name:<28} {base:>12}   {extra}{row['fine_tuned']:.3f}")
    best = report.get("best_baseline")
    if best:
        typer.echo(best_baseline_line(best))
    info = task_info(client, job.get("task"))
    primary = report.get("primary_metric") or info.get("primary_metric")
    if primary and primary in m.get("test", {}):
        typer.echo(f"{(info.get('metric_labels') or {}).get(primary, primary)} {m['test'][primary]:.2f}")
