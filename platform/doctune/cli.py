"""The `doctune` command: the local stack, and the platform's REST API from a shell.

Every command that touches tenants' data goes through the API with an API key
(``--api-key`` or ``DOCTUNE_API_KEY``; on the embedded stack the admin key in
``$DOCTUNE_HOME/stack.json`` is the fallback). Errors print as one line with
the field and the fix, and exit non-zero.
"""

from __future__ import annotations

import json
import os
import shlex
import sys
import time
from pathlib import Path
from typing import Any, Optional

import typer
import yaml

from doctune.errors import DoctuneError

app = typer.Typer(help="doctune: fine-tune and serve document-AI models.", no_args_is_help=True, add_completion=False)
tenants_app = typer.Typer(help="Tenants, their quotas and usage.", no_args_is_help=True)
keys_app = typer.Typer(help="API keys: list (ids only), create, rotate, revoke.", no_args_is_help=True)
models_app = typer.Typer(help="Registered models.", no_args_is_help=True)
datasets_app = typer.Typer(help="Upload and inspect datasets.", no_args_is_help=True)
jobs_app = typer.Typer(help="Submit, follow and cancel fine-tuning jobs.", no_args_is_help=True)
app.add_typer(tenants_app, name="tenants")
app.add_typer(keys_app, name="keys")
app.add_typer(models_app, name="models")
app.add_typer(datasets_app, name="datasets")
app.add_typer(jobs_app, name="jobs")
sweeps_app = typer.Typer(help="Hyperparameter sweeps (Ray Tune) and their leaderboards.", no_args_is_help=True)
app.add_typer(sweeps_app, name="sweeps")

REPO = Path(__file__).resolve().parents[2]
EXAMPLES = REPO / "docs" / "examples"


def _fail(exc: DoctuneError) -> None:
    where = f" (field: {exc.field})" if exc.field else ""
    typer.secho(f"error [{exc.code}]{where}: {exc.message}", fg="red", err=True)
    raise typer.Exit(2)


def _client(api_key: str | None = None):
    from doctune.client import DoctuneClient
    from doctune.config import load_settings

    s = load_settings()
    if not s.api_url:
        raise DoctuneError("no API configured: run `doctune up` or set DOCTUNE_API_URL", "unavailable")
    return DoctuneClient(s.api_url, api_key or os.environ.get("DOCTUNE_API_KEY") or s.admin_key)


def _run(fn, *args: Any, **kw: Any) -> Any:
    try:
        return fn(*args, **kw)
    except DoctuneError as exc:
        _fail(exc)


OUTPUT = {"format": "json"}


@app.callback()
def _options(output: str = typer.Option("json", "--output", "-o", help="json, or table for lists.")) -> None:
    if output not in ("json", "table"):
        _fail(DoctuneError(f"--output must be json or table; got {output!r}", "invalid_request", field="output"))
    OUTPUT["format"] = output


def _print(obj: Any, columns: tuple[str, ...] = ()) -> None:
    """JSON by default (for scripts); ``--output table`` renders lists of records."""
    if OUTPUT["format"] == "table" and isinstance(obj, list) and columns:
        from rich.console import Console
        from rich.table import Table

        console = Console() if sys.stdout.isatty() else Console(width=300)  # piped: never cut ids short
        table = Table(*columns)
        for row in obj:
            table.add_row(*(str(_dig(row, c)) for c in columns))
        console.print(table)
        return
    typer.echo(json.dumps(obj, indent=2, default=str))


def _dig(row: dict, path: str) -> Any:
    for part in path.split("."):
        row = row.get(part) if isinstance(row, dict) else None
    return "" if row is None else row


# ------------------------------------------------------------------- stack
@app.command()
def up(cpus: Optional[int] = typer.Option(None, help="Logical CPUs for the Ray head (default 4, or DOCTUNE_RAY_CPUS).")) -> None:
    """Start the embedded local stack (Ray head, S3 server, metadata store, API)."""
    from doctune.local import LocalStack

    stack = LocalStack(num_cpus=cpus)
    s = _run(stack.up, echo=typer.echo)
    typer.echo(
        f"\nRay is at {s.ray_dashboard_url} with token auth on. To submit jobs yourself:\n"
        f"  export RAY_AUTH_MODE=token RAY_AUTH_TOKEN_PATH={s.ray_token_path}\n"
        f"  ray job submit --address {s.ray_dashboard_url} -- python -m ray_jobs.finetune --spec job.yaml\n"
        f"API: {s.api_url}   admin key: in {stack.home / 'stack.json'} (admin_key)"
    )


