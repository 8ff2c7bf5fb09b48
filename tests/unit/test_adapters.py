"""Many LoRA adapters over one base model, without Ray: adapters exported as training exports
them (MiniLM + LoRA, different weights, heads and label counts) answer through one
AdapterPool exactly as each answers loaded alone, while the pool holds the base model once
and each adapter costs under 2% of it; unloading an adapter frees it and keeps the base; a
multiplexed deployment of a merged, retrieval or int8 model is refused naming
``multiplex``; a request's ``model`` must be an adapter of the endpoint's tenant, task and
base model; the shared application's name and settings come from the spec."""

from __future__ import annotations

import gc
import json
import re
import weakref
from types import SimpleNamespace

import pytest
from fastapi.testclient import TestClient
from pydantic import ValidationError

from doctune.api.app import create_app
from doctune.config import Settings
from doctune.errors import DoctuneError, from_validation_error
from doctune.serve.adapters import AdapterPool
from doctune.services import tenants
from doctune.services import Platform
from doctune.spec import DeploymentSpec, TenantSpec
from doctune.store.db import Deployment, Job, Model
from doctune.tasks import check_can_serve, get_task

BASE = "all-minilm-l6-v2"
TEXTS = ["Shares in the carmaker rose after strong quarterly results.",
         "The striker scored twice in the second half.",
         "Ministers will vote on the new budget next week."]
WORDS = ["Tim Cook visited Paris on Monday", "Apple opened an office in Berlin"]


def _export_adapter(plugin, base: str, tokenizer, labels: list[str], seed: int, path) -> None:
    """An unmerged LoRA export laid out as ``doctune.train.loop._export`` writes it."""
    import peft
    import torch

    torch.manual_seed(seed)
    model = plugin.build_model(base, {"labels": labels})
    cfg = peft.LoraConfig(task_type=getattr(peft.TaskType, plugin.peft_task_type), r=8, lora_alpha=16,
                          target_modules=["query", "key", "value", "dense"], modules_to_save=["classifier"],
                          init_lora_weights=False)  # random B as well as A: an adapter that changes the model
    model = peft.get_peft_model(model, cfg)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.mul_(0.05)  # a trained adapter's size of change, not kaiming's
            elif "modules_to_save" in name and p.dim() == 2:
                torch.nn.init.normal_(p, std=1.0)  # a decisive head, as a trained one is
    model.save_pretrained(path, safe_serialization=True)
    tokenizer.save_pretrained(path)
    meta = {"task": plugin.name, "labels": labels, "max_seq_length": 64, "tuning": "lora", "adapter_merged": False,
            "lora_merged": False, "base_model": BASE}
    (path / "doctune.json").write_text(json.dumps(meta, indent=2))


@pytest.fixture(scope="module")
def minilm():
    from transformers import AutoTokenizer

    from doctune.base_models import resolve_base_model

    base = resolve_base_model(BASE)
    return base, AutoTokenizer.from_pretrained(base)


@pytest.fixture(scope="module")
def classifiers(minilm, tmp_path_factory):
    """Two classification adapters of MiniLM: 3 and 5 labels, different LoRA weights and heads."""
    from doctune.tasks import get_task

    base, tokenizer = minilm
    plugin = get_task("classification")
    paths = {}
    for seed, labels in ((1, ["business", "politics", "sport"]), (2, ["a", "b", "c", "d", "e"])):
        paths[f"model-{seed}"] = tmp_path_factory.mktemp(f"cls-{seed}")
        _export_adapter(plugin, base, tokenizer, labels, seed, paths[f"model-{seed}"])
    return plugin, paths


def _meta(path):
    return json.loads((path / "doctune.json").read_text())


def _param_bytes(model, where) -> int:
    return sum(p.numel() * p.element_size() for n, p in model.named_parameters() if where(n))


