"""Continuous re-fine-tuning, the whole loop on the real stack (Ray, weed, SQLite, the API and its
reconciler; tiny real jobs): a BBC dataset whose first version holds 60% of the records trains the model
an endpoint serves, with a retrain policy on growth. Appending the other 40% triggers a retrain of the
same spec on the new version; the retrained model is better on the served model's test split, so it is
promoted and the endpoint answers with it. Appending mislabeled records (every label rotated to the next
class) triggers another retrain whose model is worse there: it is refused, and the endpoint keeps
serving the better model. Every decision is an event with both test metrics."""

from __future__ import annotations

import httpx
import pytest

from doctune.corpora import load_bbc_news
from doctune.data import to_jsonl

from .conftest import poll, tenant_client, tiny_job

# `make test-full` only: three training jobs and a deployment (left out of CI's `make test`, which must end in 20 minutes)
pytestmark = pytest.mark.full

PER_CLASS = 60  # 300 articles: 180 in version 1, 120 appended; the next 60 per class are the mislabeled ones


def _job(dataset_id: str) -> dict:
    """A tiny job trained for one epoch: with more records it takes more steps and learns more."""
    job = tiny_job(dataset_id, epochs=1, eval_interval=1000, checkpoint_interval=1000)
    job.pop("max_steps")
    return job


def _ended(client, job_id: str, deadline_s: float = 1800) -> dict:
    return poll(lambda: (j := client.get_job(job_id))["status"] in ("succeeded", "failed", "cancelled") and j,
                deadline_s, f"job {job_id}", interval=3)


def _decision(client, dep_id: str, job_id: str, deadline_s: float = 300) -> dict:
    """The retrain job's outcome (promoted, refused, failed), once the API's reconciler recorded it."""
    return poll(lambda: next((e for e in client.retrain_events(dep_id)
                              if e["job_id"] == job_id and e["decision"] in ("promoted", "refused", "failed")), None),
                deadline_s, f"the decision on retrain job {job_id}", interval=3)


def _served_by(client, dep: dict, doc: str) -> str:
    r = httpx.post(dep["url"], json={"inputs": [doc]}, headers={"Authorization": client.key}, timeout=120)
    assert r.status_code == 200, r.text
    return r.json()["model_id"]


def _running(client, dep_id: str, model_id: str) -> dict:
    return poll(lambda: (d := client.get_deployment(dep_id))["status"] == "running" and d["model_id"] == model_id
                and d, 600, f"deployment {dep_id} serving {model_id}", interval=2)


def test_growth_retrains_promotes_the_better_model_and_refuses_a_worse_one(request):
    client = tenant_client(request, "team-retrain")
    articles = load_bbc_news(limit_per_class=2 * PER_CLASS)
    by_label: dict[str, list[dict]] = {}
    for a in articles:
        by_label.setdefault(a["label"], []).append(a)
    labels = sorted(by_label)
    first = [a for rows in by_label.values() for a in rows[:int(0.6 * PER_CLASS)]]
    rest = [a for rows in by_label.values() for a in rows[int(0.6 * PER_CLASS):PER_CLASS]]
    rotated = [{"text": a["text"], "label": labels[(labels.index(a["label"]) + 1) % len(labels)]}
               for rows in by_label.values() for a in rows[PER_CLASS:]]

    ds = client.upload_dataset("bbc-growing", "classification", {"data": to_jsonl(first)}, seed=42)
    champion_job = _ended(client, client.submit_job(_job(ds["id"]))["id"])
    assert champion_job["status"] == "succeeded", champion_job["error"]
    assert champion_job["spec"]["dataset"]["version"] == 1  # the job records its version
    dep = client.deploy(champion_job["model_id"], "news-live", min_replicas=1, max_replicas=1, num_cpus=0.25,
                        retrain={"min_growth_percent": 30})
    dep = _running(client, dep["id"], champion_job["model_id"])
    doc = rest[0]["text"]
    assert _served_by(client, dep, doc) == champion_job["model_id"]
    try:
        # the other 40%: +67% records, the same mix of labels
        appended = client.append_dataset(ds["id"], to_jsonl(rest))
        assert appended["version"]["version"] == 2 and appended["version"]["drift"]["tvd"] < 0.05
        (triggered,) = appended["retrain"]
        assert (triggered["decision"], triggered["trigger"]) == ("triggered", "growth"), triggered
        better_job = _ended(client, triggered["job_id"])
        assert better_job["status"] == "succeeded", better_job["error"]
        assert better_job["spec"]["dataset"] == {"id": ds["id"], "version": 2, "compare_version": 1}
        on_v1 = better_job["metrics"]["test_by_version"]["1"]["macro_f1"]
        promoted = _decision(client, dep["id"], better_job["id"])
        champ, chall = promoted["data"]["champion"], promoted["data"]["challenger"]
        assert promoted["decision"] == "promoted", (promoted["reason"], champ, chall)
        assert chall == {**chall, "model_id": better_job["model_id"], "test": on_v1} and chall["test"] > champ["test"]
        dep = _running(client, dep["id"], better_job["model_id"])
        assert dep["revision"] == 2 and _served_by(client, dep, doc) == better_job["model_id"]

        # mislabeled records: every label rotated to the next class, as many as the dataset holds
        noisy = client.append_dataset(ds["id"], to_jsonl(rotated))
        (triggered,) = noisy["retrain"]
        assert triggered["decision"] == "triggered" and triggered["data"]["served_version"] == 2
        worse_job = _ended(client, triggered["job_id"])
        assert worse_job["status"] == "succeeded", worse_job["error"]
        refused = _decision(client, dep["id"], worse_job["id"])
        champ, chall = refused["data"]["champion"], refused["data"]["challenger"]
        assert refused["decision"] == "refused", (refused["reason"], champ, chall)
        assert champ["model_id"] == better_job["model_id"] and chall["test"] <= champ["test"]
        dep = client.get_deployment(dep["id"])
        assert dep["model_id"] == better_job["model_id"] and dep["revision"] == 2
        assert _served_by(client, dep, doc) == better_job["model_id"]
        decisions = [e["decision"] for e in client.retrain_events(dep["id"])]
        assert decisions == ["triggered", "promoted", "triggered", "refused"], decisions
    finally:
        client.delete_deployment(dep["id"])
        poll(lambda: client.get_deployment(dep["id"])["status"] == "deleted", 300, "undeploy")