@app.command()
def down() -> None:
    """Stop the embedded local stack (data under $DOCTUNE_HOME is kept)."""
    from doctune.local import LocalStack

    _run(LocalStack().down, echo=typer.echo)


@app.command()
def status() -> None:
    """Report each component of the local stack; exit 1 if any is down."""
    from doctune.local import LocalStack

    st = LocalStack().status()
    for name, row in st.items():
        colour = "green" if row["state"] == "up" else "red"
        typer.echo(f"{name:5} " + typer.style(f"{row['state']:5}", fg=colour) + f" {row['where']}")
    if any(r["state"] != "up" for r in st.values()):
        raise typer.Exit(1)


# ------------------------------------------------------------------- tenants
@tenants_app.command("create")
def tenants_create(name: str, display_name: Optional[str] = None, api_key: Optional[str] = typer.Option(None, envvar="DOCTUNE_API_KEY")) -> None:
    """Create a tenant (admin key); prints its first API key once."""
    _print(_run(_client(api_key).create_tenant, name, display_name))


@tenants_app.command("show")
def tenants_show(tenant: str, api_key: Optional[str] = typer.Option(None, envvar="DOCTUNE_API_KEY")) -> None:
    """A tenant's quotas."""
    _print(_run(_client(api_key).request, "GET", f"/v1/tenants/{tenant}"))


@tenants_app.command("quota")
def tenants_quota(
    tenant: str,
    weight: Optional[float] = None,
    max_jobs: Optional[int] = typer.Option(None, help="Concurrent jobs."),
    max_cpus: Optional[float] = None,
    max_gpus: Optional[float] = None,
    max_storage_bytes: Optional[int] = None,
    max_deployments: Optional[int] = None,
    api_key: Optional[str] = typer.Option(None, envvar="DOCTUNE_API_KEY"),
) -> None:
    """Set a tenant's quotas and fair-share weight (admin). Only the options given change."""
    body = {k: v for k, v in {"weight": weight, "max_concurrent_jobs": max_jobs, "max_cpus": max_cpus, "max_gpus": max_gpus,
                              "max_storage_bytes": max_storage_bytes, "max_deployments": max_deployments}.items() if v is not None}
    _print(_run(_client(api_key).request, "PUT", f"/v1/tenants/{tenant}/quota", json=body))


@tenants_app.command("usage")
def tenants_usage(api_key: Optional[str] = typer.Option(None, envvar="DOCTUNE_API_KEY")) -> None:
    """Trained tokens, worker CPU/GPU-seconds and stored bytes, per tenant."""
    _print(_run(_client(api_key).request, "GET", "/v1/usage"),
           ("tenant", "jobs", "trained_tokens", "worker_cpu_seconds", "worker_gpu_seconds", "storage_bytes"))


# ------------------------------------------------------------------- keys
@keys_app.command("list")
def keys_list(api_key: Optional[str] = typer.Option(None, envvar="DOCTUNE_API_KEY")) -> None:
    """Your tenant's keys, by id (the public prefix); secrets are never shown again."""
    _print(_run(_client(api_key).list_keys), ("id", "tenant", "role", "created_at", "revoked_at"))


@keys_app.command("create")
def keys_create(role: str = typer.Option("member", help="member or viewer"), tenant: Optional[str] = None,
                api_key: Optional[str] = typer.Option(None, envvar="DOCTUNE_API_KEY")) -> None:
    """Issue a new key (printed once)."""
    body = {"role": role, **({"tenant": tenant} if tenant else {})}
    _print(_run(_client(api_key).request, "POST", "/v1/keys", json=body))


@keys_app.command("rotate")
def keys_rotate(key_id: str, api_key: Optional[str] = typer.Option(None, envvar="DOCTUNE_API_KEY")) -> None:
    """Revoke a key and issue its replacement (printed once)."""
    _print(_run(_client(api_key).request, "POST", f"/v1/keys/{key_id}/rotate"))


