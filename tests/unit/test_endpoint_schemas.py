"""Each task endpoint's OpenAPI document is valid OpenAPI 3.1 and tells the truth about POST /predict: the
requests the task plugins take (their own tests' and docs' examples) pass its request schema, bodies the
plugins refuse fail it, every task's real predictions (MiniLM or tiny models, untrained heads) validate
against its response schema with no field left undocumented, and the replica serves the document at
<route>/openapi.json and <route>/docs under its route prefix."""

from functools import cache
from types import SimpleNamespace

import jsonschema
import pytest
from pydantic import ValidationError

from doctune.errors import DoctuneError
from doctune.serve.schemas import endpoint_openapi, request_model, response_model
from doctune.tasks import get_task, task_names
from doctune.tasks.serving import MAX_INPUTS_PER_REQUEST

TASKS = ["classification", "extraction", "generation", "ner", "retrieval", "summarization"]
PAIR = {"text": "Tim Cook runs Apple.", "head": {"start": 0, "end": 8}, "tail": {"start": 14, "end": 19}}


@cache
def doc(task: str) -> dict:
    return endpoint_openapi(task, f"doctune {task} endpoint team-a/bbc")


def _validator(task: str, schema: dict) -> jsonschema.Draft202012Validator:
    """A JSON Schema validator for one schema of the document, its $refs resolved within the document."""
    return jsonschema.Draft202012Validator({**schema, "components": doc(task)["components"]})


def _request_schema(task: str) -> dict:
    return doc(task)["paths"]["/predict"]["post"]["requestBody"]["content"]["application/json"]["schema"]


def _response_schema(task: str) -> dict:
    return doc(task)["paths"]["/predict"]["post"]["responses"]["200"]["content"]["application/json"]["schema"]


def schema_takes(task: str, body) -> bool:
    """Whether the document's request schema and the pydantic request model both take ``body`` (they must agree)."""
    by_document = not list(_validator(task, _request_schema(task)).iter_errors(body))
    try:
        request_model(task).model_validate(body)
        by_model = True
    except Exception:
        by_model = False
    assert by_document == by_model, (task, body, by_document, by_model)
    return by_document


def plugin_takes(task: str, body) -> bool:
    try:
        get_task(task).parse_request(body)
        return True
    except DoctuneError as exc:
        assert exc.code == "invalid_request" and exc.field, exc.to_dict()
        return False


# -- the document ----------------------------------------------------------------------------------------
def test_every_task_has_a_document():
    assert sorted(task_names()) == TASKS
    with pytest.raises(DoctuneError, match="choose one of: classification") as e:
        endpoint_openapi("translation", "x")
    assert e.value.field == "task"


def _refs(node):
    if isinstance(node, dict):
        if isinstance(node.get("$ref"), str):
            yield node["$ref"]
        for value in node.values():
            yield from _refs(value)
    elif isinstance(node, list):
        for value in node:
            yield from _refs(value)


@pytest.mark.parametrize("task", TASKS)
def test_the_document_is_valid_openapi(task):
    d = doc(task)
    try:
        from openapi_spec_validator import validate
    except ImportError:  # not a dependency: the OpenAPI 3.1 meta-schema schemathesis ships, and each schema
        from schemathesis.specs.openapi.definitions import OPENAPI_31

        jsonschema.Draft202012Validator(OPENAPI_31).validate(d)
        for schema in d["components"]["schemas"].values():
            jsonschema.Draft202012Validator.check_schema(schema)
    else:
        validate(d)
    for ref in _refs(d):  # every $ref points into the document
        node = d
        for part in ref.removeprefix("#/").split("/"):
            node = node[part]
    import schemathesis

    operations = [op.ok() for op in schemathesis.openapi.from_dict(d).get_all_operations()]  # as a client loads it
    assert len(operations) == 2

    assert d["openapi"].startswith("3.1") and d["info"]["title"] == f"doctune {task} endpoint team-a/bbc"
    assert set(d["paths"]) == {"/predict", "/"}
    predict, describe = d["paths"]["/predict"]["post"], d["paths"]["/"]["get"]
    assert predict["requestBody"]["required"] is True
    assert _request_schema(task) == {"$ref": f"#/components/schemas/{request_model(task).__name__}"}
    assert _response_schema(task) == {"$ref": f"#/components/schemas/{response_model(task).__name__}"}
    # errors are the endpoint's own 400/401/403 bodies, never FastAPI's 422
    assert sorted(predict["responses"]) == ["200", "400", "401", "403"]
    assert sorted(describe["responses"]) == ["200", "401", "403"]
    assert "HTTPValidationError" not in d["components"]["schemas"]
    for status, code in (("400", "invalid_request"), ("401", "unauthenticated"), ("403", "forbidden")):
        answer = predict["responses"][status]["content"]["application/json"]
        assert answer["schema"] == {"$ref": "#/components/schemas/ErrorResponse"}
        assert answer["example"]["error"]["code"] == code
        _validator(task, answer["schema"]).validate(answer["example"])
    assert predict["responses"]["400"]["content"]["application/json"]["example"]["error"]["field"]
    # the API key: a bearer scheme on both operations
    assert d["components"]["securitySchemes"]["ApiKey"]["type"] == "http"
    assert d["components"]["securitySchemes"]["ApiKey"]["scheme"] == "bearer"
    assert predict["security"] == describe["security"] == [{"ApiKey": []}]
    # every field of every schema is described for the reader of /docs
    for name, schema in d["components"]["schemas"].items():
        for field, prop in schema.get("properties", {}).items():
            assert prop.get("description"), f"{name}.{field} has no description"