def test_adapters_through_the_pool_answer_as_alone_and_share_the_base(classifiers, minilm):
    plugin, paths = classifiers
    _, tokenizer = minilm
    pool = AdapterPool(plugin)
    pooled = {mid: pool.load(mid, str(path)) for mid, path in paths.items()}
    for mid, path in paths.items():
        alone = plugin.load_model(str(path))
        want = plugin.predict(alone, tokenizer, TEXTS, _meta(path), 64)
        got = plugin.predict(pooled[mid], tokenizer, TEXTS, _meta(path), 64)
        assert [g["label"] for g in got] == [w["label"] for w in want]
        for g, w in zip(got, want):
            assert g["probabilities"] == pytest.approx(w["probabilities"], abs=1e-6)
    a, b = (pooled[m].get_base_model() for m in paths)
    # one base: the frozen weights (LoRA-wrapped ones included) are the same tensors; the adapters are not
    assert a.bert.embeddings.word_embeddings.weight is b.bert.embeddings.word_embeddings.weight
    assert a.bert.encoder.layer[0].attention.self.query.base_layer.weight \
        is b.bert.encoder.layer[0].attention.self.query.base_layer.weight
    assert a.bert.encoder.layer[0].attention.self.query.lora_A["default"].weight \
        is not b.bert.encoder.layer[0].attention.self.query.lora_A["default"].weight


def test_memory_counts_the_base_once_and_each_adapter_costs_under_2_percent(classifiers):
    plugin, paths = classifiers
    pool = AdapterPool(plugin)
    one = pool.load("model-1", str(paths["model-1"]))
    after_one = pool.memory()
    pool.load("model-2", str(paths["model-2"]))
    mem = pool.memory()
    base_bytes = _param_bytes(one, lambda n: "lora_" not in n and "classifier" not in n)
    assert mem["shared"] == after_one["shared"]  # the second adapter added no base weights
    assert base_bytes <= mem["shared"] <= base_bytes * 1.01  # the base's weights (+ its small buffers), once
    assert mem["total"] == mem["shared"] + sum(mem["adapters"].values())
    for mid, own in mem["adapters"].items():
        lora = _param_bytes(pool._models[mid], lambda n: "lora_" in n)
        assert lora <= own  # its LoRA weights are its own ...
        assert own / mem["shared"] <= 0.02, (mid, own, mem["shared"])  # ... and small beside the base


def test_unload_frees_the_adapter_and_keeps_the_base(classifiers, minilm):
    plugin, paths = classifiers
    _, tokenizer = minilm
    pool = AdapterPool(plugin)
    gone = weakref.ref(pool.load("model-1", str(paths["model-1"])))
    kept = pool.load("model-2", str(paths["model-2"]))
    answers = plugin.predict(kept, tokenizer, TEXTS, _meta(paths["model-2"]), 64)
    before = pool.memory()
    assert pool.unload("model-1") and not pool.unload("model-1")
    gc.collect()
    assert gone() is None  # nothing else held it: its memory went back
    after = pool.memory()
    assert set(after["adapters"]) == {"model-2"} and after["shared"] == before["shared"]
    assert after["total"] == before["total"] - before["adapters"]["model-1"]
    # the other adapter answers as before (the base it shares stayed); a reload shares the same base again
    assert plugin.predict(kept, tokenizer, TEXTS, _meta(paths["model-2"]), 64) == answers
    pool.load("model-1", str(paths["model-1"]))
    assert pool.memory()["shared"] == before["shared"] and pool.loaded() == ["model-2", "model-1"]


def test_adapters_of_one_base_share_one_tokenizer(classifiers):
    plugin, paths = classifiers
    pool = AdapterPool(plugin)
    assert pool.tokenizer(str(paths["model-1"])) is pool.tokenizer(str(paths["model-2"]))


