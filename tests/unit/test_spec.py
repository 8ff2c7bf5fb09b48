"""JobSpec is the one description of a job: shipped examples validate, and every
bad field is reported at once, by path, with how to fix it."""

from pathlib import Path

import pytest

from doctune.errors import DoctuneError
from doctune.spec import DeploymentSpec, load_job_spec, parse_job_spec
from doctune.tasks import check_job_task

EXAMPLES = Path(__file__).resolve().parents[2] / "docs" / "examples"
GOOD = {"tenant": "demo", "task": "classification", "dataset": {"id": "ds-1"}, "max_steps": 10}


@pytest.mark.parametrize("path", sorted(EXAMPLES.glob("*.yaml")), ids=lambda p: p.name)
def test_every_shipped_example_validates(path):
    from doctune.tasks import get_task

    spec = load_job_spec(path)
    assert f"task: {spec.task}" in path.read_text()
    plugin = get_task(spec.task)  # a real plugin, and a metric it reports for early stopping
    assert spec.early_stopping is None or spec.early_stopping.metric in plugin.metric_names


def test_bbc_example_is_the_demo_job():
    spec = load_job_spec(EXAMPLES / "bbc-classification.yaml")
    assert (spec.task, spec.tuning.method, spec.deepspeed.zero_stage) == ("classification", "lora", 2)
    assert (spec.num_workers, spec.gradient_accumulation_steps) == (2, 4)
    assert "task: classification" in (EXAMPLES / "bbc-classification.yaml").read_text()


def test_unknown_field_is_named():
    with pytest.raises(DoctuneError) as e:
        parse_job_spec({**GOOD, "learnin_rate": 0.1})
    assert e.value.code == "invalid_spec"
    assert e.value.field == "learnin_rate"
    assert "unknown field" in e.value.message


def test_negative_learning_rate_says_how_to_fix():
    with pytest.raises(DoctuneError) as e:
        parse_job_spec({**GOOD, "learning_rate": -1})
    assert e.value.field == "learning_rate"
    assert "Typical values" in e.value.message


def test_all_errors_reported_at_once_with_paths():
    bad = {**GOOD, "learning_rate": -1, "deepspeed": {"zero_stage": 5}, "tuning": {"lora": {"r": 0}}, "bogus": 1}
    with pytest.raises(DoctuneError) as e:
        parse_job_spec(bad)
    fields = {err["field"] for err in e.value.errors}
    assert {"learning_rate", "deepspeed.zero_stage", "tuning.lora.r", "bogus"} <= fields


@pytest.mark.parametrize(
    "patch, needle",
    [
        ({"deepspeed": {"zero_stage": 2, "offload_params": True}}, "offload_params needs zero_stage 3"),
        ({"deepspeed": {"zero_stage": 0, "offload_optimizer": True}}, "offload_optimizer needs zero_stage >= 1"),
        ({"epochs": 2}, "exactly one of epochs or max_steps"),
        ({"task": "poetry"}, "unknown task"),
        ({"tenant": "Bad Tenant"}, "lowercase"),
        ({"micro_batch_size": 0}, "micro_batch_size"),
    ],
)
def test_cross_field_rules(patch, needle):
    with pytest.raises(DoctuneError) as e:
        check_job_task(parse_job_spec({**GOOD, **patch}))  # the task is checked against the registered plugins
    assert needle in e.value.message


@pytest.mark.parametrize("model", ["JobSpec", "DeploymentSpec", "PromotionSpec", "TenantSpec"])
def test_every_field_has_a_description(model):
    import doctune.spec

    schema = getattr(doctune.spec, model).model_json_schema()
    parts = [schema, *schema.get("$defs", {}).values()]
    missing = [f"{p.get('title')}.{name}" for p in parts for name, prop in p.get("properties", {}).items()
               if not prop.get("description")]
    assert missing == []


def test_deployment_replica_bounds():
    with pytest.raises(Exception, match="min_replicas"):
        DeploymentSpec(tenant="demo", model_id="m", name="x", min_replicas=3, max_replicas=2)


def test_spec_file_that_is_not_yaml(tmp_path):
    f = tmp_path / "job.yaml"
    f.write_text("tenant: [unclosed")
    with pytest.raises(DoctuneError, match="not valid YAML"):
        load_job_spec(f)
