"""A tenant brings its own base model, and only that tenant trains on it; downloads stay in
their folder. Driven as a user would, through the `doctune` command and the REST API in
this process, over a real SeaweedFS S3 server and SQLite (no Ray):

* `doctune models upload --name my-base DIR` stores the folder under the tenant's prefix and
  prints the base_model to use; `doctune models base` lists it for that tenant only;
* the other tenant's job and plan naming it are refused (403, field base_model);
* the owner's plan reads only config.json and the tokenizer (it still answers with the
  weights deleted) and leaves nothing in the scratch or cache folders;
* a name is never replaced (409), a crafted archive stores nothing, the quota holds;
* an object whose key climbs out of its prefix (``..``, an absolute tail) is refused when
  downloaded, and nothing is written outside the target folder."""

from __future__ import annotations

import io
import json
import tarfile

import pytest
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from doctune.api.app import create_app
from doctune.cli import app, session
from doctune.client import DoctuneClient
from doctune.config import Settings
from doctune.data import to_jsonl
from doctune.errors import DoctuneError
from doctune.services import Platform, tenants
from doctune.spec import TenantSpec
from tests.unit.test_cli import s3  # noqa: F401  (the module's real SeaweedFS server)

RUNNER = CliRunner()


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    """A small BERT in Hugging Face format with MiniLM's tokenizer: config, tokenizer, weights."""
    import torch
    from transformers import AutoTokenizer, BertConfig, BertModel

    from doctune.base_models import resolve_base_model

    folder = tmp_path_factory.mktemp("my-base")
    tok = AutoTokenizer.from_pretrained(resolve_base_model("all-minilm-l6-v2"))
    torch.manual_seed(0)
    BertModel(BertConfig(vocab_size=tok.vocab_size, hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                         intermediate_size=64, max_position_embeddings=128)).save_pretrained(folder)
    tok.save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def world(tmp_path_factory, s3):  # noqa: F811
    home = tmp_path_factory.mktemp("home")
    p = Platform(Settings(home=str(home), database_url=f"sqlite:///{home / 'doctune.db'}", **s3))
    p.db.migrate()
    api = TestClient(create_app(p), raise_server_exceptions=False)
    admin = tenants.authenticate(p, tenants.create_admin_key(p))
    keys = {name: tenants.create_tenant(p, admin, TenantSpec(name=name))[1] for name in ("team-a", "team-b")}

    def in_process(api_url: str, api_key: str | None) -> DoctuneClient:
        client = DoctuneClient(api_url, api_key)
        client.http = TestClient(create_app(p), base_url=api_url, raise_server_exceptions=False,
                                 headers={"Authorization": f"Bearer {api_key}"} if api_key else {})
        return client

    previous = session.set_client_factory(in_process)
    yield {"p": p, "api": api, "home": home, "admin": admin, **keys}
    session.set_client_factory(previous)
    p.db.dispose()


@pytest.fixture(autouse=True)
def env(monkeypatch, world):
    monkeypatch.setenv("DOCTUNE_HOME", str(world["home"]))  # the API process's home: its scratch and caches


def hdr(world, tenant: str) -> dict:
    return {"Authorization": f"Bearer {world[tenant]}"}


def cli(world, tenant: str, *args: str):
    return RUNNER.invoke(app, list(args), env={"DOCTUNE_API_KEY": world[tenant], "DOCTUNE_HOME": str(world["home"]),
                                               "DOCTUNE_API_URL": "http://testserver"})


@pytest.fixture(scope="module")
def uploaded(world, tiny_model):
    out = cli(world, "team-a", "models", "upload", "--name", "my-base", str(tiny_model))
    assert out.exit_code == 0, out.output
    return json.loads(out.stdout)


def _upload_dataset(world, tenant: str) -> dict:
    records = [{"text": f"document {i} about {label}", "label": label} for label in ("sport", "tech") for i in range(20)]
    r = world["api"].post("/v1/datasets", headers=hdr(world, tenant), data={"name": "docs", "task": "classification"},
                          files={"data": ("d.jsonl", to_jsonl(records))})
    assert r.status_code == 201, r.text
    return r.json()


@pytest.fixture(scope="module")
def dataset(world):
    return _upload_dataset(world, "team-a")


@pytest.fixture(scope="module")
def their_dataset(world):
    return _upload_dataset(world, "team-b")


def test_upload_stores_the_folder_under_the_tenants_prefix(world, uploaded, tiny_model, s3):  # noqa: F811
    assert uploaded["base_model"] == f"s3://{s3['bucket']}/tenants/team-a/base-models/my-base"
    assert uploaded["files"] == len([f for f in tiny_model.rglob("*") if f.is_file()])
    keys = sorted(world["p"].objects.list_keys("tenants/team-a/base-models/my-base/"))
    assert "tenants/team-a/base-models/my-base/config.json" in keys and len(keys) == uploaded["files"]
    assert list((world["home"] / "tmp").iterdir()) == []  # the archive and its unpacked copy are gone


def test_the_base_model_is_listed_for_its_tenant_only(world, uploaded):
    mine = json.loads(cli(world, "team-a", "models", "base").stdout)
    assert [m["name"] for m in mine] == ["all-minilm-l6-v2", "gemma-3-270m", "my-base"]
    assert mine[-1]["base_model"] == uploaded["base_model"] and mine[-1]["source"] == "uploaded"
    theirs = world["api"].get("/v1/base-models", headers=hdr(world, "team-b")).json()
    assert "my-base" not in json.dumps(theirs)
    assert world["api"].get("/v1/base-models", headers=hdr(world, "team-b"),
                            params={"tenant": "team-a"}).status_code == 403


