"""A task is added by writing a plugin alone: the toy ``sentiment`` plugin (tests/toy_task, outside the
package, no edit in platform/) registers in this process with ``register_task`` and in another
through DOCTUNE_TASK_PLUGINS; a broken or duplicate plugin is refused with what is wrong; a job of
the toy task passes the task check; its endpoint's OpenAPI document is valid OpenAPI 3.1 and
documents its own request and answer with examples that the plugin takes; whether its models may
be multiplexed or quantized is read from the plugin; and it really trains (LoRA on MiniLM) and
answers as its document says."""

from __future__ import annotations

import copy
import json
import os
import subprocess
import sys
from functools import cache
from pathlib import Path
from types import SimpleNamespace

import jsonschema
import pytest

import doctune.tasks
from doctune.errors import DoctuneError
from doctune.serve.schemas import endpoint_openapi, multiplexed_openapi, request_model, response_model
from doctune.spec import parse_job_spec
from doctune.tasks import check_can_serve, check_job_task, get_task, register_task, task_names, task_texts
from tests.toy_task import PLUGIN, reviews
from tests.toy_task.schemas import SentimentRequest, SentimentResponse

ROOT = Path(__file__).resolve().parents[2]
JOB = {"tenant": "team-a", "task": "sentiment", "dataset": {"id": "ds-1"}, "max_steps": 10}


@pytest.fixture
def registered():
    """The toy plugin registered in this process, and the registry as it was afterwards (other tests
    count the built-in tasks)."""
    registry = doctune.tasks._registry()
    before = dict(registry)
    try:
        yield register_task(PLUGIN)
    finally:
        registry.clear()
        registry.update(before)


# -- registration ------------------------------------------------------------------------------------
def test_register_task_adds_the_toy_and_refuses_a_second_one_of_its_name(registered):
    assert registered is PLUGIN and get_task("sentiment") is PLUGIN and "sentiment" in task_names()
    with pytest.raises(DoctuneError, match="'sentiment' is registered already"):
        register_task(copy.copy(PLUGIN))
    assert get_task("sentiment") is PLUGIN


def test_a_plugin_missing_what_doctune_reads_is_refused_listing_every_problem():
    half = SimpleNamespace(name="half", validate_record=lambda record, where: record, metric_names=("accuracy",),
                           primary_metric="accuracy", multiplexable=False)
    with pytest.raises(DoctuneError) as e:
        register_task(half)
    problems = [err["message"] for err in e.value.errors]
    for needle in ("predict() is missing", "text_fields", "request_model", "response_example",
                   "multiplex_refusal must say why", "quantizable must be True or False"):
        assert any(needle in p for p in problems), needle
    assert "validate_record" not in e.value.message and "half" not in task_names()
    renamed = copy.copy(PLUGIN)
    renamed.name = "Sentiment Analysis"
    with pytest.raises(DoctuneError, match="name must be"):
        register_task(renamed)


def _run_with_plugins(plugins: str, code: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "DOCTUNE_TASK_PLUGINS": plugins,
           "PYTHONPATH": os.pathsep.join([str(ROOT / "platform"), str(ROOT), os.environ.get("PYTHONPATH", "")])}
    return subprocess.run([sys.executable, "-c", code], env=env, cwd=ROOT, capture_output=True, text=True, timeout=300)


def test_doctune_task_plugins_brings_the_toy_to_another_process():
    """What a Ray worker or Serve replica started with DOCTUNE_TASK_PLUGINS in its environment sees."""
    code = """if True:
        import json
        from doctune.serve.schemas import request_model
        from doctune.spec import parse_job_spec
        from doctune.tasks import check_job_task, get_task, task_names
        spec = parse_job_spec({"tenant": "t", "task": "sentiment", "dataset": {"id": "d"}, "max_steps": 1})
        print(json.dumps({"tasks": task_names(), "checked": check_job_task(spec).name,
                          "module": type(get_task("sentiment")).__module__,
                          "request": request_model("sentiment").__name__}))
    """
    done = _run_with_plugins("tests.toy_task", code)
    assert done.returncode == 0, done.stderr
    out = json.loads(done.stdout.strip().splitlines()[-1])
    assert out == {"tasks": sorted(["classification", "extraction", "generation", "ner", "retrieval",
                                    "summarization", "sentiment"]),
                   "checked": "sentiment", "module": "tests.toy_task", "request": "SentimentRequest"}


def test_a_plugin_module_that_cannot_be_imported_is_named():
    done = _run_with_plugins("tests.no_such_task", "from doctune.tasks import task_names; task_names()")
    assert done.returncode != 0
    assert "DOCTUNE_TASK_PLUGINS names 'tests.no_such_task', which cannot be imported" in done.stderr


