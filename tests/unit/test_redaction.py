"""PII redaction at dataset upload: personal data planted in English and Chinese text (emails, phone
numbers, card numbers, IBANs, US SSNs, Chinese resident IDs, titled names) does not survive in any
text field of any task's records, the replacements are counted by type, and numbers that fail their
check (Luhn, mod 97, GB 11643) stay as they were. Through the real API (SQLite, a real SeaweedFS S3
server, no Ray): the stored split files hold only the redacted text, by the upload's `redact_pii`
or by the tenant's setting, and the counts are in the dataset's info from the API and the CLI."""

from __future__ import annotations

import json

import pytest
from fastapi.testclient import TestClient

from doctune.api.app import create_app
from doctune.data import to_jsonl
from doctune.pii import Redactor, cn_resident_id_valid, find_pii
from doctune.services import tenants
from doctune.services.redaction import redact_upload
from doctune.spec import TenantSpec
from doctune.store.db import Dataset, Tenant
from tests.unit.test_cli import cli, env, ok, s3, world  # noqa: F401  (fixtures: the API app on weed)


def luhn(prefix: str) -> str:
    """``prefix`` completed with its Luhn check digit."""
    total = 0
    for i, c in enumerate(reversed(prefix)):
        d = int(c) * (2 if i % 2 == 0 else 1)
        total += d - 9 if d > 9 else d
    return prefix + str(-total % 10)


VISA = luhn("411111111111111")                     # 4111111111111111
UNIONPAY = luhn("622202123456789")                 # a 16-digit UnionPay-style number (6...)
NOT_A_CARD = VISA[:-1] + str((int(VISA[-1]) + 1) % 10)  # 16 digits, fails Luhn

PLANTED_EN = {
    "EMAIL": ["jane.doe@example.com", "j.smith+billing@mail.co.uk"],
    "PHONE": ["(415) 555-2671", "+44 20 7946 0958"],
    "CARD": [" ".join(VISA[i:i + 4] for i in range(0, 16, 4))],
    "IBAN": ["GB82 WEST 1234 5698 7654 32", "DE89370400440532013000"],
    "NATIONAL_ID": ["536-22-1845"],
    "PERSON": ["Jane Doe", "Okafor"],
}
TEXT_EN = (f"Dear Dr. Jane Doe, your order ships today. Reach us at {PLANTED_EN['EMAIL'][0]} or call "
           f"{PLANTED_EN['PHONE'][0]}; our London desk is {PLANTED_EN['PHONE'][1]}. We charged the card "
           f"{PLANTED_EN['CARD'][0]} and refund to IBAN {PLANTED_EN['IBAN'][0]} (backup {PLANTED_EN['IBAN'][1]}). "
           f"SSN on file: {PLANTED_EN['NATIONAL_ID'][0]}. Invoices go to {PLANTED_EN['EMAIL'][1]}, "
           f"attention Mrs Okafor.")

PLANTED_ZH = {
    "EMAIL": ["zhang.wei@example.cn"],
    "PHONE": ["13812345678", "+86 139 1234 5678"],
    "CARD": [UNIONPAY],
    "NATIONAL_ID": ["11010519491231002X", "440304199001011233"],
    "PERSON": ["王伟", "欧阳娜娜", "李小龙"],
}
TEXT_ZH = (f"王伟先生的手机号是{PLANTED_ZH['PHONE'][0]}，备用电话{PLANTED_ZH['PHONE'][1]}，邮箱"
           f"{PLANTED_ZH['EMAIL'][0]}，银行卡号{PLANTED_ZH['CARD'][0]}，身份证号{PLANTED_ZH['NATIONAL_ID'][0]}。"
           f"欧阳娜娜女士的身份证是{PLANTED_ZH['NATIONAL_ID'][1]}。姓名：李小龙")