def test_ner_adapters_share_the_base_too(minilm, tmp_path):
    from doctune.tasks import get_task

    base, tokenizer = minilm
    plugin = get_task("ner")
    paths = {}
    for seed, labels in ((3, ["O", "B-PER", "I-PER", "B-LOC", "I-LOC"]), (4, ["O", "B-ORG", "I-ORG"])):
        paths[seed] = tmp_path / f"ner-{seed}"
        paths[seed].mkdir()
        _export_adapter(plugin, base, tokenizer, labels, seed, paths[seed])
    def spans(model, path):
        return [[(e["type"], e["start"], e["end"]) for e in r["entities"]]
                for r in plugin.predict(model, tokenizer, WORDS, _meta(path), 64)]

    pool = AdapterPool(plugin)
    for seed, path in paths.items():
        assert spans(pool.load(str(seed), str(path)), path) == spans(plugin.load_model(str(path)), path)
    mem = pool.memory()
    assert max(mem["adapters"].values()) / mem["shared"] <= 0.02


# ------------------------------------------------------------------ what can be multiplexed
def test_retrieval_cannot_share_a_base():
    from doctune.tasks import get_task

    with pytest.raises(DoctuneError) as e:
        AdapterPool(get_task("retrieval"))
    assert e.value.field == "multiplex" and "document index" in e.value.message


@pytest.mark.parametrize("task, merged, quantize, fix", [
    ("classification", True, "none", "merge_adapter: false"),
    ("classification", False, "int8", "quantize: none"),
    ("retrieval", False, "none", "multiplex: false"),
])
def test_models_that_cannot_share_are_refused_naming_multiplex(task, merged, quantize, fix):
    with pytest.raises(DoctuneError) as e:
        check_can_serve(get_task(task), multiplex=True, merged=merged, quantize=quantize)
    assert e.value.field == "multiplex" and e.value.http_status == 422 and e.value.tenant_error
    assert fix in e.value.message


def test_an_adapter_model_can_be_multiplexed():
    for task in ("classification", "ner", "extraction", "summarization", "generation"):
        check_can_serve(get_task(task), multiplex=True, merged=False)  # no error


GOOD = {"tenant": "team-a", "model_id": "model-a", "name": "bbc"}


def test_multiplex_spec_defaults_and_bounds():
    spec = DeploymentSpec(**GOOD)
    assert spec.multiplex is False and DeploymentSpec(**GOOD, multiplex=True).multiplex
    with pytest.raises(ValidationError) as e:
        DeploymentSpec(**GOOD, multiplex="sometimes")
    err = from_validation_error(e.value)
    assert err.field == "multiplex" and err.http_status == 422, err.message


def test_a_deployment_cannot_size_the_shared_application():
    """The shared application serves every tenant's adapters: its size is the platform's, so a
    deployment asking for one is told where it is set; stored specs that still carry the old
    field load without it."""
    with pytest.raises(ValidationError) as e:
        DeploymentSpec(**GOOD, multiplex=True, max_adapters_per_replica=256)
    err = from_validation_error(e.value)
    assert err.http_status == 422 and "DOCTUNE_SHARED_MAX_ADAPTERS_PER_REPLICA" in err.message, err.message
    assert DeploymentSpec.from_stored({**GOOD, "multiplex": True, "max_adapters_per_replica": 4}).multiplex


# ------------------------------------------------------------------ the store: deploys and request versions
@pytest.fixture
def api(database_url, tmp_path):
    """The REST API over a real database (no Ray): two tenants, adapter and other models."""
    p = Platform(Settings(home=str(tmp_path), database_url=database_url))
    p.db.migrate()
    app = create_app(p)
    admin = tenants.authenticate(p, tenants.create_admin_key(p))
    _, key = tenants.create_tenant(p, admin, TenantSpec(name="team-a"))
    tenants.create_tenant(p, admin, TenantSpec(name="team-b"))
    with p.db.session() as s:
        for job_id, tenant, base in (("job-a", "team-a", BASE), ("job-g", "team-a", "gemma-3-270m"),
                                     ("job-b", "team-b", BASE)):
            s.add(Job(id=job_id, tenant_id=tenant, task="classification", status="succeeded",
                      spec={"tenant": tenant, "base_model": base}))
    with p.db.session() as s:
        for model_id, tenant, job, task, merged in (
            ("m-lora", "team-a", "job-a", "classification", False),
            ("m-lora2", "team-a", "job-a", "classification", False),
            ("m-merged", "team-a", "job-a", "classification", True),
            ("m-ner", "team-a", "job-a", "ner", False),
            ("m-retrieval", "team-a", "job-a", "retrieval", False),
            ("m-gemma", "team-a", "job-g", "classification", False),
            ("b-lora", "team-b", "job-b", "classification", False),
        ):
            s.add(Model(id=model_id, tenant_id=tenant, job_id=job, task=task, merged=merged, uri=f"s3://doctune/{model_id}"))
    yield p, TestClient(app), {"Authorization": f"Bearer {key}"}
    p.db.dispose()


