"""Every tuning method trains under every ZeRO stage with gradient accumulation: the
loss falls over a few optimizer steps on the same batches (tuning_matrix.py runs the
24 combinations in one DeepSpeed process, started with the session's other jobs and run on
one thread beside them). A real Ray job then trains with a non-LoRA method under ZeRO-3 and
exports a model that serves."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
from transformers import AutoTokenizer

from doctune.tasks import get_task

from .conftest import ahead, finished, tiny_job
from .tuning_matrix import METHODS

# the exhaustive matrix (24 DeepSpeed runs) and a second ZeRO-3 job: `make test-full`, not CI's `make test`
pytestmark = pytest.mark.full

REPO = Path(__file__).resolve().parents[2]


@ahead()
def tuning_matrix(request):
    """Not a Ray job: the matrix process, started now so that it runs while the session's other jobs do."""
    out = request.getfixturevalue("tmp_path_factory").mktemp("matrix")
    proc = subprocess.Popen([sys.executable, "-m", "tests.integration.tuning_matrix"], cwd=REPO,
                            stdout=open(out / "stdout", "w"), stderr=open(out / "stderr", "w"),  # files: no pipe fills up
                            env={**os.environ, "DS_ACCELERATOR": "cpu", "MATRIX_THREADS": "1"})
    return None, proc, out


@ahead()
def prefix_training(request):
    client, dataset = request.getfixturevalue("client_a"), request.getfixturevalue("bbc_dataset")
    spec = tiny_job(dataset["id"], tuning={"method": "prefix", "prefix": {"num_virtual_tokens": 8}},
                    deepspeed={"zero_stage": 3}, max_steps=6, eval_interval=100, checkpoint_interval=3,
                    learning_rate=1e-2)
    return client, client.submit_job(spec)


@pytest.fixture(scope="module")
def matrix(jobs_ahead):
    _, proc, out = jobs_ahead["tuning_matrix"]
    proc.wait(timeout=1500)
    stdout, stderr = (out / "stdout").read_text(), (out / "stderr").read_text()
    results = [json.loads(l[len("RESULT "):]) for l in stdout.splitlines() if l.startswith("RESULT ")]
    assert results, stderr[-3000:]
    return {(r["method"], r["stage"]): r for r in results}


@pytest.mark.parametrize("stage", [0, 1, 2, 3])
@pytest.mark.parametrize("method", list(METHODS))
def test_method_trains_under_zero_stage(matrix, method, stage):
    r = matrix.get((method, stage))
    assert r is not None, f"{method} under ZeRO-{stage} did not run"
    first, last = r["losses"][0], r["losses"][-1]
    assert last < first - 0.02, f"{method}/ZeRO-{stage}: loss {first:.3f} -> {last:.3f}"
    if method == "full":
        assert r["trainable"] == r["total"]
    else:  # adapters, or the top layer and the head, only
        assert 0 < r["trainable"] < 0.2 * r["total"]


def test_same_method_same_curve_across_stages(matrix):
    """ZeRO changes where state lives, not the maths: one worker gives the same curve at every stage."""
    for method in METHODS:
        curves = [matrix[(method, s)]["losses"] for s in range(4)]
        for c in curves[1:]:
            assert c == pytest.approx(curves[0], abs=1e-3), method


def test_prefix_tuning_job_under_zero3_exports_an_adapter_that_loads(jobs_ahead, bbc_dataset, tmp_path):
    client_a, job = finished(jobs_ahead, "prefix_training")
    model = client_a.get_model(job["model_id"])
    assert model["merged"] is False  # virtual tokens cannot be merged: exported as an adapter
    files = client_a.request("GET", f"/v1/models/{job['model_id']}/files")
    assert {"adapter_config.json", "doctune.json"} <= {f["path"] for f in files}
    assert set(job["report"]["metrics"]) >= {"accuracy", "macro_f1"}
    for f in files:  # what a serving replica does: fetch the files, load through the task plugin, predict
        (tmp_path / f["path"]).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / f["path"]).write_bytes(httpx.get(f["url"], timeout=60).content)
    plugin = get_task("classification")
    model = plugin.load_model(str(tmp_path))
    tokenizer = AutoTokenizer.from_pretrained(tmp_path)
    meta = json.loads((tmp_path / "doctune.json").read_text())
    [pred] = plugin.predict(model, tokenizer, ["Shares in the bank fell after profits missed forecasts."], meta, 64)
    assert pred["label"] in bbc_dataset["info"]["labels"]
