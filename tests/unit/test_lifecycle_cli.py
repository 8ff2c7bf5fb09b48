"""The dataset lifecycle from the `doctune` command, against the real API app (SQLite, a real SeaweedFS S3
server, no Ray): `datasets append` adds a version by name or id and prints its counts and drift,
`datasets versions` lists them, and `deployments retrain-policy` / `retrain-events` set, show and remove
an endpoint's policy; errors are one line naming the field."""

from __future__ import annotations

import json

from doctune.data import to_jsonl
from doctune.spec import DeploymentSpec
from doctune.store.db import Deployment, Job, Model

from tests.unit.test_cli import add_rows, as_json, cli, env, ok, s3, world  # noqa: F401  (fixtures: the API app on weed)
from tests.unit.test_dataset_versions import records


def test_append_by_name_then_list_the_versions(world, tmp_path):
    first, more = tmp_path / "first.jsonl", tmp_path / "more.jsonl"
    first.write_bytes(to_jsonl(records(60)))
    more.write_bytes(to_jsonl(records(30, start=400)))
    ds = as_json(world["a"], "datasets", "upload", "--name", "lifecycle", "--data", str(first))
    appended = as_json(world["a"], "datasets", "append", "lifecycle", "--data", str(more))
    assert appended["dataset"]["id"] == ds["id"] and appended["version"]["version"] == 2
    assert appended["version"]["records"] == 90 and appended["version"]["drift"]["records"] == 30

    versions = as_json(world["a"], "datasets", "versions", ds["id"])
    assert [v["version"] for v in versions] == [1, 2]
    table = ok(world["a"], "-o", "table", "datasets", "versions", "lifecycle").stdout
    assert "drift.tvd" in table and "sizes.train" in table

    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"text": "a"}\n')
    out = cli(world["a"], "datasets", "append", ds["id"], "--data", str(bad))
    assert out.exit_code != 0 and "error [invalid_dataset]" in out.stderr and "label" in out.stderr
    foreign = cli(world["b"], "datasets", "append", ds["id"], "--data", str(more))
    assert foreign.exit_code != 0 and "error [not_found]" in foreign.stderr
    assert as_json(world["a"], "datasets", "show", ds["id"])["version"] == 2  # the refusals stored nothing


def test_retrain_policy_from_the_command_line(world):
    p = world["platform"]
    spec = {"tenant": "team-a", "task": "classification", "dataset": {"id": "ds-none"}, "max_steps": 1}
    add_rows(p, Job(id="job-lc", tenant_id="team-a", task="classification", status="succeeded", spec=spec,
                    model_id="model-lc"),
             Model(id="model-lc", tenant_id="team-a", job_id="job-lc", task="classification", uri="s3://doctune/m"),
             Deployment(id="dep-lc", tenant_id="team-a", name="lc", model_id="model-lc", route="/team-a/lc",
                        status="running", spec=DeploymentSpec(tenant="team-a", name="lc", model_id="model-lc")
                        .model_dump(mode="json")))
    shown = as_json(world["a"], "deployments", "retrain-policy", "dep-lc", "--min-new-records", "100",
                    "--schedule", "0 3 * * 1")
    assert shown["retrain"]["min_new_records"] == 100 and shown["retrain"]["schedule"] == "0 3 * * 1"
    assert as_json(world["a"], "deployments", "retrain-policy", "dep-lc")["retrain"] == shown["retrain"]
    out = cli(world["a"], "deployments", "retrain-policy", "dep-lc", "--schedule", "nightly")
    assert out.exit_code != 0 and out.stderr.startswith("error [invalid_spec]") and "schedule" in out.stderr
    out = cli(world["b"], "deployments", "retrain-policy", "dep-lc", "--min-new-records", "1")
    assert out.exit_code != 0 and out.stderr.startswith("error [not_found]")
    assert as_json(world["a"], "deployments", "retrain-events", "dep-lc") == []
    assert as_json(world["a"], "deployments", "retrain-policy", "dep-lc", "--off")["retrain"] is None
    assert json.loads(ok(world["a"], "deployments", "show", "dep-lc").stdout)["retrain"] is None