# shaped like personal data, but failing the check that real ones pass
NEAR_MISSES = [
    NOT_A_CARD,                      # 16 digits, Luhn fails
    "GB82 WEST 1234 5698 7654 33",   # IBAN, mod 97 fails
    "110105194912310021",            # Chinese ID, wrong check character (X expected)
    "110105194913310025",            # Chinese ID, month 13
    "666-22-1845",                   # SSN area 666 is never issued
]


def _all_planted(planted: dict[str, list[str]]) -> list[str]:
    return [s for values in planted.values() for s in values]


def _pii_redactor_text(text: str) -> tuple[str, dict[str, int]]:
    r = Redactor()
    out = r.text(text)
    return out, r.report()["counts"]


# ------------------------------------------------------------------ text
@pytest.mark.parametrize("text, planted", [(TEXT_EN, PLANTED_EN), (TEXT_ZH, PLANTED_ZH)], ids=["en", "zh"])
def test_nothing_planted_survives_and_each_type_is_counted(text, planted):
    out, counts = _pii_redactor_text(text)
    assert [s for s in _all_planted(planted) if s in out] == [], out
    for pii_type, values in planted.items():
        assert counts[pii_type] == len(values), (pii_type, counts, out)
        assert out.count(f"<{pii_type}>") == len(values), (pii_type, out)
    assert "Dear Dr. <PERSON>" in out or "先生的手机号是<PHONE>" in out  # the words around stay


def test_numbers_that_fail_their_check_stay():
    text = " ; ".join(f"ref {n}" for n in NEAR_MISSES) + " ; 卡号" + NOT_A_CARD + "，证件" + NEAR_MISSES[2]
    out, counts = _pii_redactor_text(text)
    assert out == text and sum(counts.values()) == 0, (out, counts, find_pii(text))
    # and the real ones beside them do not
    out, counts = _pii_redactor_text(f"{NOT_A_CARD} and {VISA}")
    assert out == f"{NOT_A_CARD} and <CARD>" and counts["CARD"] == 1


def test_check_digits_of_chinese_resident_ids():
    assert cn_resident_id_valid("11010519491231002X") and cn_resident_id_valid("11010519491231002x")
    assert cn_resident_id_valid("440304199001011233")
    assert not cn_resident_id_valid("440304199001011234")  # check digit off by one
    assert not cn_resident_id_valid("440304199002301231")  # 30 February
    assert not cn_resident_id_valid("44030419900101123")   # 17 characters


def test_an_address_or_number_right_next_to_chinese_text_is_found_without_its_neighbours():
    out, counts = _pii_redactor_text("邮箱zhang@example.com电话13812345678")
    assert out == "邮箱<EMAIL>电话<PHONE>" and counts["EMAIL"] == counts["PHONE"] == 1


def test_names_need_a_cue_and_ordinary_capitalised_words_stay():
    out, _ = _pii_redactor_text("Mr Blair's speech in London. The Bank of England met. Prof. Ada King spoke. 张先生来了。")
    assert out == "Mr <PERSON>'s speech in London. The Bank of England met. Prof. <PERSON> spoke. <PERSON>先生来了。"


# ------------------------------------------------------------------ every task's records
def _splits(records):
    return {"train": records, "dev": [], "test": []}


@pytest.fixture
def tenant(platform):
    admin = tenants.authenticate(platform, tenants.create_admin_key(platform))
    tenants.create_tenant(platform, admin, TenantSpec(name="acme"))
    return "acme"