@pytest.mark.parametrize("route", ["/v1/jobs", "/v1/jobs/plan"])
def test_another_tenant_cannot_train_or_plan_on_it(world, uploaded, their_dataset, route):
    body = {"task": "classification", "dataset": {"id": their_dataset["id"]}, "base_model": uploaded["base_model"],
            "max_steps": 2}
    r = world["api"].post(route, headers=hdr(world, "team-b"), json=body)
    assert r.status_code == 403, r.text
    err = r.json()["error"]
    assert err["field"] == "base_model" and "doctune models upload --name NAME DIR" in err["message"]
    assert world["api"].get("/v1/jobs", headers=hdr(world, "team-b")).json()["items"] == []


def test_the_owners_plan_reads_config_and_tokenizer_only_and_cleans_up(world, uploaded, dataset):
    store = world["p"].objects
    weights = "tenants/team-a/base-models/my-base/model.safetensors"
    kept = store.get_bytes(weights)
    store.client.remove_object(store.bucket, weights)  # a plan that read the weights would fail now
    try:
        r = world["api"].post("/v1/jobs/plan", headers=hdr(world, "team-a"), json={
            "task": "classification", "dataset": {"id": dataset["id"]}, "base_model": uploaded["base_model"],
            "max_steps": 2})
    finally:
        store.put_bytes(weights, kept)
    assert r.status_code == 200, r.text
    assert 950_000 < r.json()["model"]["parameters"] < 1_050_000  # the tiny BERT's (MiniLM has 22M), from its config
    assert r.json()["tokens"]["tokens_per_epoch"] > 0  # with its own tokenizer
    assert list((world["home"] / "tmp").iterdir()) == []
    assert not (world["home"] / "cache" / "models").exists() or not any((world["home"] / "cache" / "models").iterdir())


def test_a_name_is_never_replaced(world, uploaded, tiny_model):
    out = cli(world, "team-a", "models", "upload", "--name", "my-base", str(tiny_model))
    assert out.exit_code == 2 and out.stderr.startswith("error [conflict] (field: name)") and "another name" in out.stderr
    r = world["api"].post("/v1/base-models", headers=hdr(world, "team-a"), params={"name": "my-base"}, content=b"x")
    assert r.status_code == 409 and r.json()["error"]["field"] == "name"  # the API refuses it too


def test_an_upload_into_another_tenants_prefix_is_refused(world, tiny_model):
    out = cli(world, "team-b", "models", "upload", "--name", "planted", "--tenant", "team-a", str(tiny_model))
    assert out.exit_code == 2 and "error [forbidden]" in out.stderr
    assert list(world["p"].objects.list_keys("tenants/team-a/base-models/planted/")) == []


def test_a_crafted_archive_stores_nothing(world):
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for name, data in (("config.json", b'{"model_type": "bert"}'), ("vocab.txt", b"[UNK]\n"),
                           ("../../team-a/base-models/my-base/config.json", b"{}")):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    r = world["api"].post("/v1/base-models", headers=hdr(world, "team-b"), params={"name": "crafted"},
                          content=buf.getvalue())
    assert r.status_code == 400 and r.json()["error"]["field"] in ("archive", "path"), r.text
    assert list(world["p"].objects.list_keys("tenants/team-b/base-models/")) == []
    assert list((world["home"] / "tmp").iterdir()) == []


def test_the_storage_quota_holds(world, tiny_model):
    tenants.set_quota(world["p"], world["admin"], "team-b", {"max_storage_bytes": 1000})
    try:
        out = cli(world, "team-b", "models", "upload", "--name", "too-big", str(tiny_model))
        assert out.exit_code == 2 and "error [quota_exceeded]" in out.stderr, out.output
    finally:
        tenants.set_quota(world["p"], world["admin"], "team-b", {"max_storage_bytes": None})
    assert list(world["p"].objects.list_keys("tenants/team-b/base-models/too-big/")) == []


@pytest.mark.parametrize("tail", ["../../../escaped.txt", "sub/../../../escaped.txt", "/escaped.txt"])
def test_a_crafted_object_key_is_not_written_outside_its_folder(world, tmp_path, tail):
    store = world["p"].objects
    prefix = "tenants/team-b/models/crafted"
    key = f"{prefix}/{tail}"
    from minio.error import S3Error

    store.put_bytes(f"{prefix}/config.json", b"{}")
    try:
        store.put_bytes(key, b"planted")
    except ValueError as exc:  # the MinIO SDK refuses '.' and '..' segments before sending anything
        assert "path segment" in str(exc)
    except S3Error as exc:  # SeaweedFS refuses '..' in a key; MinIO and AWS S3 store it as sent
        assert exc.code == "InvalidRequest"
    target = tmp_path / "a" / "b" / "model"
    try:
        listed = [k[len(prefix) + 1:] for k in store.list_keys(prefix + "/")]
        if tail in listed:  # the server kept the key as sent: downloading it is refused outright
            with pytest.raises(DoctuneError) as e:
                store.download_dir(prefix, target)
            assert e.value.http_status == 400 and "outside" in e.value.message
        else:  # the server normalized the key; whatever it became stays inside the folder
            store.download_dir(prefix, target)
        assert not [p for p in tmp_path.rglob("escaped.txt") if target not in p.parents]
    finally:
        store.delete_prefix(prefix + "/")