@keys_app.command("revoke")
def keys_revoke(key_id: str, api_key: Optional[str] = typer.Option(None, envvar="DOCTUNE_API_KEY")) -> None:
    """Revoke a key now."""
    _print(_run(_client(api_key).request, "DELETE", f"/v1/keys/{key_id}"))


# ------------------------------------------------------------------- models
@models_app.command("prepare")
def models_prepare() -> None:
    """Make the packaged base models ready locally (Gemma-3-270M is converted from GGUF once, ~1 min)."""
    from doctune.base_models import CATALOG

    for name, resolve in CATALOG.items():
        t = time.monotonic()
        typer.echo(f"{name}: {resolve()} ({time.monotonic() - t:.0f} s)")


@models_app.command("get")
def models_get(model_id: str, api_key: Optional[str] = typer.Option(None, envvar="DOCTUNE_API_KEY")) -> None:
    """A model's metrics (fine-tuned beside baseline) and where it is stored."""
    _print(_run(_client(api_key).get_model, model_id))


@models_app.command("download")
def models_download(model_id: str, dest: Path = typer.Option(Path("."), help="Folder to write the model into."),
                    api_key: Optional[str] = typer.Option(None, envvar="DOCTUNE_API_KEY")) -> None:
    """Download a model's files through short-lived presigned URLs."""
    import httpx
    from tqdm import tqdm

    files = _run(_client(api_key).request, "GET", f"/v1/models/{model_id}/files")
    out = dest / model_id
    with tqdm(total=sum(f["bytes"] for f in files), unit="B", unit_scale=True, desc=model_id) as bar:
        for f in files:
            target = out / f["path"]
            target.parent.mkdir(parents=True, exist_ok=True)
            with httpx.stream("GET", f["url"], timeout=120) as r, open(target, "wb") as fh:
                r.raise_for_status()
                for chunk in r.iter_bytes():
                    fh.write(chunk)
                    bar.update(len(chunk))
    typer.echo(f"wrote {len(files)} files to {out}")


# ------------------------------------------------------------------- datasets
@datasets_app.command("upload")
def datasets_upload(
    name: str = typer.Option(..., help="Dataset name (slug)."),
    task: str = typer.Option("classification"),
    data: Optional[Path] = typer.Option(None, help="One JSONL file; doctune makes a seeded, stratified split."),
    train: Optional[Path] = None,
    dev: Optional[Path] = None,
    test: Optional[Path] = None,
    seed: int = 42,
    api_key: Optional[str] = typer.Option(None, envvar="DOCTUNE_API_KEY"),
) -> None:
    """Upload a dataset: --data FILE, or --train/--dev/--test."""
    files = {k: v for k, v in {"data": data, "train": train, "dev": dev, "test": test}.items() if v}
    for k, v in files.items():
        if not v.exists():
            _fail(DoctuneError(f"{v} does not exist", "invalid_request", field=k))
    from tqdm import tqdm

    with tqdm(total=sum(f.stat().st_size for f in files.values()), unit="B", unit_scale=True, desc="upload") as bar:
        result = _run(_client(api_key).upload_dataset, name, task, files, progress=bar.update, seed=seed)
    _print(result)


# ------------------------------------------------------------------- jobs
def watch_job(client, job_id: str, poll_s: float = 2.0) -> dict[str, Any]:
    """Follow a job with a progress bar (step, loss, ETA) until it ends."""
    from tqdm import tqdm

    bar = None
    job = client.get_job(job_id)
    try:
        while job["status"] not in ("succeeded", "failed", "cancelled"):
            pr = job.get("progress") or {}
            if bar is None and pr.get("total_steps"):
                bar = tqdm(total=pr["total_steps"], desc="training", unit="step", dynamic_ncols=True,
                           bar_format="{l_bar}{bar}| {n_fmt}/{total_fmt} [{elapsed}<{remaining}{postfix}]")
            if bar is not None:
                bar.n = min(pr.get("step", 0), bar.total)
                post = {"phase": pr.get("phase", "")}
                if pr.get("loss") is not None:
                    post["loss"] = f"{pr['loss']:.3f}"
                if pr.get("history"):
                    last, metric = pr["history"][-1], pr.get("primary_metric")
                    value = last.get(metric) if metric else last.get("macro_f1", last.get("f1"))
                    if value is not None:
                        post[f"dev_{metric or 'f1'}"] = f"{value:.3f}"
                bar.set_postfix(post, refresh=False)
                bar.refresh()
            time.sleep(poll_s)
            job = client.get_job(job_id)
        if bar is not None and job["status"] == "succeeded":
            bar.n = bar.total
            bar.refresh()
    finally:
        if bar is not None:
            bar.close()
    return job


