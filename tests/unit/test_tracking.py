"""A job's experiment tracking, without Ray: the driver's tracker turns progress into TensorBoard event files
in a real S3 server (read back with TensorBoard's own EventAccumulator: every scalar at its step, uploaded
at evaluations and the end, never per step; a resumed attempt purges what the earlier one logged past its
checkpoint), and into an MLflow run in a real SQLite tracking store (params, metrics, the model as an
artifact, one run per job across attempts, a sweep's trials nested under its run). The API serves a job's
files to its own tenant only, and `doctune jobs tensorboard` downloads them and serves them with TensorBoard."""

from __future__ import annotations

import os
import time
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from doctune.api.app import create_app
from doctune.cli import app, session
from doctune.config import Settings
from doctune.drivers.tracking import JobTracker, SweepRun, flatten_params
from doctune.services import Platform, tenants
from doctune.spec import TenantSpec
from doctune.store.db import Job
from doctune.store.objects import ObjectStore
from doctune.train.trainer import tensorboard_prefix
from tests.unit.test_cli import in_process_clients, s3  # noqa: F401  (s3: a real SeaweedFS S3 server)

SPEC = {"tenant": "team-a", "task": "classification", "name": "bbc lora", "base_model": "all-minilm-l6-v2",
        "learning_rate": 0.002, "tuning": {"method": "lora", "lora": {"r": 8, "target_modules": ["query", "value"]}},
        "dataset": {"id": "ds-1", "version": None}}


def accumulate(folder: Path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(folder))
    acc.Reload()
    return acc


def scalars(acc, tag: str) -> dict[int, float]:
    return {e.step: round(e.value, 6) for e in acc.Scalars(tag)}


def training(step: int, tokens: int, loss: float = 1.0) -> dict:
    return {"step": step, "loss": loss, "lr": 0.001 * step, "steps_per_s": 2.0, "tokens_seen": tokens,
            "memory_mb": 900.0 + step}


def a_job(store: ObjectStore, tmp_path: Path, job_id: str, resumed: int = 0, **kw) -> tuple[JobTracker, dict]:
    tracker = JobTracker(job_id=job_id, spec=SPEC, store=store, prefix=tensorboard_prefix("team-a", job_id),
                         scratch=tmp_path / f"scratch-{job_id}-{resumed}", **kw)
    return tracker, {"phase": "starting", "resumed_from_step": resumed, "total_steps": 20}


FINAL = {"step": 20, "test": {"macro_f1": 0.81, "accuracy": 0.84, "per_class": {"tech": {"f1": 0.8}}},
         "dev": {"macro_f1": 0.8}, "history": [{"step": 10, "macro_f1": 0.5, "loss": 1.1},
                                               {"step": 20, "macro_f1": 0.8, "loss": 0.6}],
         "memory": {"peak_train_mb": 1234.5, "start_mb": 700.0}}
BASELINE = {"kind": "untrained_head", "dev": {"macro_f1": 0.1}, "test": {"macro_f1": 0.12, "loss": 1.7}}


def run_a_job(store: ObjectStore, tmp_path: Path, job_id: str, **kw) -> JobTracker:
    """A tracker fed as a 20-step job's pump feeds it: training messages, evaluations at 10 and 20, a checkpoint at 10."""
    tracker, state = a_job(store, tmp_path, job_id, **kw)
    state = {**state, "baseline": BASELINE}
    tracker.observe(state, [training(2, 512), training(4, 1024, 0.9)])
    tracker.observe({**state, "history": FINAL["history"][:1], "last_checkpoint_step": 10},
                    [training(10, 2560, 0.7)])
    tracker.observe({**state, "history": FINAL["history"], "last_checkpoint_step": 10}, [training(20, 5120, 0.5)])
    return tracker


@pytest.fixture()
def store(s3):  # noqa: F811
    return ObjectStore(Settings(**s3))


def download(store: ObjectStore, job_id: str, dest: Path) -> Path:
    store.download_dir(tensorboard_prefix("team-a", job_id), dest)
    return dest


