"""A job trains only on base models its tenant may read: catalog models and the tenant's own
objects. Each attack is tried as a tenant would: another tenant's exported model, a key that
climbs out of the tenant's prefix with ``..``, another bucket, a path on the API host, a
sweep that hides a foreign model behind an allowed first choice, and an upload under another
tenant's name. Every one is a 4xx naming ``base_model`` (or the upload's field) and the fix,
before anything is read; the platform admin alone may name a local folder. Uploaded archives
are unpacked only inside their scratch folder: ``..`` and absolute members, links, too many
files and archives that unpack past the limit are refused and leave nothing behind."""

from __future__ import annotations

import io
import tarfile

import pytest
from fastapi.testclient import TestClient

from doctune.api.app import create_app
from doctune.base_models import check_base_model_allowed
from doctune.config import Settings
from doctune.errors import DoctuneError
from doctune.services import Platform, tenants
from doctune.spec import TenantSpec
from doctune.store.db import Dataset, Job

FOREIGN = "s3://doctune/tenants/team-a/models/model-a"
OWN = "s3://doctune/tenants/team-b/base-models/my-base"


@pytest.mark.parametrize("name, status, needle", [
    (FOREIGN, 403, "not in tenant team-b's storage"),  # another tenant's exported model
    ("s3://doctune/tenants/team-a/base-models/their-base", 403, "not in tenant team-b's storage"),
    ("s3://doctune/tenants/team-b/../team-a/models/model-a", 403, "not in tenant team-b's storage"),
    ("s3://doctune/tenants/team-b//x", 403, "not in tenant team-b's storage"),
    ("s3://doctune/tenants/team-b/", 403, "not in tenant team-b's storage"),  # the whole prefix is no model
    ("s3://doctune/tenants/team-bb/models/m", 403, "not in tenant team-b's storage"),  # a tenant sharing a prefix
    ("s3://other-bucket/tenants/team-b/models/m", 403, "not in tenant team-b's storage"),
    ("/etc", 403, "local paths are for the platform admin only"),
    ("../../../root/.doctune", 403, "local paths are for the platform admin only"),
    ("~/.doctune", 403, "local paths are for the platform admin only"),
    ("minilm", 422, "not a catalog model"),
])
def test_a_tenant_may_not_name_a_model_it_does_not_own(name, status, needle):
    with pytest.raises(DoctuneError) as e:
        check_base_model_allowed(name, tenant="team-b", admin=False, bucket="doctune")
    err = e.value
    assert (err.http_status, err.field) == (status, "base_model") and needle in err.message, err.message
    assert "doctune models upload --name NAME DIR" in err.message  # the fix


@pytest.mark.parametrize("name", ["all-minilm-l6-v2", "gemma-3-270m", OWN, "s3://doctune/tenants/team-b/models/m-1"])
def test_catalog_and_own_models_are_allowed(name):
    check_base_model_allowed(name, tenant="team-b", admin=False, bucket="doctune")


def test_only_the_admin_may_name_a_local_folder():
    check_base_model_allowed("/srv/models/bert", tenant="team-b", admin=True, bucket="doctune")
    with pytest.raises(DoctuneError):
        check_base_model_allowed("/srv/models/bert", tenant="team-b", admin=False, bucket="doctune")


# ------------------------------------------------------------------ through the API, as a tenant would
@pytest.fixture
def api(database_url, tmp_path):
    """Tenants team-a and team-b over a real database; no object store, no Ray: a refusal
    must come before either is touched."""
    p = Platform(Settings(home=str(tmp_path), database_url=database_url))
    p.db.migrate()
    admin_key = tenants.create_admin_key(p)
    admin = tenants.authenticate(p, admin_key)
    keys = {}
    for name in ("team-a", "team-b"):
        _, keys[name] = tenants.create_tenant(p, admin, TenantSpec(name=name))
    with p.db.session() as s:
        s.add(Dataset(id="ds-b", tenant_id="team-b", name="b", task="classification",
                      uri="s3://doctune/tenants/team-b/datasets/ds-b", info={"labels": ["x", "y"]}))
        s.add(Job(id="job-a", tenant_id="team-a", task="classification", spec={"tenant": "team-a"}, status="succeeded"))
    hdr = {name: {"Authorization": f"Bearer {key}"} for name, key in keys.items()}
    hdr["admin"] = {"Authorization": f"Bearer {admin_key}"}
    yield p, TestClient(create_app(p)), hdr
    p.db.dispose()


JOB = {"task": "classification", "dataset": {"id": "ds-b"}, "max_steps": 1}


@pytest.mark.parametrize("route", ["/v1/jobs", "/v1/jobs/plan"])
@pytest.mark.parametrize("base_model, status", [(FOREIGN, 403), ("/etc", 403),
                                                ("s3://doctune/tenants/team-b/../team-a/models/model-a", 403)])
def test_submit_and_plan_refuse_a_model_of_another_tenant_or_the_host(api, route, base_model, status):
    p, client, hdr = api
    r = client.post(route, headers=hdr["team-b"], json={**JOB, "base_model": base_model})
    assert r.status_code == status, r.text
    err = r.json()["error"]
    assert err["field"] == "base_model" and "doctune models upload" in err["message"]
    with p.db.session() as s:
        assert s.query(Job).filter_by(tenant_id="team-b").count() == 0  # nothing queued