@pytest.mark.parametrize("body, fix", [
    ({"model_id": "m-merged"}, "merge_adapter: false"),
    ({"model_id": "m-lora", "quantize": "int8"}, "quantize: none"),
    ({"model_id": "m-retrieval"}, "document index"),
])
def test_api_refuses_a_multiplexed_deploy_that_cannot_share_and_stores_nothing(api, body, fix):
    p, client, hdr = api
    r = client.post("/v1/deployments", headers=hdr, json={"name": "shared", "multiplex": True, **body})
    assert r.status_code == 422, r.text
    assert r.json()["error"]["field"] == "multiplex" and fix in r.json()["error"]["message"]
    with p.db.session() as s:
        assert s.query(Deployment).filter_by(name="shared").count() == 0


def test_api_records_a_multiplexed_deploy_of_an_adapter(api):
    p, client, hdr = api
    r = client.post("/v1/deployments", headers=hdr,
                    json={"model_id": "m-lora", "name": "shared", "multiplex": True, "max_adapters_per_replica": 64})
    assert r.status_code == 422 and "DOCTUNE_SHARED_MAX_ADAPTERS_PER_REPLICA" in r.text  # not the tenant's to set
    r = client.post("/v1/deployments", headers=hdr, json={"model_id": "m-lora", "name": "shared", "multiplex": True})
    assert r.status_code == 503, r.text  # recorded, then no Ray cluster to submit the deploy job to
    with p.db.session() as s:
        spec = s.query(Deployment).filter_by(name="shared").one().spec
    assert spec["multiplex"] is True and "max_adapters_per_replica" not in spec


@pytest.mark.parametrize("model_id, status, needle", [
    ("b-lora", 404, "not found"),  # another tenant's adapter reads as missing
    ("nope", 404, "not found"),
    ("m-ner", 400, "ner model"),
    ("m-gemma", 400, "gemma-3-270m"),
    ("m-merged", 400, "merge_adapter: false"),
])
def test_a_request_may_name_only_an_adapter_of_the_endpoints_kind(api, model_id, status, needle):
    from doctune.serve.multiplex import find_adapter_model

    p, _, _ = api
    with pytest.raises(DoctuneError) as e:
        find_adapter_model(p, model_id, task="classification", base_model=BASE, tenant_id="team-a")
    assert e.value.field == "model" and e.value.http_status == status and needle in e.value.message


def test_a_request_may_name_another_adapter_of_the_tenant(api):
    from doctune.serve.multiplex import base_model_of, find_adapter_model, shared_apps_in_use

    p, _, _ = api
    row = find_adapter_model(p, "m-lora2", task="classification", base_model=BASE, tenant_id="team-a")
    assert row.id == "m-lora2" and base_model_of(p, row) == BASE
    with p.db.session() as s:
        s.add(Deployment(id="dep-m", tenant_id="team-a", name="shared", model_id="m-lora", route="/team-a/shared",
                         spec={**GOOD, "model_id": "m-lora", "multiplex": True}, status="running"))
        s.add(Deployment(id="dep-g", tenant_id="team-a", name="gone", model_id="m-gemma", route="/team-a/gone",
                         spec={**GOOD, "model_id": "m-gemma", "multiplex": True}, status="deleted"))
        s.add(Deployment(id="dep-p", tenant_id="team-a", name="plain", model_id="m-ner", route="/team-a/plain",
                         spec={**GOOD, "model_id": "m-ner"}, status="running"))
    assert shared_apps_in_use(p) == {"lora_classification_all-minilm-l6-v2"}  # deleted and plain ones use none