# ------------------------------------------------------------------- TensorBoard
def test_the_event_file_holds_every_scalar_at_its_step(store, tmp_path):
    tracker, state = a_job(store, tmp_path, "job-tb1")
    tracker.observe({**state, "baseline": BASELINE}, [training(2, 512), training(4, 1024, 0.9)])
    # training messages alone upload nothing: the file goes up at evaluations, checkpoints and the end
    assert list(store.list_keys(tensorboard_prefix("team-a", "job-tb1") + "/")) == []
    tracker.observe({**state, "baseline": BASELINE, "history": FINAL["history"][:1]}, [training(10, 2560, 0.7)])
    keys = list(store.list_keys(tensorboard_prefix("team-a", "job-tb1") + "/"))
    assert len(keys) == 1 and "events.out.tfevents" in keys[0]
    tracker.observe({**state, "baseline": BASELINE, "history": FINAL["history"]}, [training(20, 5120, 0.5)])
    tracker.finish("succeeded", state, FINAL)
    assert not (tmp_path / "scratch-job-tb1-0").exists()  # the local copy is gone

    acc = accumulate(download(store, "job-tb1", tmp_path / "tb"))
    assert scalars(acc, "train/loss") == {2: 1.0, 4: 0.9, 10: 0.7, 20: 0.5}
    assert scalars(acc, "train/learning_rate") == {2: 0.002, 4: 0.004, 10: 0.01, 20: 0.02}
    assert scalars(acc, "throughput/steps_per_s")[10] == 2.0
    # 256 tokens per step between messages, at 2 steps/s
    assert scalars(acc, "throughput/tokens_per_s") == {4: 512.0, 10: 512.0, 20: 512.0}
    assert scalars(acc, "memory/rank0_rss_mb") == {2: 902.0, 4: 904.0, 10: 910.0, 20: 920.0}
    assert scalars(acc, "dev/macro_f1") == {10: 0.5, 20: 0.8} and scalars(acc, "dev/loss") == {10: 1.1, 20: 0.6}
    assert scalars(acc, "baseline/test/macro_f1") == {0: 0.12} and scalars(acc, "baseline/dev/macro_f1") == {0: 0.1}
    assert scalars(acc, "test/macro_f1") == {20: 0.81} and scalars(acc, "test/accuracy") == {20: 0.84}
    assert scalars(acc, "memory/peak_train_mb") == {20: 1234.5}
    assert not any("per_class" in t for t in acc.Tags()["scalars"])  # tables are not scalars


def test_a_resumed_attempt_replaces_what_the_first_logged_past_its_checkpoint(store, tmp_path):
    first, state = a_job(store, tmp_path, "job-tb2")
    first.observe(state, [training(s, 256 * s, 1.0) for s in (2, 10, 14)])
    first.finish("requeued", state)  # the workers died at step 14; the checkpoint is at 10
    second, state = a_job(store, tmp_path, "job-tb2", resumed=10)
    # the resumed run's history starts with the evaluation the checkpoint restored: not logged twice
    second.observe({**state, "history": FINAL["history"]}, [training(s, 256 * s, 0.5) for s in (12, 16, 20)])
    second.finish("succeeded", state, FINAL)

    folder = download(store, "job-tb2", tmp_path / "tb")
    assert len(list(folder.iterdir())) == 2  # one event file per attempt
    acc = accumulate(folder)
    assert scalars(acc, "train/loss") == {2: 1.0, 10: 1.0, 12: 0.5, 16: 0.5, 20: 0.5}
    assert scalars(acc, "dev/macro_f1") == {20: 0.8}


# ------------------------------------------------------------------- MLflow, a real SQLite store
@pytest.fixture(scope="module")
def mlflow_store(tmp_path_factory) -> tuple[str, Path]:
    """One SQLite tracking store for the module's runs (MLflow makes its tables once: seconds); its folder."""
    folder = tmp_path_factory.mktemp("mlflow")
    return f"sqlite:///{folder / 'mlflow.db'}", folder