@pytest.mark.parametrize("task", TASKS)
def test_the_documented_examples_are_taken_by_schema_and_plugin(task):
    """Examples are tests: each request example passes the schema and the plugin; the answer example the schema."""
    predict = doc(task)["paths"]["/predict"]["post"]
    examples = predict["requestBody"]["content"]["application/json"]["examples"]
    assert len(examples) >= 2
    for name, example in examples.items():
        assert schema_takes(task, example["value"]) and plugin_takes(task, example["value"]), name
    answer = predict["responses"]["200"]["content"]["application/json"]
    _validator(task, answer["schema"]).validate(answer["example"])


# -- requests: what the plugins take and refuse ------------------------------------------------------
TAKEN = {
    "classification": [{"inputs": ["a document"]}, {"inputs": ["a b", "c"]}, {"text": "Stocks fell sharply ..."},
                       {"inputs": ["x"] * MAX_INPUTS_PER_REQUEST}],
    "ner": [{"inputs": ["a b", "c"]}, {"inputs": ["View from the Empire State Building in NYC"]},
            {"text": "Tim Cook visited Paris"}, {"text": "腾讯在深圳"}],
    "extraction": [{"text": "Bob in Paris"}, {"inputs": ["a b", "c"]}, {"inputs": [PAIR]},
                   {"inputs": [{**PAIR, "head": {"start": 0, "end": 8, "type": "person"}}]}],
    "summarization": [{"inputs": ["Quarterly profits at US media giant TimeWarner jumped 76% ..."],
                       "parameters": {"max_new_tokens": 32, "temperature": 0, "top_p": 1}},
                      {"text": "one document"}, {"inputs": ["doc"], "parameters": {}},
                      {"inputs": ["doc"], "parameters": {"max_new_tokens": 512, "temperature": 2, "top_p": 0.01}},
                      {"inputs": ["x" * 20_000]}],
    "generation": [{"inputs": [{"topic": "sport"}], "parameters": {"temperature": 0.7}},
                   {"inputs": [{"topic": "sport", "headline": "Owen double sinks Chelsea"}],
                    "parameters": {"max_new_tokens": 96, "temperature": 0.7, "top_p": 0.9}},
                   {"inputs": [{"tags": ["a", "b", ""], "year": 2024, "final": True, "price": 1.5}, {"x": []}]}],
    "retrieval": [{"query": "rates"}, {"queries": ["a", "b"], "k": 3}, {"query": "interest rates held", "k": 100},
                  {"queries": ["q"] * MAX_INPUTS_PER_REQUEST, "k": 1}],
}
REFUSED = {
    "classification": [{"inputs": []}, {"inputs": ["ok", "  "]}, {"inputs": "text"}, ["x"], {"inputs": [3]}, {},
                       {"input": ["typo"]}],
    "ner": [{"inputs": []}, {"inputs": ["ok", "  "]}, {"inputs": "text"}, ["x"], {"text": ""}, {"text": 5}],
    "extraction": [{"inputs": []}, {"inputs": "text"}, ["x"], {"text": ""}, {"inputs": ["ok", "  "]},
                   {"inputs": ["ok", PAIR]}, {"inputs": [PAIR, {**PAIR, "relation": "x"}]},
                   {"inputs": [{**PAIR, "text": 5}]}, {"inputs": [{k: PAIR[k] for k in ("text", "head")}]},
                   {"inputs": [{**PAIR, "head": {"start": 0, "end": 8, "type": ""}}]},
                   {"inputs": [{**PAIR, "head": {"start": "0", "end": 8}}]},
                   {"inputs": [{**PAIR, "head": {"start": 0, "end": 8, "kind": "x"}}]}],
    "summarization": [{"inputs": "one doc"}, {"inputs": ["doc"], "parameters": {"temperature": 3}},
                      {"inputs": ["doc"], "parameters": {"top_p": 0}},
                      {"inputs": ["doc"], "parameters": {"max_new_tokens": 0}},
                      {"inputs": ["doc"], "parameters": {"max_new_tokens": 513}},
                      {"inputs": ["doc"], "parameters": {"max_new_tokens": True}},
                      {"inputs": ["doc"], "parameters": {"temperature": "0.7"}},
                      {"inputs": ["doc"], "parameters": {"beams": 2}}, {"inputs": ["doc"], "parameters": "greedy"},
                      {"inputs": ["x" * 20_001]}, {"text": " "}, ["doc"]],
    "generation": [{"inputs": [{"topic": {"nested": 1}}]}, {"inputs": []}, {"inputs": [{}]}, {"inputs": ["text"]},
                   {"inputs": [{"topic": " "}]}, {"inputs": [{" ": "x"}]}, {"inputs": [{"a": [{"b": 1}]}]},
                   {"inputs": [{"a": None}]}, {"inputs": [{"a": "b"}], "parameters": {"top_p": 1.5}}, {"text": "x"}],
    "retrieval": [{"query": "a", "k": 0}, {"query": "a", "k": 101}, {"query": "a", "k": "5"}, {"query": "a", "k": True},
                  {"query": ""}, {"queries": []}, {"queries": ["a", 3]}, {"query": "a", "queries": ["b"]}, {"k": 3},
                  {"inputs": ["a"]}, ["a"], {"query": "a", "k": 2.5}],
}