def test_ner_tokens_are_redacted_word_by_word_and_stay_aligned_with_their_tags(platform, tenant):
    en = {"tokens": ["Contact", "Dr.", "Jane", "Doe", "at", "jane.doe@example.com", "or", "(415)", "555-2671", "."],
          "tags": ["O", "O", "B-person", "I-person", "O", "O", "O", "O", "O", "O"]}
    zh_text = "王伟先生的手机号是13812345678"
    zh = {"tokens": list(zh_text), "tags": ["B-PER", "I-PER"] + ["O"] * (len(zh_text) - 2)}
    splits, info = redact_upload(platform, tenant, "ner", _splits([en, zh]), asked=True)
    red_en, red_zh = splits["train"]
    assert red_en["tokens"] == ["Contact", "Dr.", "<PERSON>", "<PERSON>", "at", "<EMAIL>", "or", "<PHONE>", "<PHONE>", "."]
    assert red_en["tags"] == en["tags"] and len(red_zh["tokens"]) == len(zh["tokens"]) and red_zh["tags"] == zh["tags"]
    assert "".join(red_zh["tokens"]) == "<PERSON><PERSON>先生的手机号是" + "<PHONE>" * 11
    assert info["pii_redaction"]["counts"] == {"EMAIL": 1, "PHONE": 2, "CARD": 0, "IBAN": 0, "NATIONAL_ID": 0, "PERSON": 2}
    assert info["pii_redaction"]["records_changed"] == 2 and info["pii_redaction"]["requested_by"] == ["upload"]


def test_extraction_spans_move_onto_the_same_words_of_the_redacted_text(platform, tenant):
    text = f"Dr. Jane Doe (jane.doe@example.com) works for Acme Ltd, card {VISA}."
    relation = {"text": text, "head": {"start": 4, "end": 12}, "tail": {"start": text.index("Acme"), "end": text.index("Acme") + 8},
                "relation": "works_for"}
    first, last, card = text.index("Jane"), text.index("Doe"), text.index(VISA)
    fields = {"text": text, "fields": {"first_name": [{"start": first, "end": first + 4}],
                                       "last_name": [{"start": last, "end": last + 3}],
                                       "card": [{"start": card, "end": card + 16}], "employer": []}}
    splits, info = redact_upload(platform, tenant, "extraction", _splits([relation, fields]), asked=True)
    rel, fld = splits["train"]
    spanned = lambda r, s: r["text"][s["start"]:s["end"]]  # noqa: E731
    assert "Jane" not in rel["text"] and "jane.doe" not in rel["text"] and VISA not in rel["text"]
    assert spanned(rel, rel["head"]) == "<PERSON>" and spanned(rel, rel["tail"]) == "Acme Ltd"
    assert [spanned(fld, s) for k in ("first_name", "last_name", "card") for s in fld["fields"][k]] == ["<PERSON>", "<PERSON>", "<CARD>"]
    assert fld["fields"]["employer"] == [] and "Doe" not in fld["text"]
    assert info["pii_redaction"]["counts"]["CARD"] == 2 and info["pii_redaction"]["counts"]["EMAIL"] == 2


@pytest.mark.parametrize("task, record, fields", [
    ("classification", {"text": TEXT_EN, "label": "billing"}, ("text",)),
    ("classification", {"text": TEXT_ZH, "labels": ["账单", "投诉"]}, ("text",)),
    ("summarization", {"text": TEXT_EN, "summary": f"Refund for Dr. Jane Doe to {PLANTED_EN['IBAN'][0]}."},
     ("text", "summary")),
    ("retrieval", {"query": "电话 13812345678 的订单", "document": TEXT_ZH, "doc_id": "d7"}, ("query", "document")),
    ("generation", {"fields": {"contact": "jane.doe@example.com", "phone": 13812345678, "card": [VISA, "n/a"], "vip": True,
                               "items": 3}, "text": TEXT_EN}, ("fields", "text")),
], ids=["classification", "multilabel-zh", "summarization", "retrieval", "generation"])
def test_every_text_field_of_each_task_is_redacted_and_the_rest_stays(platform, tenant, task, record, fields):
    splits, info = redact_upload(platform, tenant, task, _splits([record]), asked=True)
    (redacted,) = splits["train"]
    dumped = json.dumps(redacted, ensure_ascii=False)
    planted = _all_planted(PLANTED_EN) + _all_planted(PLANTED_ZH) + [VISA, "13812345678"]
    assert [s for s in planted if s in dumped] == [], dumped
    assert info["pii_redaction"]["total"] > 0
    for k in set(record) - set(fields):  # labels, doc ids: not text, untouched
        assert redacted[k] == (sorted(record[k]) if k == "labels" else record[k])
    if task == "generation":
        assert redacted["fields"] == {"contact": "<EMAIL>", "phone": "<PHONE>", "card": ["<CARD>", "n/a"], "vip": True,
                                      "items": 3}