# -- the task check of a job ---------------------------------------------------------------------------
def test_a_job_of_the_toy_task_passes_the_task_check_once_it_is_registered():
    spec = parse_job_spec(JOB)  # the spec knows no task; the registry decides
    with pytest.raises(DoctuneError) as e:
        check_job_task(spec)
    assert e.value.field == "task" and e.value.http_status == 422 and "unknown task 'sentiment'" in e.value.message
    registry = doctune.tasks._registry()
    before = dict(registry)
    try:
        register_task(PLUGIN)
        assert check_job_task(spec) is PLUGIN
    finally:
        registry.clear()
        registry.update(before)


# -- the endpoint's OpenAPI document ----------------------------------------------------------------
@cache
def doc() -> dict:
    """The document a TaskEndpoint replica of the toy task builds (doctune.serve.app) and serves."""
    return endpoint_openapi(PLUGIN, "doctune sentiment endpoint team-a/reviews")


def _validator(schema: dict) -> jsonschema.Draft202012Validator:
    return jsonschema.Draft202012Validator({**schema, "components": doc()["components"]})


def _predict() -> dict:
    return doc()["paths"]["/predict"]["post"]


def test_the_toy_endpoint_document_is_valid_openapi_31():
    from schemathesis.specs.openapi.definitions import OPENAPI_31

    for d in (doc(), multiplexed_openapi(PLUGIN, "doctune sentiment endpoint team-a/reviews (multiplexed)")):
        jsonschema.Draft202012Validator(OPENAPI_31).validate(d)
        for schema in d["components"]["schemas"].values():
            jsonschema.Draft202012Validator.check_schema(schema)
    import schemathesis

    assert len([op.ok() for op in schemathesis.openapi.from_dict(doc()).get_all_operations()]) == 2
    assert doc()["info"]["title"] == "doctune sentiment endpoint team-a/reviews"
    assert "A doctune sentiment endpoint" in doc()["info"]["description"]
    for name, schema in doc()["components"]["schemas"].items():
        for field, prop in schema.get("properties", {}).items():
            assert prop.get("description"), f"{name}.{field} has no description"


def test_the_document_is_the_toys_own_request_answer_and_examples():
    predict = _predict()
    body = predict["requestBody"]["content"]["application/json"]
    assert body["schema"] == {"$ref": "#/components/schemas/SentimentRequest"}
    answer = predict["responses"]["200"]["content"]["application/json"]
    assert answer["schema"] == {"$ref": "#/components/schemas/SentimentResponse"}
    assert predict["summary"] == PLUGIN.endpoint_summary and predict["description"] == PLUGIN.endpoint_description
    assert body["examples"] == PLUGIN.request_examples
    for name, example in body["examples"].items():  # examples are tests: schema and plugin take each
        assert not list(_validator(body["schema"]).iter_errors(example["value"])), name
        assert PLUGIN.parse_request(example["value"]), name
    _validator(answer["schema"]).validate(answer["example"])
    # the 400 example is what the plugin answers to an empty body
    assert predict["responses"]["400"]["content"]["application/json"]["example"]["error"]["field"] == "reviews"


@pytest.mark.parametrize("body", [{}, {"reviews": []}, {"reviews": ["ok", " "]}, {"reviews": "one"},
                                  {"reviews": ["ok"], "k": 1}, {"inputs": ["ok"]}, ["ok"]])
def test_bodies_the_toy_refuses_fail_its_schema(body):
    with pytest.raises(DoctuneError):
        PLUGIN.parse_request(body)
    assert list(_validator(_predict()["requestBody"]["content"]["application/json"]["schema"]).iter_errors(body))


def test_request_and_response_models_are_read_from_the_registered_plugin(registered):
    assert request_model("sentiment") is SentimentRequest and response_model("sentiment") is SentimentResponse
    assert endpoint_openapi("sentiment", "t")["paths"]["/predict"]["post"]["summary"] == PLUGIN.endpoint_summary


# -- capabilities --------------------------------------------------------------------------------------
def test_serving_capabilities_are_read_from_the_plugin():
    from doctune.serve.adapters import AdapterPool

    check_can_serve(PLUGIN, multiplex=True)  # no error: it says it can
    check_can_serve(PLUGIN, quantize="int8")
    AdapterPool(PLUGIN)
    with pytest.raises(DoctuneError, match="exported merged") as e:  # a rule for every plugin
        check_can_serve(PLUGIN, multiplex=True, merged=True)
    assert e.value.field == "multiplex"

    alone = copy.copy(PLUGIN)
    alone.multiplexable, alone.multiplex_refusal = False, "each sentiment model keeps a lexicon of its own"
    alone.quantizable, alone.quantize_refusal = False, "its scores are calibrated in fp32"
    with pytest.raises(DoctuneError, match="lexicon of its own") as e:
        check_can_serve(alone, multiplex=True)
    assert e.value.field == "multiplex" and e.value.http_status == 422
    with pytest.raises(DoctuneError, match="calibrated in fp32") as e:
        check_can_serve(alone, quantize="int8")
    assert e.value.field == "quantize" and "quantize: none" in e.value.message
    with pytest.raises(DoctuneError, match="lexicon of its own"):
        AdapterPool(alone)


