"""`doctune demo`: the whole platform end to end on the local stack: BBC News ->
LoRA + ZeRO-2 fine-tune on Ray -> Ray Serve endpoint -> three predictions.

Each phase is a function here; :func:`demo` runs them in order, times each, and
writes the times and test metrics to ``$DOCTUNE_HOME/demo-timings.json`` (the
benchmark page reads it).
"""

from __future__ import annotations

import json
import os
import shlex
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator, Optional

import typer
import yaml

from doctune.cli.deployments import wait_deployment
from doctune.cli.jobs import report_job, watch_job
from doctune.cli.session import connect, mask_key
from doctune.client import DoctuneClient
from doctune.config import Settings
from doctune.errors import DoctuneError
from doctune.states import DeploymentState, JobState

__all__ = ["demo"]

REPO = Path(__file__).resolve().parents[3]
EXAMPLES = REPO / "docs" / "examples"
ENDPOINT = "bbc-news"


def demo(
    tenant: str = typer.Option("demo", help="Tenant to create (or reuse) for the demo."),
    per_class: Optional[int] = typer.Option(None, help="Use only this many BBC articles per class (quick runs)."),
    max_steps: Optional[int] = typer.Option(None, help="Override the example spec's length."),
) -> None:
    """Run the end-to-end demo: BBC News -> LoRA + ZeRO-2 fine-tune -> Serve endpoint."""
    from doctune.local import LocalStack, console_url

    timings: dict[str, float] = {}
    with _phase(timings, "stack up"):
        s = LocalStack().up(echo=typer.echo)
    with _phase(timings, "tenant + dataset"):
        key = _tenant_key(s, tenant)
        client = connect(key)
        records, dataset_id = _upload_bbc(client, per_class)
    with _phase(timings, "fine-tune (Ray job)"):
        job = _fine_tune(client, dataset_id, max_steps)
    report_job(client, job)
    if job["status"] != JobState.SUCCEEDED:
        raise typer.Exit(1)
    typer.echo("baseline: the base model with a freshly initialised (untrained) classification head; "
               "tfidf_logreg: TF-IDF word 1-2-grams + logistic regression fitted on train; both on the same test split")
    with _phase(timings, "deploy"):
        url = _deploy(client, job["model_id"])
    test = _test_examples(records)
    with _phase(timings, "3 predictions"):
        predictions = _predict(url, key, test)
    _show_predictions(test, predictions)
    typer.echo("phase timings: " + ", ".join(f"{k} {v:.0f}s" for k, v in timings.items()))
    timing_file = Path(s.home) / "demo-timings.json"
    references = {name: r["test"] for name, r in (job["metrics"]["baseline"].get("references") or {}).items()}
    timing_file.write_text(json.dumps({"timings_s": timings, "test": job["metrics"]["test"],
                                       "baseline": job["metrics"]["baseline"]["test"], "references": references},
                                      indent=2))
    _try_it_yourself(url, key, Path(s.home) / "credentials" / f"{tenant}.key", test, console_url(s))


@contextmanager
def _phase(timings: dict[str, float], name: str) -> Iterator[None]:
    t = time.monotonic()
    yield
    timings[name] = time.monotonic() - t


def _tenant_key(s: Settings, tenant: str) -> str:
    """Create the demo tenant and keep its key under ``$DOCTUNE_HOME/credentials/`` (mode
    0600), or reuse the tenant whose key is already kept there."""
    key_file = Path(s.home) / "credentials" / f"{tenant}.key"
    try:
        created = connect(s.admin_key).create_tenant(tenant, "Demo tenant")
        key_file.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        key_file.write_text(created["api_key"])
        os.chmod(key_file, 0o600)
        typer.echo(f"created tenant {tenant!r}; its API key is saved in {key_file}")
    except DoctuneError as exc:
        if exc.code != "conflict" or not key_file.exists():
            raise
        typer.echo(f"reusing tenant {tenant!r} (key in {key_file})")
    return key_file.read_text().strip()