def _read_spec(spec: Path, dataset: str | None) -> dict[str, Any]:
    try:
        body = yaml.safe_load(spec.read_text())
    except (OSError, yaml.YAMLError) as exc:
        _fail(DoctuneError(f"cannot read {spec}: {exc}", "invalid_spec", field="spec"))
    if not isinstance(body, dict):
        _fail(DoctuneError(f"{spec} must hold a YAML mapping of JobSpec fields", "invalid_spec", field="spec"))
    if dataset:
        body["dataset"] = {"id": dataset}
    return body


@jobs_app.command("plan")
def jobs_plan(
    spec: Path = typer.Argument(..., help="JobSpec YAML file."),
    dataset: Optional[str] = typer.Option(None, help="Dataset id (overrides dataset.id in the file)."),
    api_key: Optional[str] = typer.Option(None, envvar="DOCTUNE_API_KEY"),
) -> None:
    """Estimate a job before running it: memory per worker, tokens, steps, time; warns if it won't fit."""
    plan = _run(_client(api_key).request, "POST", "/v1/jobs/plan", json=_read_spec(spec, dataset))
    if OUTPUT["format"] != "table":
        _print(plan)
        return
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
    lines += [f"warning     {w}" for w in plan["warnings"]]
    lines.append("fits        yes" if plan["fits"] else "fits        NO")
    typer.echo("\n".join(lines))


@jobs_app.command("submit")
def jobs_submit(
    spec: Path = typer.Argument(..., help="JobSpec YAML file."),
    dataset: Optional[str] = typer.Option(None, help="Dataset id (overrides dataset.id in the file)."),
    watch: bool = typer.Option(True, help="Follow the job with a progress bar."),
    api_key: Optional[str] = typer.Option(None, envvar="DOCTUNE_API_KEY"),
) -> None:
    """Submit a fine-tuning job from a YAML spec."""
    body = _read_spec(spec, dataset)
    client = _client(api_key)
    job = _run(client.submit_job, body)
    typer.echo(f"submitted {job['id']}")
    if watch:
        job = _run(watch_job, client, job["id"])
        _report_job(job)
        if job["status"] != "succeeded":
            raise typer.Exit(1)


@jobs_app.command("get")
def jobs_get(job_id: str, api_key: Optional[str] = typer.Option(None, envvar="DOCTUNE_API_KEY")) -> None:
    """Show a job's status, progress and metrics."""
    _print(_run(_client(api_key).get_job, job_id))


@jobs_app.command("list")
def jobs_list(api_key: Optional[str] = typer.Option(None, envvar="DOCTUNE_API_KEY")) -> None:
    """Your tenant's jobs, newest first."""
    _print(_run(_client(api_key).list_jobs),
           ("id", "tenant", "task", "status", "progress.step", "progress.total_steps", "progress.queue_reason", "model_id"))


@jobs_app.command("events")
def jobs_events(job_id: str, after: int = 0, limit: int = 100,
                api_key: Optional[str] = typer.Option(None, envvar="DOCTUNE_API_KEY")) -> None:
    """A page of a job's events (status changes with reasons, progress, evals, checkpoints)."""
    page = _run(_client(api_key).request, "GET", f"/v1/jobs/{job_id}/events", params={"after": after, "limit": limit})
    _print(page["events"] if OUTPUT["format"] == "table" else page, ("id", "at", "kind", "status", "reason", "data"))