@pytest.mark.parametrize("task", TASKS)
def test_the_requests_the_plugins_take_pass_the_schema(task):
    for body in TAKEN[task]:
        assert plugin_takes(task, body), body
        assert schema_takes(task, body), body


@pytest.mark.parametrize("task", TASKS)
def test_the_bodies_the_plugins_refuse_fail_the_schema(task):
    for body in REFUSED[task]:
        assert not plugin_takes(task, body), body
        assert not schema_takes(task, body), body


@pytest.mark.parametrize("task", TASKS)
def test_more_inputs_than_the_endpoint_takes_fail_the_schema(task):
    """The app (not the plugin) answers 400 past MAX_INPUTS_PER_REQUEST inputs; the schema says so."""
    many = MAX_INPUTS_PER_REQUEST + 1
    body = {"retrieval": {"queries": ["q"] * many}, "generation": {"inputs": [{"a": "b"}] * many},
            "extraction": {"inputs": [PAIR] * many}}.get(task, {"inputs": ["x"] * many})
    assert plugin_takes(task, body) and len(get_task(task).parse_request(body)) > MAX_INPUTS_PER_REQUEST
    assert not schema_takes(task, body)


def test_checks_the_schema_leaves_to_the_plugin_are_described():
    """A span past its text, overlapping spans and a too-long rendered generation input pass the schema (JSON
    Schema cannot compare values), are refused by the plugin, and are told in the field descriptions."""
    for body in ({"inputs": [{**PAIR, "tail": {"start": 14, "end": 40}}]},
                 {"inputs": [{**PAIR, "tail": {"start": 2, "end": 12}}]}):
        assert schema_takes("extraction", body) and not plugin_takes("extraction", body)
    pair = doc("extraction")["components"]["schemas"]
    assert "len(text)" in pair["EntitySpan"]["properties"]["end"]["description"]
    assert "must not overlap" in pair["EntityPair"]["properties"]["tail"]["description"]
    long = {"inputs": [{"a": "x" * 19_999, "b": "y"}]}
    assert schema_takes("generation", long) and not plugin_takes("generation", long)
    inputs = doc("generation")["components"]["schemas"]["GenerationRequest"]["properties"]["inputs"]
    assert "20,000 characters" in inputs["description"]