def test_a_job_is_an_mlflow_run_with_its_params_metrics_and_model(store, tmp_path, mlflow_store):
    import mlflow

    uri, folder = mlflow_store
    model = "tenants/team-a/models/model-ml1"
    store.put_bytes(f"{model}/config.json", b'{"architectures": ["BertForSequenceClassification"]}')
    store.put_bytes(f"{model}/tokenizer/vocab.txt", b"[PAD]\n")
    tracker = run_a_job(store, tmp_path, "job-ml1", mlflow_uri=uri)
    summary = tracker.summary()
    tracker.finish("succeeded", {}, FINAL, model_prefix=model)

    mlflow.set_tracking_uri(uri)
    runs = mlflow.search_runs(experiment_names=["doctune/team-a"], filter_string="tags.`doctune.job_id` = 'job-ml1'")
    assert len(runs) == 1
    run = runs.iloc[0]
    assert run["run_id"] == summary["run_id"] and summary["experiment"] == "doctune/team-a"
    assert run["status"] == "FINISHED" and run["tags.mlflow.runName"] == "bbc lora"
    assert run["params.learning_rate"] == "0.002" and run["params.tuning.lora.r"] == "8"
    assert run["params.tuning.lora.target_modules"] == '["query", "value"]' and "params.dataset.version" not in run
    assert run["metrics.test/macro_f1"] == pytest.approx(0.81)
    assert run["metrics.baseline/test/macro_f1"] == pytest.approx(0.12)
    client = mlflow.MlflowClient(uri)
    assert [(m.step, m.value) for m in client.get_metric_history(run["run_id"], "dev/macro_f1")] == [(10, 0.5), (20, 0.8)]
    assert len(client.get_metric_history(run["run_id"], "train/loss")) == 4
    assert sorted(f.path for f in client.list_artifacts(run["run_id"], "model")) == ["model/config.json",
                                                                                      "model/tokenizer"]
    # beside the SQLite file, not in whatever folder the driver ran in
    assert Path(run["artifact_uri"].removeprefix("file://")).is_relative_to(folder / "mlartifacts")

    # a later attempt of the same job (a pause, a retry) carries on the same run
    again, state = a_job(store, tmp_path, "job-ml1", resumed=20, mlflow_uri=uri)
    again.finish("cancelled", state)
    runs = mlflow.search_runs(experiment_names=["doctune/team-a"], filter_string="tags.`doctune.job_id` = 'job-ml1'")
    assert len(runs) == 1 and runs.iloc[0]["status"] == "KILLED"


def test_a_sweep_is_a_parent_run_and_its_trials_nest_under_it(store, tmp_path, mlflow_store):
    import mlflow

    uri, _ = mlflow_store
    sweep = SweepRun(uri, "", sweep_id="sweep-ml", spec={"tenant": "team-a", "job": SPEC, "algorithm": "grid",
                                                          "search_space": {"learning_rate": {"type": "choice",
                                                                                             "values": [0.001, 0.002]}}})
    parent = sweep.parent_run_id()
    for job_id in ("job-t1", "job-t2"):
        trial = run_a_job(store, tmp_path, job_id, mlflow_uri=uri, parent_run_id=parent)
        trial.finish("succeeded", {}, FINAL)
    sweep.finish("FINISHED", {"job_id": "job-t2", "dev": 0.8}, "macro_f1")

    mlflow.set_tracking_uri(uri)
    runs = mlflow.search_runs(experiment_names=["doctune/team-a"])
    [top] = [row for _, row in runs.iterrows() if row.get("tags.doctune.sweep_id") == "sweep-ml"]
    assert top["run_id"] == parent and top["status"] == "FINISHED" and top["tags.doctune.winner_job_id"] == "job-t2"
    assert top["params.search_space.learning_rate.values"] == "[0.001, 0.002]" and top["params.job.learning_rate"] == "0.002"
    assert top["metrics.best/dev/macro_f1"] == pytest.approx(0.8)
    nested = runs[runs["tags.mlflow.parentRunId"] == parent]
    assert sorted(nested["tags.doctune.job_id"]) == ["job-t1", "job-t2"]


def test_an_unreachable_mlflow_store_never_fails_the_job(store, tmp_path, capsys):
    (tmp_path / "a-file").write_text("not a folder")
    tracker = run_a_job(store, tmp_path, "job-ml-bad", mlflow_uri=f"sqlite:///{tmp_path / 'a-file' / 'mlflow.db'}")
    tracker.finish("succeeded", {}, FINAL)
    assert tracker.summary() is None and "experiment tracking" in capsys.readouterr().err
    acc = accumulate(download(store, "job-ml-bad", tmp_path / "tb"))  # TensorBoard still got everything
    assert scalars(acc, "test/macro_f1") == {20: 0.81}


def test_flatten_params_joins_keys_and_drops_nulls():
    assert flatten_params({"a": {"b": 1, "c": None, "d": [1, "x"]}, "e": "f"}) == {"a.b": "1", "a.d": '[1, "x"]', "e": "f"}