@jobs_app.command("logs")
def jobs_logs(job_id: str, follow: bool = typer.Option(False, "--follow", "-f", help="Keep printing until the job ends."),
              api_key: Optional[str] = typer.Option(None, envvar="DOCTUNE_API_KEY")) -> None:
    """The job's Ray driver log; -f follows it."""
    client = _client(api_key)
    offset = 0
    while True:
        chunk = _run(client.request, "GET", f"/v1/jobs/{job_id}/logs", params={"offset": offset})
        if chunk["text"]:
            typer.echo(chunk["text"], nl=False)
        offset = chunk["offset"]
        if not follow or _run(client.get_job, job_id)["status"] in ("succeeded", "failed", "cancelled"):
            if follow:  # what the driver printed last
                tail = _run(client.request, "GET", f"/v1/jobs/{job_id}/logs", params={"offset": offset})["text"]
                typer.echo(tail, nl=False)
            return
        time.sleep(2)


@jobs_app.command("pause")
def jobs_pause(job_id: str, api_key: Optional[str] = typer.Option(None, envvar="DOCTUNE_API_KEY")) -> None:
    """Pause a job: a running one checkpoints at its next step and stops."""
    _print(_run(_client(api_key).request, "POST", f"/v1/jobs/{job_id}/pause"))


@jobs_app.command("resume")
def jobs_resume(job_id: str, api_key: Optional[str] = typer.Option(None, envvar="DOCTUNE_API_KEY")) -> None:
    """Re-queue a paused job; it continues from its pause checkpoint."""
    _print(_run(_client(api_key).request, "POST", f"/v1/jobs/{job_id}/resume"))


@jobs_app.command("cancel")
def jobs_cancel(job_id: str, api_key: Optional[str] = typer.Option(None, envvar="DOCTUNE_API_KEY")) -> None:
    """Cancel a queued or running job."""
    _print(_run(_client(api_key).cancel_job, job_id))


def _report_job(job: dict[str, Any]) -> None:
    if job["status"] != "succeeded":
        err = job.get("error") or {}
        typer.secho(f"job {job['id']} {job['status']}: {err.get('message', '')}", fg="red", err=True)
        return
    m, report = job["metrics"], job.get("report") or {}
    typer.echo(f"job {job['id']} succeeded after {m['step']} steps (model {job['model_id']})")
    refs = report.get("references") or []  # model-free baselines, e.g. lead-1
    typer.echo(f"test split ({report.get('examples')} examples)   base model, {report.get('baseline', 'untrained_head').replace('_', ' ')}   "
               + "".join(f"{r:>10}   " for r in refs) + "fine-tuned")
    for name, row in report.get("metrics", {}).items():
        base = "-" if row["baseline"] is None else f"{row['baseline']:.3f}"
        extra = "".join("-".rjust(10) + "   " if row.get(r) is None else f"{row[r]:>10.3f}   " for r in refs)
        typer.echo(f"  {name:<28} {base:>12}   {extra}{row['fine_tuned']:.3f}")
    primary = report.get("primary_metric") or "macro_f1"
    typer.echo(f"{METRIC_LABELS.get(primary, primary)} {m['test'][primary]:.2f}")


METRIC_LABELS = {"macro_f1": "macro-F1", "f1": "F1", "accuracy": "accuracy", "mrr_at_10": "MRR@10", "rougeL": "ROUGE-L"}


# ------------------------------------------------------------------- sweeps
LEADER_COLUMNS = ("rank", "job_id", "status", "dev", "test", "cost_cpu_seconds", "steps", "settings", "stopped_early")


@sweeps_app.command("submit")
def sweeps_submit(
    spec: Path = typer.Argument(..., help="SweepSpec YAML file: job, search_space, algorithm, num_samples, ..."),
    dataset: Optional[str] = typer.Option(None, help="Dataset id (overrides job.dataset.id in the file)."),
    watch: bool = typer.Option(True, help="Follow the sweep until it ends, then print its leaderboard."),
    api_key: Optional[str] = typer.Option(None, envvar="DOCTUNE_API_KEY"),
) -> None:
    """Submit a sweep: Ray Tune runs trials of the job over the search space."""
    body = _read_spec(spec, None)
    if dataset:
        body["job"] = {**(body.get("job") or {}), "dataset": {"id": dataset}}
    client = _client(api_key)
    sweep = _run(client.submit_sweep, body)
    typer.echo(f"submitted {sweep['id']}")
    if not watch:
        return
    from tqdm import tqdm

    board = _run(client.sweep_leaderboard, sweep["id"])
    with tqdm(desc="trials finished", unit="trial") as bar:
        while board["status"] in ("queued", "running"):
            done = sum(t["status"] in ("succeeded", "failed", "cancelled") for t in board["trials"])
            bar.update(done - bar.n)
            time.sleep(3.0)
            board = _run(client.sweep_leaderboard, sweep["id"])
    _print(board["trials"], LEADER_COLUMNS)
    typer.echo(f"sweep {sweep['id']} {board['status']}; winner {board['best_job_id']} ({board['metric']})")
    if board["status"] != "succeeded":
        raise typer.Exit(1)