def test_the_tenant_setting_redacts_uploads_that_do_not_ask_and_none_is_redacted_otherwise(platform, tenant):
    records = _splits([{"text": TEXT_EN, "label": "billing"}])
    same, info = redact_upload(platform, tenant, "classification", records, asked=False)
    assert same is records and info == {}
    with platform.db.session() as s:
        s.get(Tenant, tenant).redact_pii = True
    splits, info = redact_upload(platform, tenant, "classification", records, asked=False)
    assert "jane.doe@example.com" not in splits["train"][0]["text"] and info["pii_redaction"]["requested_by"] == ["tenant"]
    assert redact_upload(platform, tenant, "classification", records, asked=True)[1]["pii_redaction"]["requested_by"] == \
        ["upload", "tenant"]


# ------------------------------------------------------------------ through the real API and S3
def _api(world, key="a"):
    client = TestClient(create_app(world["platform"]), raise_server_exceptions=False)
    return client, {"Authorization": f"Bearer {world[key]}"}


def _stored(world, dataset_id: str) -> str:
    """Every split file of the dataset as stored in the object store, read back from S3."""
    p = world["platform"]
    with p.db.session() as s:
        uri = s.get(Dataset, dataset_id).uri
    return "".join(p.objects.get_bytes(f"{p.objects.key_of(uri)}/{split}.jsonl").decode() for split in ("train", "dev", "test"))


def _rows():
    rows = []
    for i in range(12):
        text, label = (TEXT_EN, "billing") if i % 2 else (TEXT_ZH, "账单")
        rows.append({"text": f"{text} #{i}", "label": label})
    return rows


def test_an_upload_with_redact_pii_stores_only_redacted_text_and_reports_the_counts(world):
    client, hdr = _api(world)
    form = {"name": "tickets-redacted", "task": "classification", "redact_pii": "true"}
    r = client.post("/v1/datasets", headers=hdr, data=form, files={"data": ("data.jsonl", to_jsonl(_rows()))})
    assert r.status_code == 201, r.text
    ds = r.json()
    report = ds["info"]["pii_redaction"]
    stored = _stored(world, ds["id"])
    planted = _all_planted(PLANTED_EN) + _all_planted(PLANTED_ZH)
    assert [s for s in planted if s in stored] == [] and "<EMAIL>" in stored and "<NATIONAL_ID>" in stored
    per_en = {t: len(v) for t, v in PLANTED_EN.items()}
    per_zh = {t: len(v) for t, v in PLANTED_ZH.items()}
    assert report["counts"] == {t: 6 * per_en.get(t, 0) + 6 * per_zh.get(t, 0) for t in report["counts"]}
    assert report["records_changed"] == 12 and report["requested_by"] == ["upload"] and "presidio" in report["detector"]
    assert client.get(f"/v1/datasets/{ds['id']}", headers=hdr).json()["info"]["pii_redaction"] == report
    assert ds["info"]["bytes"] == len(stored.encode())  # the quota counts what is stored

    # without it, the text is stored as uploaded: redaction is what changed it
    r = client.post("/v1/datasets", headers=hdr, data={"name": "tickets-plain", "task": "classification"},
                    files={"data": ("data.jsonl", to_jsonl(_rows()))})
    assert r.status_code == 201 and "pii_redaction" not in r.json()["info"]
    assert PLANTED_EN["EMAIL"][0] in _stored(world, r.json()["id"])