# -- responses: real predictions ---------------------------------------------------------------------
def assert_answers(task: str, predictions: list) -> None:
    """The endpoint's answer for these predictions validates against the document and the response model,
    which keeps every field of it (no field of a real answer is undocumented)."""
    body = {"model_id": "model-3f9c2a", "predictions": predictions}
    _validator(task, _response_schema(task)).validate(body)
    assert response_model(task).model_validate(body).model_dump(exclude_unset=True) == body


@cache
def minilm() -> str:
    from doctune.base_models import resolve_base_model

    return resolve_base_model("all-minilm-l6-v2")


@cache
def minilm_tokenizer():
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(minilm())


def _forced(model, label_index: int):
    """Make ``label_index`` win on every input (and every other label lose), so an untrained head finds spans."""
    import torch

    with torch.no_grad():
        model.classifier.weight.zero_()
        model.classifier.bias.fill_(-5.0)
        model.classifier.bias[label_index] = 5.0
    return model.eval()


def test_classification_answers_match_the_schema():
    plugin, texts = get_task("classification"), ["Stocks fell sharply on Monday.", "Owen scored twice."]
    info = {"labels": ["business", "politics", "sport"]}
    single = plugin.predict(plugin.build_model(minilm(), info).eval(), minilm_tokenizer(), texts, info, 32)
    assert set(single[0]) == {"label", "score", "probabilities"}
    multi_info = {**info, "multi_label": True}
    multi = plugin.predict(_forced(plugin.build_model(minilm(), multi_info), 2), minilm_tokenizer(), texts, info, 32)
    assert multi[0]["labels"] == ["sport"]
    assert_answers("classification", single)
    assert_answers("classification", multi)


def test_ner_answers_match_the_schema():
    plugin = get_task("ner")
    info = {"labels": ["O", "B-loc", "I-loc", "B-person", "I-person"]}
    model = _forced(plugin.build_model(minilm(), info), 1)  # B-loc everywhere: every word an entity
    out = plugin.predict(model, minilm_tokenizer(), ["  Tim Cook\tvisited   Paris!", "腾讯在深圳"], info, 64)
    assert len(out[0]["entities"]) == 4
    assert_answers("ner", out)


def test_extraction_answers_of_both_kinds_match_the_schema():
    plugin = get_task("extraction")
    rel = {"kind": "relation", "labels": ["no_relation", "founded", "leads"]}
    model = _forced(plugin.build_model(minilm(), rel), 2)
    relations = plugin.predict(model, minilm_tokenizer(), plugin.parse_request({"inputs": [PAIR]}), rel, 64)
    assert relations[0]["relation"] == "leads"
    fields = {"kind": "fields", "labels": ["O", "B-role", "I-role", "B-speaker", "I-speaker"]}
    model = _forced(plugin.build_model(minilm(), fields), 1)
    found = plugin.predict(model, minilm_tokenizer(), ["said Bob, economist."], fields, 64)
    assert found[0]["fields"]["role"] and found[0]["fields"]["speaker"] == []
    assert_answers("extraction", relations)
    assert_answers("extraction", found)
    # each kind's answer is only the kind it is
    with pytest.raises(ValidationError):
        response_model("extraction").model_validate({"model_id": "m", "predictions": [{"entities": []}]})


def test_retrieval_answers_match_the_schema(tmp_path):
    import json

    import torch
    from transformers import BertConfig, BertModel

    plugin, tok = get_task("retrieval"), minilm_tokenizer()
    torch.manual_seed(0)
    BertModel(BertConfig(vocab_size=tok.vocab_size, hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                         intermediate_size=64, max_position_embeddings=128)).save_pretrained(tmp_path / "base")
    tok.save_pretrained(tmp_path / "base")
    model = plugin.build_model(str(tmp_path / "base"), {})
    out = tmp_path / "export"
    model.save_pretrained(out, safe_serialization=True)
    tok.save_pretrained(out)
    pairs = [{"query": "cat", "document": "The cat sat on the mat. " * 20, "doc_id": "d-cat"},
             {"query": "rain", "document": "Heavy rain tomorrow."}]
    meta = {"task": "retrieval", "labels": None, "max_seq_length": 48}
    meta.update(plugin.export_extras(model, tok, {}, {"train": pairs, "dev": [], "test": []}, 48, out) or {})
    (out / "doctune.json").write_text(json.dumps(meta))
    served = plugin.load_model(str(out))
    results = plugin.predict(served, tok, plugin.parse_request({"queries": ["cat", "rain"], "k": 5}), meta, 48)
    assert [len(r["results"]) for r in results] == [2, 2]
    assert_answers("retrieval", results)