@sweeps_app.command("list")
def sweeps_list(api_key: Optional[str] = typer.Option(None, envvar="DOCTUNE_API_KEY")) -> None:
    """Your tenant's sweeps, newest first."""
    _print(_run(_client(api_key).list_sweeps), ("id", "tenant", "task", "status", "best_job_id"))


@sweeps_app.command("show")
def sweeps_show(sweep_id: str, api_key: Optional[str] = typer.Option(None, envvar="DOCTUNE_API_KEY")) -> None:
    """A sweep's spec, status and winner."""
    _print(_run(_client(api_key).get_sweep, sweep_id))


@sweeps_app.command("leaderboard")
def sweeps_leaderboard(
    sweep_id: Optional[str] = typer.Argument(None, help="A sweep; without it, --task ranks all your finished jobs."),
    task: Optional[str] = typer.Option(None, help="Rank the tenant's finished jobs of this task (no sweep id)."),
    metric: Optional[str] = typer.Option(None, help="Dev metric to rank on (default: the task's primary metric)."),
    api_key: Optional[str] = typer.Option(None, envvar="DOCTUNE_API_KEY"),
) -> None:
    """Trials (or a task's jobs) ranked by dev metric, with their settings and cost."""
    client = _client(api_key)
    if sweep_id:
        board = _run(client.sweep_leaderboard, sweep_id)
        rows = board["trials"]
    elif task:
        board = _run(client.request, "GET", "/v1/leaderboard", params={"task": task, **({"metric": metric} if metric else {})})
        rows = board["boards"][0]["jobs"]
    else:
        _fail(DoctuneError("give a sweep id or --task", "invalid_request", field="sweep_id"))
    _print(rows if OUTPUT["format"] == "table" else board, LEADER_COLUMNS)


# ------------------------------------------------------------------- serving
def wait_deployment(client, dep_id: str, deadline_s: float = 600) -> dict[str, Any]:
    end = time.monotonic() + deadline_s
    dep = client.get_deployment(dep_id)
    while dep["status"] in ("deploying", "deleting") and time.monotonic() < end:
        time.sleep(1.0)
        dep = client.get_deployment(dep_id)
    return dep


@app.command()
def deploy(
    model_id: str,
    name: str = typer.Option(..., help="Endpoint name; the route is /<tenant>/<name>."),
    min_replicas: int = 1,
    max_replicas: int = 2,
    max_batch_size: int = typer.Option(8, help="Requests a replica batches into one model call."),
    batch_wait_timeout_s: float = typer.Option(0.01, help="Longest a request waits for its batch to fill."),
    quantize: str = typer.Option("none", help="none, or int8 (dynamic, CPU; accuracy change measured at deploy)."),
    multiplex: bool = typer.Option(
        False, "--multiplex/--no-multiplex",
        help="Serve a LoRA adapter (trained with merge_adapter: false) from the shared replicas of its base model; "
        "requests may name another of your adapters in the body field 'model'."),
    max_adapters_per_replica: int = typer.Option(
        8, help="With --multiplex: adapters one shared replica keeps loaded (least recently used ones are unloaded)."),
    api_key: Optional[str] = typer.Option(None, envvar="DOCTUNE_API_KEY"),
) -> None:
    """Deploy a registered model to an autoscaled Ray Serve endpoint."""
    client = _client(api_key)
    dep = _run(client.deploy, model_id, name, min_replicas=min_replicas, max_replicas=max_replicas,
               max_batch_size=max_batch_size, batch_wait_timeout_s=batch_wait_timeout_s, quantize=quantize,
               multiplex=multiplex, max_adapters_per_replica=max_adapters_per_replica)
    dep = _run(wait_deployment, client, dep["id"])
    _print(dep)
    if dep["status"] != "running":
        raise typer.Exit(1)


