"""The console's datasets, new-job and jobs pages, driven through gradio_client as a browser would
call them, against the real API behind uvicorn (SQLite, a real SeaweedFS S3 server, no Ray, so a
submitted job stays queued): sign in with the right key, a wrong key (a clear message, no trace) and
a viewer's key (no write controls); upload a good file (preview, labels, class balance) and a bad
one (every bad line listed with its field), in JSONL and CSV; plan a job from the generated form
(memory, tokens, the YAML and both submit lines); submit, see it queued and why, and cancel it."""

from __future__ import annotations

import csv
import io
import json
import socket
import threading
import time

import pytest
import yaml
from gradio_client import handle_file

from tests.e2e.console import console_client

from doctune.api.app import create_app
from doctune.config import Settings
from doctune.console.app import build_console, queued
from doctune.services import Platform, tenants
from doctune.spec import TenantSpec
from tests.unit.test_cli import s3  # noqa: F401  (the real S3 server fixture)

LABELS = ("sport", "business", "tech")
pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _serve_api(p: Platform):
    import uvicorn

    server = uvicorn.Server(uvicorn.Config(create_app(p), host="127.0.0.1", port=_free_port(), log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        assert time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.05)
    return server, thread


@pytest.fixture(scope="module")
def stack(tmp_path_factory, s3):  # noqa: F811
    """The API (uvicorn) and the console (gradio) on free ports; keys for a member, a viewer, the admin."""
    home = tmp_path_factory.mktemp("console")
    p = Platform(Settings(home=str(home), database_url=f"sqlite:///{home / 'doctune.db'}", **s3))
    p.db.migrate()
    admin_key = tenants.create_admin_key(p)
    admin = tenants.authenticate(p, admin_key)
    _, member = tenants.create_tenant(p, admin, TenantSpec(name="team-c"))
    _, viewer = tenants.create_key(p, tenants.authenticate(p, member), "team-c", "viewer")
    server, thread = _serve_api(p)
    blocks = build_console(f"http://127.0.0.1:{server.config.port}")
    queued(blocks).launch(server_name="127.0.0.1", server_port=_free_port(), prevent_thread_lock=True, quiet=True)
    yield {"url": blocks.local_url, "blocks": blocks, "member": member, "viewer": viewer, "admin": admin_key, "home": home}
    blocks.close()
    server.should_exit = True
    thread.join(10)
    p.db.dispose()


def signed_in(stack, key: str) -> Client:
    client = console_client(stack["url"])
    client.predict(key, api_name="/do_sign_in")
    return client


def records(n_per_label: int = 6) -> list[dict]:
    return [{"text": f"{label} story number {i} 中文 {label}", "label": label} for label in LABELS for i in range(n_per_label)]


def test_a_wrong_key_gets_a_clear_message_and_no_trace(stack):
    client = console_client(stack["url"])
    with pytest.raises(Exception) as err:
        client.predict("dtk_nope_wrong", api_name="/do_sign_in")
    assert "key" in str(err.value).lower() and "Traceback" not in str(err.value)
    with pytest.raises(Exception) as err:  # not signed in: the page says to sign in first
        client.predict(api_name="/list_datasets")
    assert "Sign in" in str(err.value)


def test_signing_in_shows_tenant_and_role_and_a_viewer_gets_no_write_controls(stack):
    assert "team-c · member" in console_client(stack["url"]).predict(stack["member"], api_name="/do_sign_in")[1]
    assert "team-c · viewer" in console_client(stack["url"]).predict(stack["viewer"], api_name="/do_sign_in")[1]
    # gradio_client returns no button visibility, so the sign-in handler is called as Gradio calls it
    member, viewer = _shown(stack, stack["member"]), _shown(stack, stack["viewer"])
    writes = ("datasets-upload", "datasets-delete", "new-job-submit", "jobs-cancel", "jobs-pause", "jobs-resume")
    assert all(member[w] for w in writes), member
    assert not any(viewer[w] for w in writes), viewer
    assert member["tab-admin"] is False and viewer["tab-admin"] is False
    assert _shown(stack, stack["admin"])["tab-admin"] is True


def _shown(stack, key: str) -> dict[str, bool]:
    """elem_id -> visible, for each control the sign-in handler shows or hides for ``key``'s role."""
    import gradio as gr

    dep = next(f for f in stack["blocks"].fns.values() if f.api_name == "do_sign_in")
    updates = dep.fn(key, gr.Request(session_hash=f"test-{key[:12]}"))
    return {out.elem_id: u["visible"] for out, u in zip(dep.outputs, updates)
            if getattr(out, "elem_id", None) and isinstance(u, dict) and "visible" in u}


def test_a_good_upload_shows_preview_labels_and_class_balance(stack, tmp_path):
    path = tmp_path / "news.jsonl"
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records()), encoding="utf-8")
    client = signed_in(stack, stack["member"])
    status, errors, preview, balance, listed, _ = client.predict("classification", "", handle_file(str(path)),
                                                                 api_name="/upload_dataset")
    assert "Uploaded **news**" in status and "3 labels" in status, status
    assert preview["headers"] == ["text", "label"] and "中文" in preview["data"][0][0]
    counts = {row["label"]: row["count"] for row in _plot_rows(balance)}
    assert set(counts) == set(LABELS) and all(c > 0 for c in counts.values())
    assert "news" in [row[1] for row in listed["data"]]