@pytest.fixture(scope="module")
def tiny_writer():
    """A 1-layer, 32-wide random Llama over MiniLM's vocabulary: the text tasks' real predict (prompt, generate,
    decode) writes a few tokens in milliseconds; what it writes is noise, its shape is the answer's."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    tok = minilm_tokenizer()
    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=tok.vocab_size, hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                      num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=128)
    return LlamaForCausalLM(cfg).eval(), tok


@pytest.mark.parametrize("task, body", [
    ("summarization", {"inputs": ["Quarterly profits jumped.", "The dollar rose."], "parameters": {"max_new_tokens": 3}}),
    ("generation", {"inputs": [{"topic": "sport", "headline": "Owen double"}],
                    "parameters": {"max_new_tokens": 3, "temperature": 0.7, "top_p": 0.9}}),
])
def test_written_answers_match_the_schema(tiny_writer, task, body):
    model, tok = tiny_writer
    plugin = get_task(task)
    out = plugin.predict(model, tok, plugin.parse_request(body), {}, 64)
    assert len(out) == len(body["inputs"])
    assert_answers(task, out)


def test_the_model_description_matches_what_get_answers():
    from doctune.serve.schemas import ModelDescription

    for task, labels in (("ner", ["O", "B-loc", "I-loc"]), ("retrieval", None)):
        answer = {"model_id": "model-3f9c2a", "task": task, "labels": labels}  # TaskEndpoint.describe's keys
        schema = doc(task)["paths"]["/"]["get"]["responses"]["200"]["content"]["application/json"]["schema"]
        _validator(task, schema).validate(answer)
        assert ModelDescription.model_validate(answer).model_dump() == answer


# -- serving the document ------------------------------------------------------------------------------
def _ingress_app():
    """The FastAPI app ``serve.ingress`` serves for TaskEndpoint: the copy of ``doctune.serve.app.api`` it made
    (cloudpickled) when the class was decorated, held by the deployment class's constructor."""
    from fastapi import FastAPI

    from doctune.serve.app import TaskEndpoint, api

    cells = TaskEndpoint.func_or_class.__init__.__closure__ or ()
    [app] = [c.cell_contents for c in cells if isinstance(c.cell_contents, FastAPI)]
    assert app is not api  # so changing `api` in TaskEndpoint.__init__ would not reach it
    return app


def test_the_replica_serves_its_document_under_the_route_prefix(monkeypatch):
    """The served copy answers /openapi.json with the replica's own TaskEndpoint document (``api.openapi``,
    which the copy keeps, reads it through serve.get_replica_context()). Serve's proxy sets the ASGI root_path
    to the route prefix: the document then names the prefix as its server (so /docs' "Try it out" posts to
    <route>/predict) and /docs loads <route>/openapi.json."""
    import cloudpickle
    import ray.serve
    from fastapi.testclient import TestClient

    document = doc("retrieval")
    replica = SimpleNamespace(servable_object=SimpleNamespace(openapi_document=document))  # a TaskEndpoint
    monkeypatch.setattr(ray.serve, "get_replica_context", lambda: replica)
    app = _ingress_app()
    client = TestClient(app, root_path="/team-a/search")
    served = client.get("/openapi.json").json()
    assert served == {**document, "servers": [{"url": "/team-a/search"}]} and "servers" not in document
    docs = client.get("/docs")
    assert docs.status_code == 200 and "'/team-a/search/openapi.json'" in docs.text
    # the hook survives the trip to the replica process (cloudpickle, as Serve ships the deployment)
    assert cloudpickle.loads(cloudpickle.dumps(app.openapi))() is document


@pytest.mark.parametrize("task", ["classification", "ner", "generation"])
def test_a_multiplexed_endpoint_documents_the_model_field(task):
    from doctune.serve.schemas import multiplexed_openapi

    doc = multiplexed_openapi(task, "t")
    schemas = doc["components"]["schemas"]
    body = doc["paths"]["/predict"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    refs = [body] if "$ref" in body else body.get("anyOf", [])
    named = [schemas[r["$ref"].rsplit("/", 1)[-1]] for r in refs]
    named = [s for n in named for s in ([schemas[x["$ref"].rsplit("/", 1)[-1]] for x in n["anyOf"]] if "anyOf" in n else [n])]
    assert named and all(s["properties"]["model"]["maxLength"] == 64 for s in named)