@app.command()
def undeploy(deployment_id: str, api_key: Optional[str] = typer.Option(None, envvar="DOCTUNE_API_KEY")) -> None:
    """Take an endpoint down (its model stays registered; deploy the same name to bring it back)."""
    client = _client(api_key)
    _run(client.delete_deployment, deployment_id)
    dep = _run(wait_deployment, client, deployment_id)
    _print(dep)
    if dep["status"] != "deleted":
        raise typer.Exit(1)


DEPLOYING = ("deployed", "promoted", "forced")  # promotion decisions that redeploy the endpoint
REVISION_COLUMNS = ("revision", "current", "model_id", "reason", "created_at")


@app.command()
def promote(
    endpoint: str = typer.Option(..., help="Endpoint (deployment) name; the route is /<tenant>/<endpoint>."),
    model: Optional[str] = typer.Option(None, "--model", help="The challenger: a registered model id."),
    sweep: Optional[str] = typer.Option(None, "--sweep", help="The challenger is this (succeeded) sweep's winner."),
    force: bool = typer.Option(False, "--force", help="Promote even if not better, or tested on another dataset."),
    metric: Optional[str] = typer.Option(None, help="Test metric to compare on (default: the task's primary metric)."),
    api_key: Optional[str] = typer.Option(None, envvar="DOCTUNE_API_KEY"),
) -> None:
    """Champion/challenger: the challenger replaces the endpoint's model only if its test metric is better
    on the same dataset (or with --force); an endpoint that does not exist yet is deployed."""
    if (model is None) == (sweep is None):
        _fail(DoctuneError("give exactly one of --model ID or --sweep ID", "invalid_request", field="model_id"))
    client = _client(api_key)
    result = _run(client.promote, endpoint, model_id=model, sweep_id=sweep, force=force, metric=metric)
    dep = result["deployment"]
    if result["decision"] in DEPLOYING:
        dep = result["deployment"] = _run(wait_deployment, client, dep["id"])
    _print(result)
    typer.echo(result["summary"] + (f"; deployment {dep['id']} revision {dep['revision']} is {dep['status']}" if dep else ""))
    if result["decision"] in DEPLOYING and dep["status"] != "running":
        raise typer.Exit(1)


@app.command()
def rollback(
    deployment_id: str,
    revision: Optional[int] = typer.Option(None, help="Revision to redeploy (default: the one before the current one)."),
    api_key: Optional[str] = typer.Option(None, envvar="DOCTUNE_API_KEY"),
) -> None:
    """Redeploy an earlier revision of a deployment (its model and settings) as a new revision."""
    client = _client(api_key)
    dep = _run(client.rollback, deployment_id, revision)
    dep = _run(wait_deployment, client, dep["id"])
    _print(dep)
    if dep["status"] != "running":
        raise typer.Exit(1)


@app.command()
def revisions(deployment_id: str, api_key: Optional[str] = typer.Option(None, envvar="DOCTUNE_API_KEY")) -> None:
    """A deployment's revisions (deploys, promotions, rollbacks), oldest first; `-o table` for a table."""
    _print(_run(_client(api_key).deployment_revisions, deployment_id), REVISION_COLUMNS)


# ------------------------------------------------------------------- demo
def _demo_spec(dataset_id: str) -> dict[str, Any]:
    spec = yaml.safe_load((EXAMPLES / "bbc-classification.yaml").read_text())
    spec["dataset"] = {"id": dataset_id}
    return spec