# ------------------------------------------------------------------ the applications
def test_shared_app_names_cannot_be_an_endpoints():
    from doctune.serve.multiplex import shared_app_name

    assert shared_app_name("classification", BASE) == "lora_classification_all-minilm-l6-v2"
    path = shared_app_name("ner", "/data/models/My Model")
    assert path.startswith("lora_ner_data-models-my-model-") and path != shared_app_name("ner", "/data/models/my-model")
    # endpoint applications are named by deployment id (dep-<hex>), which never holds the "_" every shared name has
    from doctune.serve.names import app_name
    from doctune.store.db import new_id

    endpoint_app = app_name(SimpleNamespace(id=new_id("dep"), tenant_id="team", name="a-x"))
    assert re.fullmatch(r"dep-[0-9a-f]{12}", endpoint_app) and "_" in shared_app_name("classification", BASE)


def test_the_spec_reaches_the_router_and_the_platform_settings_the_shared_replicas():
    from doctune.serve.multiplex import SharedServing, build_router_application, build_shared_application

    spec = {**GOOD, "multiplex": True, "max_batch_size": 32, "num_cpus": 2}
    dep = SimpleNamespace(id="dep-1", tenant_id="team-a", name="bbc", route="/team-a/bbc", spec=spec)
    model = SimpleNamespace(id="model-a", task="classification")
    router = build_router_application(dep, model, BASE, None)._bound_deployment
    assert router.name == "dep-1" and router.ray_actor_options["num_cpus"] == 0.1
    assert {k: router.init_kwargs[k] for k in ("tenant_id", "endpoint", "model_id", "shared_app")} == {
        "tenant_id": "team-a", "endpoint": "bbc", "model_id": "model-a",
        "shared_app": "lora_classification_all-minilm-l6-v2"}
    settings = Settings(shared_max_adapters_per_replica=16, shared_adapters_per_tenant=5, shared_max_batch_size=32,
                        shared_num_cpus=2.0, shared_max_replicas=3)
    shared = build_shared_application("classification", BASE, SharedServing.of(settings), None)._bound_deployment
    assert {k: shared.init_kwargs[k] for k in ("task", "base_model", "max_adapters", "adapters_per_tenant",
                                               "max_batch_size")} == {
        "task": "classification", "base_model": BASE, "max_adapters": 16, "adapters_per_tenant": 5, "max_batch_size": 32}
    assert shared.ray_actor_options["num_cpus"] == 2 and shared._deployment_config.max_ongoing_requests == 32
    assert shared._deployment_config.autoscaling_config.max_replicas == 3


@pytest.mark.parametrize("patch, field", [({"shared_adapters_per_tenant": 9}, "shared_adapters_per_tenant"),
                                          ({"shared_adapters_per_tenant": 0}, "shared_adapters_per_tenant"),
                                          ({"shared_min_replicas": 3}, "shared_max_replicas")])
def test_inconsistent_shared_settings_name_the_variable(patch, field):
    from doctune.serve.multiplex import SharedServing

    with pytest.raises(DoctuneError) as e:
        SharedServing.of(Settings(**patch))
    assert e.value.field == field and "DOCTUNE_SHARED_" in e.value.message


def test_an_evicted_adapter_is_unloaded_once():
    """Serve evicts by calling ``__del__`` and then replacing it on the instance; Python calls the
    class's ``__del__`` again when the object goes, which must not unload a newer load."""
    from doctune.serve.multiplex import _Adapter

    released = []
    adapter = _Adapter("model-a", "team-a", object(), object(), {}, released.append)
    adapter.__del__()  # what ray.serve.multiplex does on eviction
    adapter.__del__ = lambda _: None
    del adapter
    gc.collect()
    assert released == ["model-a"]