# ------------------------------------------------------------------- the API and the CLI
@pytest.fixture()
def world(tmp_path, s3, store, monkeypatch):  # noqa: F811
    """The API app with tenants team-a (owning job-api, whose tracker ran) and team-b; the CLI's clients
    talk to it in-process."""
    p = Platform(Settings(home=str(tmp_path), database_url=f"sqlite:///{tmp_path / 'doctune.db'}", **s3))
    p.db.migrate()
    api = create_app(p)
    admin = tenants.authenticate(p, tenants.create_admin_key(p))
    _, key_a = tenants.create_tenant(p, admin, TenantSpec(name="team-a"))
    _, key_b = tenants.create_tenant(p, admin, TenantSpec(name="team-b"))
    with p.db.session() as s:
        s.add(Job(id="job-api", tenant_id="team-a", task="classification", spec=SPEC, status="succeeded"))
        s.add(Job(id="job-empty", tenant_id="team-a", task="classification", spec={"tenant": "team-a"},
                  status="running"))
    run_a_job(store, tmp_path, "job-api").finish("succeeded", {}, FINAL)

    previous = session.set_client_factory(in_process_clients(api))
    for var in [v for v in os.environ if v.startswith("DOCTUNE_")]:
        monkeypatch.delenv(var)
    monkeypatch.setenv("DOCTUNE_HOME", str(tmp_path))
    monkeypatch.setenv("DOCTUNE_API_URL", "http://testserver")
    yield {"api": TestClient(api), "a": key_a, "b": key_b}
    session.set_client_factory(previous)
    p.db.dispose()


def test_a_jobs_tensorboard_files_are_its_tenants_only(world):
    api = world["api"]
    mine = api.get("/v1/jobs/job-api/tensorboard", headers={"Authorization": f"Bearer {world['a']}"})
    assert mine.status_code == 200, mine.text
    [f] = mine.json()
    assert f["path"].startswith("events.out.tfevents") and f["bytes"] > 0 and f["expires_s"] == 900
    assert httpx.get(f["url"]).content[:8]  # the presigned URL serves the file
    other = api.get("/v1/jobs/job-api/tensorboard", headers={"Authorization": f"Bearer {world['b']}"})
    assert other.status_code == 404 and other.json()["error"]["code"] == "not_found"
    assert api.get("/v1/jobs/job-api/tensorboard").status_code == 401


def test_the_cli_downloads_one_folder_per_job_and_serves_them(world, tmp_path):
    from doctune.cli.jobs import serve_tensorboard, stop_tensorboard

    logdir = tmp_path / "logs"
    out = CliRunner().invoke(app, ["jobs", "tensorboard", "job-api", "job-empty", "--no-serve", "--logdir", str(logdir)],
                             env={"DOCTUNE_API_KEY": world["a"]})
    assert out.exit_code == 0, (out.stdout, out.stderr, out.exception)
    assert out.stdout.strip() == str(logdir) and "job-empty (running) has no TensorBoard files yet" in out.stderr
    assert sorted(d.name for d in logdir.iterdir()) == ["bbc-lora-job-api", "job-empty"]
    assert scalars(accumulate(logdir / "bbc-lora-job-api"), "dev/macro_f1") == {10: 0.5, 20: 0.8}
    # another tenant's job is refused, and nothing is downloaded for it
    out = CliRunner().invoke(app, ["jobs", "tensorboard", "job-api", "--no-serve", "--logdir", str(tmp_path / "b")],
                             env={"DOCTUNE_API_KEY": world["b"]})
    assert out.exit_code == 2 and "not found" in out.stderr and not (tmp_path / "b").exists()

    proc, url = serve_tensorboard(logdir)
    try:
        assert url.startswith("http://127.0.0.1:")
        deadline = time.monotonic() + 60  # TensorBoard reads the folder on a thread of its own after it starts
        while (tags := httpx.get(url + "data/plugin/scalars/tags", timeout=30).json()).get("bbc-lora-job-api") is None:
            assert time.monotonic() < deadline, tags
            time.sleep(0.5)
        assert {"train/loss", "dev/macro_f1", "test/macro_f1"} <= set(tags["bbc-lora-job-api"])
    finally:
        stop_tensorboard(proc)
    assert proc.poll() is not None