def test_the_tenant_setting_is_the_admins_and_redacts_every_upload_of_the_tenant(world):
    client, admin = _api(world, "admin")
    _, member = _api(world, "b")
    r = client.put("/v1/tenants/team-b/settings", headers=member, json={"redact_pii": True})
    assert r.status_code == 403
    r = client.put("/v1/tenants/team-b/settings", headers=admin, json={"redact_pii": True, "surprise": 1})
    assert r.status_code == 422 and r.json()["error"]["errors"][0]["field"] == "surprise"
    try:
        r = client.put("/v1/tenants/team-b/settings", headers=admin, json={"redact_pii": True})
        assert r.status_code == 200 and r.json()["settings"] == {"redact_pii": True}
        assert client.get("/v1/tenants/team-b", headers=member).json()["settings"]["redact_pii"] is True
        # an upload that does not ask (or asks for false) is redacted all the same
        r = client.post("/v1/datasets", headers=member, data={"name": "b-tickets", "task": "classification",
                                                              "redact_pii": "false"},
                        files={"data": ("data.jsonl", to_jsonl(_rows()))})
        assert r.status_code == 201, r.text
        assert r.json()["info"]["pii_redaction"]["requested_by"] == ["tenant"]
        stored = _stored(world, r.json()["id"])
        assert not [s for s in _all_planted(PLANTED_EN) + _all_planted(PLANTED_ZH) if s in stored]
    finally:
        client.put("/v1/tenants/team-b/settings", headers=admin, json={"redact_pii": False})
    assert client.get("/v1/tenants/team-b", headers=member).json()["settings"]["redact_pii"] is False


def test_the_cli_uploads_with_redact_pii_and_shows_the_counts(world, tmp_path):
    path = tmp_path / "tickets.jsonl"
    path.write_bytes(to_jsonl(_rows()))
    assert "--redact-pii" in ok(None, "datasets", "upload", "--help").stdout
    shown = json.loads(ok(world["a"], "datasets", "upload", "--name", "cli-redacted", "--data", str(path),
                          "--redact-pii").stdout)
    assert shown["info"]["pii_redaction"]["counts"]["PHONE"] == 6 * 2 + 6 * 2
    again = json.loads(ok(world["a"], "datasets", "show", shown["id"]).stdout)
    assert again["info"]["pii_redaction"] == shown["info"]["pii_redaction"]
    assert PLANTED_ZH["NATIONAL_ID"][0] not in _stored(world, shown["id"])
    refused = cli(world["a"], "tenants", "settings", "team-a", "--redact-pii")
    assert refused.exit_code != 0 and "admin" in refused.output
    assert json.loads(ok(world["admin"], "tenants", "settings", "team-a").stdout) == {"redact_pii": False}


def test_a_documents_upload_with_redact_pii_keeps_the_planted_data_out_of_the_store_and_the_report(world):
    from tests.document_samples import html_bytes, tar_gz_bytes

    contract = "Lease between Acme Holdings and Dr. Jane Doe, jane.doe@example.com, tel 13812345678.\nRent is due monthly."
    start = contract.index("Jane Doe")
    moved = {"start": start + 3, "end": start + 11, "label": "per", "text": "Jane Doe"}  # off by 3: moved, quoted in the report
    files = {f"c{i}.html": html_bytes("Lease", contract) for i in range(10)}
    labels = "\n".join(json.dumps({"file": f, "entities": [moved]}) for f in files).encode()
    client, hdr = _api(world)
    r = client.post("/v1/datasets", headers=hdr, data={"name": "leases-redacted", "task": "ner", "redact_pii": "true"},
                    files={"documents": ("docs.tar.gz", tar_gz_bytes(files)), "labels": ("labels.jsonl", labels)})
    assert r.status_code == 201, r.text
    info = r.json()["info"]
    assert info["documents"]["records"]["relocated_spans"] and info["pii_redaction"]["counts"]["EMAIL"] == 10
    stored = _stored(world, r.json()["id"])
    for planted in ("Jane", "jane.doe@example.com", "13812345678"):
        assert planted not in stored and planted not in json.dumps(info), planted
    assert '"<PERSON>"' in stored and '"<EMAIL>,"' in stored and '"B-per"' in stored
