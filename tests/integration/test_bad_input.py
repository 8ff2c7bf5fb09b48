"""Bad input over the real API gets a 4xx naming the line or field and the fix,
and changes nothing that was stored before."""

from __future__ import annotations

import json

import httpx
import pytest

from doctune.errors import DoctuneError
from doctune.store.objects import ObjectStore

from .conftest import tiny_job


def jl(*rows) -> bytes:
    return "".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows).encode()


GOOD = [{"text": f"doc {i}", "label": "ab"[i % 2]} for i in range(40)]


@pytest.fixture
def stored_state(stack, client_a, bbc_dataset):
    store = ObjectStore(stack)

    def snapshot():
        return ({d["id"] for d in client_a.list_datasets()},
                sorted(store.list_keys("tenants/team-a/datasets/")))

    before = snapshot()
    yield
    assert snapshot() == before, "a rejected request changed stored data"


@pytest.mark.parametrize(
    "files, code, needle",
    [
        ({"data": b""}, 422, "data is empty"),
        ({"data": jl(*GOOD[:5], '{"text": "x", "label": ')}, 422, "data line 6: invalid JSON"),
        ({"data": jl(*GOOD[:5], {"text": "no label here"})}, 422, "data line 6: missing 'label'"),
        ({"train": jl(*GOOD), "dev": jl({"text": "d", "label": "a"}), "test": jl({"text": "t", "label": "zebra"})},
         422, "label 'zebra' never appears in train"),
        ({"train": jl(*GOOD)}, 400, "upload either one file named 'data'"),
    ],
    ids=["empty", "invalid-json", "no-label", "unseen-label", "missing-splits"],
)
def test_bad_dataset_uploads(client_a, stored_state, files, code, needle):
    with pytest.raises(DoctuneError) as e:
        client_a.upload_dataset("bad", "classification", files)
    assert e.value.http_status == code
    assert needle in e.value.message


def test_oversized_upload_is_413(stack, tenant_a, stored_state):
    big = b"x" * (stack.max_upload_bytes + 2 * 1024 * 1024)
    r = httpx.post(f"{stack.api_url}/v1/datasets", headers={"Authorization": f"Bearer {tenant_a}"},
                   data={"name": "big", "task": "classification"}, files={"data": ("d.jsonl", big)}, timeout=120)
    assert r.status_code == 413
    assert r.json()["error"]["code"] == "too_large"


def test_job_spec_errors_are_all_reported(client_a, bbc_dataset, stored_state):
    spec = tiny_job(bbc_dataset["id"], learning_rate=-1, surprise=True)
    with pytest.raises(DoctuneError) as e:
        client_a.submit_job(spec)
    assert e.value.http_status == 422
    assert {err["field"] for err in e.value.errors} >= {"learning_rate", "surprise"}
    assert not any(j["spec"].get("learning_rate") == -1 for j in client_a.list_jobs())


def test_job_on_another_tenants_dataset_is_not_found(client_b, bbc_dataset):
    with pytest.raises(DoctuneError) as e:
        client_b.submit_job(tiny_job(bbc_dataset["id"]))
    assert e.value.http_status == 404 and e.value.field == "dataset.id"


def test_naming_another_tenant_in_a_spec_is_forbidden(client_b, bbc_dataset):
    with pytest.raises(DoctuneError) as e:
        client_b.submit_job(tiny_job(bbc_dataset["id"], tenant="team-a"))
    assert e.value.http_status == 403


def test_api_requires_a_key(stack):
    r = httpx.get(f"{stack.api_url}/v1/jobs", timeout=10)
    assert r.status_code == 401 and r.json()["error"]["code"] == "unauthenticated"


def test_path_tricks_in_names_are_refused(client_a, stored_state):
    with pytest.raises(DoctuneError) as e:
        client_a.upload_dataset("../../etc", "classification", {"data": jl(*GOOD)})
    assert e.value.http_status in (400, 422) and e.value.field == "name"


ZH = [("合同双方应当按照约定全面履行自己的义务，违约方承担赔偿责任。", "contract"),
      ("北京时间周一，腾讯公司发布了第三季度财报，营收同比增长百分之十。", "news"),
      ("本协议自双方签字盖章之日起生效，有效期三年。", "contract"),
      ("上海证券交易所今日收盘，沪指小幅上涨，成交量有所放大。", "news")]


def test_chinese_text_on_an_english_model_is_refused_with_the_fix(client_b):
    rows = [{"text": t, "label": l} for _ in range(10) for t, l in ZH]
    ds = client_b.upload_dataset("zh-contracts", "classification", {"data": jl(*rows)}, seed=1)
    spec = tiny_job(ds["id"], max_steps=2)
    plan = client_b.plan_job(spec)  # the plan warns ...
    assert any("cannot read this language" in w for w in plan["warnings"])
    assert plan["tokens"]["unknown_token_fraction"] > 0.3
    with pytest.raises(DoctuneError) as e:  # ... and submission refuses rather than train on [UNK]s
        client_b.submit_job(spec)
    assert e.value.http_status == 422 and e.value.field == "base_model"
    assert "gemma-3-270m" in e.value.message
    assert not any(j["spec"]["dataset"]["id"] == ds["id"] for j in client_b.list_jobs())