def test_a_bad_upload_lists_every_bad_line_with_its_field(stack, tmp_path):
    rows = records()
    rows[2] = {"text": "no label here"}
    rows[5] = {"text": "", "label": "sport"}
    path = tmp_path / "broken.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows) + "{not json\n")
    client = signed_in(stack, stack["member"])
    status, errors, *_ = client.predict("classification", "broken", handle_file(str(path)), api_name="/upload_dataset")
    assert status.startswith("**Not uploaded:**")
    table = [(r[0], r[1]) for r in errors["value"]["data"]] if "value" in errors else [(r[0], r[1]) for r in errors["data"]]
    assert table == [(3, "label"), (6, "text"), (len(rows) + 1, "data")], table


def test_a_csv_upload_is_parsed_into_the_task_records(stack, tmp_path):
    buf = io.StringIO()
    writer = csv.writer(buf)
    writer.writerow(["text", "label"])
    writer.writerows([[r["text"] + ", with a comma", r["label"]] for r in records()])
    path = tmp_path / "from-sheet.csv"
    path.write_text(buf.getvalue(), encoding="utf-8")
    client = signed_in(stack, stack["member"])
    status, _, preview, balance, *_ = client.predict("classification", "", handle_file(str(path)), api_name="/upload_dataset")
    assert "Uploaded **from-sheet**" in status, status
    assert preview["data"][0][0].endswith(", with a comma")
    assert {row["label"] for row in _plot_rows(balance)} == set(LABELS)


def test_plan_submit_and_cancel_a_job_from_the_generated_form(stack, tmp_path):
    path = tmp_path / "plan-me.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in records()))
    client = signed_in(stack, stack["member"])
    client.predict("classification", "", handle_file(str(path)), api_name="/upload_dataset")
    form = _form_values(client, dataset="plan-me")
    plan, spec_yaml, commands = client.predict(*form, api_name="/plan_job")
    assert "memory per worker" in plan and "fits the quota" in plan and "tokens" in plan
    spec = yaml.safe_load(spec_yaml)
    assert spec["task"] == "classification" and spec["epochs"] == 3 and spec["tenant"] == "team-c"
    assert "doctune jobs submit job.yaml" in commands
    assert "ray job submit" in commands and "--token dtj_" in commands
    status = client.predict(*form, api_name="/submit_job")
    job_id = status.split("**")[1]
    _, jobs, _ = client.predict(api_name="/list_jobs")
    row = next(r for r in jobs["data"] if r[0] == job_id)
    assert row[3] == "queued"
    out = client.predict(job_id, api_name="/cancel_job")
    assert "cancelled" in out[3]  # the job view's header
    assert next(r for r in out[1]["data"] if r[0] == job_id)[3] == "cancelled"


def test_a_bad_setting_is_named_with_its_fix(stack):
    client = signed_in(stack, stack["member"])
    form = _form_values(client, dataset=None, learning_rate=-1.0)
    with pytest.raises(Exception) as err:
        client.predict(*form, api_name="/plan_job")
    assert "learning_rate" in str(err.value) and "Traceback" not in str(err.value)


def _form_values(client: Client, dataset: str | None, **changes) -> list:
    """The plan endpoint's parameters at their defaults, with the task, a dataset and ``changes`` set."""
    params = client.view_api(print_info=False, return_format="dict")["named_endpoints"]["/plan_job"]["parameters"]
    values = []
    datasets = {}
    if dataset:
        datasets = {row[1]: row[0] for row in client.predict(api_name="/list_datasets")[0]["data"]}
    for param in params:
        name = param["label"]
        value = param.get("parameter_default")
        if name == "task":
            value = "classification"
        elif name == "id":
            value = datasets.get(dataset, "ds_missing")
        values.append(changes.get(name, value))
    return values


def _plot_rows(plot) -> list[dict]:
    """A plot's data rows, as gradio_client returns them (a dict with its value as a table)."""
    value = plot.get("value", plot) if isinstance(plot, dict) else plot
    if isinstance(value, dict) and "data" in value:
        cols = [c if isinstance(c, str) else c.get("name") for c in value.get("columns", value.get("headers", []))]
        return [dict(zip(cols, r)) for r in value["data"]]
    raise AssertionError(f"unexpected plot value: {str(plot)[:300]}")