@app.command()
def demo(
    tenant: str = typer.Option("demo", help="Tenant to create (or reuse) for the demo."),
    per_class: Optional[int] = typer.Option(None, help="Use only this many BBC articles per class (quick runs)."),
    max_steps: Optional[int] = typer.Option(None, help="Override the example spec's length."),
) -> None:
    """Run the end-to-end demo: BBC News -> LoRA + ZeRO-2 fine-tune -> Serve endpoint."""
    from doctune.config import load_settings
    from doctune.data import split_records, to_jsonl
    from doctune.corpora import load_bbc_news
    from doctune.local import LocalStack

    try:
        timings: dict[str, float] = {}
        t = time.monotonic()
        s = LocalStack().up(echo=typer.echo)
        timings["stack up"] = time.monotonic() - t
        admin = _client(s.admin_key)
        key_file = Path(s.home) / "credentials" / f"{tenant}.key"
        t = time.monotonic()
        try:
            created = admin.create_tenant(tenant, "Demo tenant")
            key_file.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            key_file.write_text(created["api_key"])
            os.chmod(key_file, 0o600)
            typer.echo(f"created tenant {tenant!r}; its API key is saved in {key_file}")
        except DoctuneError as exc:
            if exc.code != "conflict" or not key_file.exists():
                raise
            typer.echo(f"reusing tenant {tenant!r} (key in {key_file})")
        key = key_file.read_text().strip()
        client = _client(key)
        records = load_bbc_news(per_class)
        ds = client.upload_dataset("bbc-news", "classification", {"data": to_jsonl(records)}, seed=42)
        sizes = ds["info"]["sizes"]
        typer.echo(f"dataset {ds['id']}: BBC News, {len(records)} articles, labels {ds['info']['labels']}, "
                   f"split train/dev/test = {sizes['train']}/{sizes['dev']}/{sizes['test']} (stratified, seed 42)")
        timings["tenant + dataset"] = time.monotonic() - t

        spec = _demo_spec(ds["id"])
        if max_steps:
            spec.pop("epochs", None)
            spec["max_steps"] = max_steps
        t = time.monotonic()
        job = client.submit_job(spec)
        typer.echo(f"submitted job {job['id']} to Ray: {spec['base_model']}, {spec['tuning']['method']}, "
                   f"ZeRO-{spec['deepspeed']['zero_stage']}, {spec['num_workers']} workers, "
                   f"gradient accumulation {spec['gradient_accumulation_steps']}")
        job = watch_job(client, job["id"])
        timings["fine-tune (Ray job)"] = time.monotonic() - t
        _report_job(job)
        if job["status"] != "succeeded":
            raise typer.Exit(1)
        typer.echo("baseline: the base model with a freshly initialised (untrained) classification head, "
                   "evaluated on the same test split")

        t = time.monotonic()
        dep = client.deploy(job["model_id"], "bbc-news", min_replicas=1, max_replicas=2)
        dep = wait_deployment(client, dep["id"])
        timings["deploy"] = time.monotonic() - t
        if dep["status"] != "running":
            raise DoctuneError(f"deployment failed: {dep.get('message')}", "unavailable")
        url = dep["url"]
        typer.echo(f"deployed to Ray Serve at {url} (autoscaling 1..2 replicas)")

        test = split_records(records, "classification", seed=42)["test"][:3]
        import httpx

        t = time.monotonic()
        r = httpx.post(url, json={"inputs": [x["text"] for x in test]}, headers={"Authorization": f"Bearer {key}"}, timeout=60)
        r.raise_for_status()
        timings["3 predictions"] = time.monotonic() - t
        for x, pred in zip(test, r.json()["predictions"]):
            headline = x["text"].split(". ", 1)[0][:70]
            typer.echo(f"  {headline!r:74} true={x['label']:13} predicted={pred['label']} (p={pred['score']:.2f})")
        sample = json.dumps({"inputs": [test[0]["text"][:200]]})
        typer.echo("\nTry it yourself:")
        typer.echo(f"curl -s -X POST {url} -H 'Authorization: Bearer {key}' -H 'Content-Type: application/json' -d {shlex.quote(sample)}")
        typer.echo("\nThe stack stays up; `doctune down` stops it.")
        typer.echo("phase timings: " + ", ".join(f"{k} {v:.0f}s" for k, v in timings.items()))
        timing_file = Path(load_settings().home) / "demo-timings.json"
        timing_file.write_text(json.dumps({"timings_s": timings, "test": job["metrics"]["test"], "baseline": job["metrics"]["baseline"]["test"]}, indent=2))
    except DoctuneError as exc:
        _fail(exc)


def main() -> None:  # pragma: no cover
    app()


if __name__ == "__main__":  # pragma: no cover
    sys.exit(app())