def _upload_bbc(client: DoctuneClient, per_class: int | None) -> tuple[list[dict[str, Any]], str]:
    from doctune.corpora import load_bbc_news
    from doctune.data import to_jsonl

    records = load_bbc_news(per_class)
    ds = client.upload_dataset("bbc-news", "classification", {"data": to_jsonl(records)}, seed=42)
    sizes = ds["info"]["sizes"]
    typer.echo(f"dataset {ds['id']}: BBC News, {len(records)} articles, labels {ds['info']['labels']}, "
               f"split train/dev/test = {sizes['train']}/{sizes['dev']}/{sizes['test']} (stratified, seed 42)")
    return records, ds["id"]


def demo_spec(dataset_id: str, max_steps: int | None = None) -> dict[str, Any]:
    """The BBC classification example spec, on ``dataset_id``; ``max_steps`` replaces its epochs."""
    spec = yaml.safe_load((EXAMPLES / "bbc-classification.yaml").read_text())
    spec["dataset"] = {"id": dataset_id}
    if max_steps:
        spec.pop("epochs", None)
        spec["max_steps"] = max_steps
    return spec


def _fine_tune(client: DoctuneClient, dataset_id: str, max_steps: int | None) -> dict[str, Any]:
    spec = demo_spec(dataset_id, max_steps)
    job = client.submit_job(spec)
    typer.echo(f"submitted job {job['id']} to Ray: {spec['base_model']}, {spec['tuning']['method']}, "
               f"ZeRO-{spec['deepspeed']['zero_stage']}, {spec['num_workers']} workers, "
               f"gradient accumulation {spec['gradient_accumulation_steps']}")
    return watch_job(client, job["id"])


def _deploy(client: DoctuneClient, model_id: str) -> str:
    dep = wait_deployment(client, client.deploy(model_id, ENDPOINT, min_replicas=1, max_replicas=2)["id"])
    if dep["status"] != DeploymentState.RUNNING:
        raise DoctuneError(f"deployment failed: {dep.get('message')}", "unavailable")
    typer.echo(f"deployed to Ray Serve at {dep['url']} (autoscaling 1..2 replicas)")
    return dep["url"]


def _test_examples(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    from doctune.data import split_records

    return split_records(records, "classification", seed=42)["test"][:3]


def _predict(url: str, key: str, test: list[dict[str, Any]]) -> list[dict[str, Any]]:
    import httpx

    r = httpx.post(url, json={"inputs": [x["text"] for x in test]}, headers={"Authorization": f"Bearer {key}"}, timeout=60)
    if r.status_code >= 400:
        raise DoctuneError(f"the endpoint answered HTTP {r.status_code}: {r.text[:300]}", "unavailable")
    return r.json()["predictions"]


def _show_predictions(test: list[dict[str, Any]], predictions: list[dict[str, Any]]) -> None:
    for x, pred in zip(test, predictions):
        headline = x["text"].split(". ", 1)[0][:70]
        typer.echo(f"  {headline!r:74} true={x['label']:13} predicted={pred['label']} (p={pred['score']:.2f})")


def _try_it_yourself(url: str, key: str, key_file: Path, test: list[dict[str, Any]],
                     console: str | None = None) -> None:
    """A curl line to try the endpoint, and the console's address; the key is masked (terminals and CI
    logs keep what is printed)."""
    sample = json.dumps({"inputs": [test[0]["text"][:200]]})
    typer.echo("\nTry it yourself:")
    typer.echo(f"export DOCTUNE_API_KEY=$(cat {key_file})   # the tenant's key, {mask_key(key)}")
    typer.echo(f"curl -s -X POST {url} -H \"Authorization: Bearer $DOCTUNE_API_KEY\" -H 'Content-Type: application/json' "
               f"-d {shlex.quote(sample)}")
    if console:
        typer.echo(f"console: {console}   (sign in with the same key: the datasets, the job and its curves, the playground)")
    typer.echo("\nThe stack stays up; `doctune down` stops it.")