# -- it trains and serves ------------------------------------------------------------------------------
@pytest.fixture
def one_thread():
    """One torch thread for a few small steps: on a busy machine more threads mostly wait for each other."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def test_the_toy_trains_with_lora_on_minilm_and_answers_as_documented(registered, one_thread):
    import torch
    from transformers import AutoTokenizer

    from doctune.base_models import resolve_base_model
    from doctune.data import parse_jsonl, to_jsonl
    from doctune.serve.quantize import measure_quantization
    from doctune.train.tuning import apply_tuning

    records = parse_jsonl(to_jsonl(reviews()), "sentiment", "reviews.jsonl")  # the data path finds the toy
    assert task_texts(PLUGIN, records) == [r["text"] for r in records]  # its text_fields
    info = PLUGIN.check_splits({"train": records})
    base = resolve_base_model("all-minilm-l6-v2")
    tokenizer = AutoTokenizer.from_pretrained(base)
    spec = parse_job_spec({**JOB, "base_model": "all-minilm-l6-v2", "tuning": {"method": "lora", "lora": {"r": 8}}})
    assert check_job_task(spec) is PLUGIN
    torch.manual_seed(0)
    model = apply_tuning(PLUGIN.build_model(base, info), spec, PLUGIN, 8)
    batch = PLUGIN.collate(PLUGIN.encode(records, tokenizer, info, 32), tokenizer)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=3e-3)
    losses = []
    model.train()
    for _ in range(8):
        loss = model(**batch).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0], losses
    model.eval()
    predicted, gold = PLUGIN.predictions(model(**batch), batch)
    assert PLUGIN.metrics(predicted, gold, info)["accuracy"] >= 0.9

    answer = {"model_id": "model-toy", "predictions": PLUGIN.predict(
        model, tokenizer, PLUGIN.parse_request({"reviews": ["I loved every minute of it.", "A boring mess."]}), info, 32)}
    assert [p["sentiment"] for p in answer["predictions"]] == ["positive", "negative"]
    _validator(_predict()["responses"]["200"]["content"]["application/json"]["schema"]).validate(answer)
    assert SentimentResponse.model_validate(answer).model_dump() == answer
    # quantizable: the int8 measurement a deployment with quantize: int8 makes runs through the plugin
    measured = measure_quantization(model, PLUGIN, tokenizer, records, info, 32)
    assert measured["metric"] == "accuracy" and measured["examples"] == len(records)


# -- the doors pick it up --------------------------------------------------------------------------
@pytest.fixture
def api(registered, tmp_path, monkeypatch):
    """The REST API app in this process, the toy registered, and the CLI talking to it."""
    from fastapi.testclient import TestClient

    from doctune.api.app import create_app
    from doctune.cli import session
    from doctune.client import DoctuneClient
    from doctune.config import Settings
    from doctune.services import Platform, tenants

    p = Platform(Settings(home=str(tmp_path), database_url=f"sqlite:///{tmp_path / 'doctune.db'}"))
    p.db.migrate()
    app = create_app(p)
    key = tenants.create_admin_key(p)

    def in_process(api_url: str, api_key: str | None) -> DoctuneClient:
        client = DoctuneClient(api_url, api_key)
        client.http = TestClient(app, base_url=api_url, headers={"Authorization": f"Bearer {api_key}"})
        return client

    for var in [v for v in os.environ if v.startswith("DOCTUNE_")]:
        monkeypatch.delenv(var)
    monkeypatch.setenv("DOCTUNE_API_URL", "http://testserver")
    previous = session.set_client_factory(in_process)
    yield SimpleNamespace(app=app, http=TestClient(app, headers={"Authorization": f"Bearer {key}"}), key=key)
    session.set_client_factory(previous)
    p.db.dispose()


def test_the_api_document_and_task_list_name_the_toy(api):
    document = api.app.openapi()
    assert "sentiment" in document["components"]["schemas"]["JobSpec"]["properties"]["task"]["enum"]
    [toy] = [t for t in api.http.get("/v1/tasks").json() if t["name"] == "sentiment"]
    assert toy["primary_metric"] == "accuracy" and toy["metric_labels"]["f1"] == "F1 (positive)"
    assert toy["multiplexable"] is True and toy["text_fields"] == ["text"]


def test_the_cli_table_of_tasks_shows_the_toy_with_its_metrics(api):
    from typer.testing import CliRunner

    from doctune.cli import app as cli_app

    result = CliRunner().invoke(cli_app, ["-o", "table", "tasks", "list"], env={"DOCTUNE_API_KEY": api.key})
    assert result.exit_code == 0, result.output
    row = next(line for line in result.output.splitlines() if "sentiment" in line)
    assert "accuracy" in row