def test_a_sweep_may_not_hide_a_foreign_model_behind_its_first_choice(api):
    _, client, hdr = api
    body = {"job": JOB, "algorithm": "grid",
            "search_space": {"base_model": {"type": "choice", "values": ["all-minilm-l6-v2", FOREIGN]}}}
    r = client.post("/v1/sweeps", headers=hdr["team-b"], json=body)
    assert r.status_code == 403, r.text
    assert r.json()["error"]["field"] == "base_model" and FOREIGN in r.json()["error"]["message"]


def test_the_admin_passes_the_base_model_check_with_a_local_folder(api):
    _, client, hdr = api
    r = client.post("/v1/jobs/plan", headers=hdr["admin"],
                    json={**JOB, "tenant": "team-b", "base_model": "/nonexistent/model"})
    # past the access check: the folder is simply not there
    assert r.status_code == 422 and "neither a catalog model" in r.json()["error"]["message"], r.text


@pytest.mark.parametrize("who, params, status, field", [
    ("team-b", {"tenant": "team-a", "name": "x"}, 403, "tenant"),  # into another tenant's prefix
    ("team-b", {"name": "../team-a"}, 400, "name"),
    ("team-b", {"name": "all-minilm-l6-v2"}, 409, "name"),  # a catalog name
])
def test_an_upload_into_a_prefix_not_ones_own_is_refused_before_the_body_is_read(api, who, params, status, field):
    _, client, hdr = api
    r = client.post("/v1/base-models", headers=hdr[who], params=params, content=b"not read")
    assert r.status_code == status and r.json()["error"]["field"] == field, r.text


def test_the_catalog_is_listed_for_everyone(api):
    _, client, hdr = api
    names = [m["name"] for m in client.get("/v1/base-models", headers=hdr["admin"]).json()["items"]]
    assert names == ["all-minilm-l6-v2", "gemma-3-270m"]


# ------------------------------------------------------------------ the archive
def _tar(*members: tarfile.TarInfo | tuple[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for m in members:
            if isinstance(m, tarfile.TarInfo):
                tar.addfile(m)
            else:
                info = tarfile.TarInfo(m[0])
                info.size = len(m[1])
                tar.addfile(info, io.BytesIO(m[1]))
    return buf.getvalue()


def _link(name: str, target: str, kind=tarfile.SYMTYPE) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type, info.linkname = kind, target
    return info


CONFIG = ("config.json", b'{"model_type": "bert"}')
VOCAB = ("vocab.txt", b"[PAD]\n[UNK]\n")


@pytest.mark.parametrize("archive, status, needle", [
    (_tar(CONFIG, VOCAB, ("../escaped.txt", b"x")), 400, "outside"),
    (_tar(CONFIG, VOCAB, ("/tmp/escaped.txt", b"x")), 400, "outside"),
    (_tar(CONFIG, VOCAB, ("a/../../escaped.txt", b"x")), 400, "outside"),
    (_tar(CONFIG, _link("vocab.txt", "/etc/passwd")), 400, "link"),
    (_tar(CONFIG, _link("vocab.txt", "config.json", tarfile.LNKTYPE)), 400, "link"),
    (_tar(*[(f"f{i}.txt", b"") for i in range(201)]), 400, "more than 200 files"),
    (_tar(CONFIG, VOCAB, ("big.bin", b"x" * 5000)), 413, "unpacks to more than"),
    (_tar(VOCAB), 400, "no config.json"),
    (_tar(("config.json", b'{"not": "a model"}'), VOCAB), 400, "model_type"),
    (_tar(CONFIG), 400, "no tokenizer"),
    (b"this is no tar archive", 400, "not a tar archive"),
])
def test_a_crafted_archive_is_refused_and_leaves_nothing(tmp_path, archive, status, needle):
    from doctune.services.base_models import _check_model_folder, _unpack

    (tmp_path / "model.tar").write_bytes(archive)
    into = tmp_path / "scratch" / "unpacked"
    into.mkdir(parents=True)
    with pytest.raises(DoctuneError) as e:
        _unpack(tmp_path / "model.tar", into, max_bytes=4096)
        _check_model_folder(into)
    assert (e.value.http_status, needle in e.value.message) == (status, True), e.value.message
    assert e.value.field in ("archive", "path")
    assert not list(tmp_path.rglob("escaped.txt"))  # nothing landed outside the folder


def test_a_model_folder_archive_unpacks(tmp_path):
    from doctune.services.base_models import _check_model_folder, _unpack

    (tmp_path / "model.tar").write_bytes(_tar(CONFIG, VOCAB, ("./1_Pooling/config.json", b"{}")))
    into = tmp_path / "unpacked"
    into.mkdir()
    assert _unpack(tmp_path / "model.tar", into, max_bytes=4096) > 0
    _check_model_folder(into)
    assert sorted(p.relative_to(into).as_posix() for p in into.rglob("*") if p.is_file()) == [
        "1_Pooling/config.json", "config.json", "vocab.txt"]
