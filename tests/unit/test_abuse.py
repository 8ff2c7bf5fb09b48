"""Every door is metered: each test performs one abuse over raw HTTP against the API app (the
FastAPI TestClient, and a real uvicorn server for bodies with no length) and asserts what the
caller sees: oversized bodies (declared or chunked) are a 413 naming the limit and the setting
that raises it; deeply nested JSON is a 400, never a 500; too many rows or labels are refused
before anything is stored; a key or an address over its rate is a 429 with ``Retry-After``;
tenant quotas on queued jobs and keys are a 429; and every list is a page."""

from __future__ import annotations

import socket
import threading
import time
import uuid

import pytest
from fastapi.testclient import TestClient

from doctune.api.app import create_app
from doctune.config import Settings
from doctune.services import Platform, tenants
from doctune.spec import TenantSpec

JSON_CAP, UPLOAD_CAP = 4096, 64 * 1024


def make_world(database_url: str, tmp_path, **settings):
    p = Platform(Settings(home=str(tmp_path), database_url=database_url, max_json_bytes=JSON_CAP,
                          max_upload_bytes=UPLOAD_CAP, **settings))
    p.db.migrate()
    admin_key = tenants.create_admin_key(p)
    admin = tenants.authenticate(p, admin_key)
    _, key_a = tenants.create_tenant(p, admin, TenantSpec(name="team-a"))
    hdr = {"admin": {"Authorization": f"Bearer {admin_key}"}, "a": {"Authorization": f"Bearer {key_a}"}}
    return p, hdr


@pytest.fixture
def world(database_url, tmp_path):
    p, hdr = make_world(database_url, tmp_path, max_dataset_rows=20, max_labels=3)
    yield p, TestClient(create_app(p)), hdr
    p.db.dispose()


def error_of(r, status: int) -> dict:
    assert r.status_code == status, r.text
    return r.json()["error"]


def chunks(blob: bytes, size: int = 1024):
    """A body sent in chunks with no Content-Length (HTTP/1.1 chunked transfer encoding)."""
    for i in range(0, len(blob), size):
        yield blob[i:i + size]


def multipart(fields: dict[str, str], files: dict[str, bytes]) -> tuple[bytes, str]:
    boundary = uuid.uuid4().hex
    parts = [f'--{boundary}\r\nContent-Disposition: form-data; name="{k}"\r\n\r\n{v}\r\n'.encode() for k, v in fields.items()]
    parts += [f'--{boundary}\r\nContent-Disposition: form-data; name="{k}"; filename="{k}.jsonl"\r\n'
              f"Content-Type: application/octet-stream\r\n\r\n".encode() + v + b"\r\n" for k, v in files.items()]
    return b"".join(parts) + f"--{boundary}--\r\n".encode(), f"multipart/form-data; boundary={boundary}"


def jsonl(*lines: str) -> bytes:
    return "\n".join(lines).encode()


# ------------------------------------------------------------------ point 10: bodies and uploads
def test_json_body_over_the_cap_is_413_naming_the_limit_and_the_setting(world):
    _, client, hdr = world
    body = b'{"task": "classification", "padding": "' + b"x" * JSON_CAP + b'"}'
    err = error_of(client.post("/v1/jobs", headers={**hdr["a"], "Content-Type": "application/json"}, content=body), 413)
    assert err["code"] == "too_large" and str(JSON_CAP) in err["message"] and "DOCTUNE_MAX_JSON_BYTES" in err["message"]


def test_chunked_json_body_with_no_length_is_cut_off_at_the_cap(world):
    _, client, hdr = world
    body = b'{"task": "classification", "padding": "' + b"x" * (4 * JSON_CAP) + b'"}'
    r = client.post("/v1/jobs", headers={**hdr["a"], "Content-Type": "application/json"}, content=chunks(body))
    assert r.request.headers.get("transfer-encoding") == "chunked" and "content-length" not in r.request.headers
    err = error_of(r, 413)
    assert "DOCTUNE_MAX_JSON_BYTES" in err["message"]


def test_chunked_upload_over_the_cap_is_413_and_stores_nothing(world):
    _, client, hdr = world
    big = jsonl(*['{"text": "%s", "label": "a"}' % ("y" * 1000)] * 1600)  # 1.6 MB: over 64 KiB + 1 MiB of framing
    body, content_type = multipart({"name": "big", "task": "classification"}, {"data": big})
    r = client.post("/v1/datasets", headers={**hdr["a"], "Content-Type": content_type}, content=chunks(body, 64 * 1024))
    err = error_of(r, 413)
    assert "DOCTUNE_MAX_UPLOAD_BYTES" in err["message"]
    assert client.get("/v1/datasets", headers=hdr["a"]).json()["items"] == []


def test_deeply_nested_json_is_400_not_500(world):
    _, client, hdr = world
    for depth in (40, 2000):  # over the 32 the platform allows; deep enough to overflow Python's own parser
        body = b'{"task": "classification", "x": ' + b"[" * depth + b"]" * depth + b"}"
        err = error_of(client.post("/v1/jobs", headers={**hdr["a"], "Content-Type": "application/json"}, content=body), 400)
        assert err["field"] == "body" and "32 deep" in err["message"]


def test_dataset_rows_labels_and_nesting_are_capped_before_anything_is_stored(world):
    _, client, hdr = world
    cases = [
        (jsonl(*['{"text": "t%d", "label": "%s"}' % (i, "ab"[i % 2]) for i in range(25)]), 413, "DOCTUNE_MAX_DATASET_ROWS"),
        (jsonl(*['{"text": "t%d", "label": "l%d"}' % (i, i % 4) for i in range(20)]), 422, "DOCTUNE_MAX_LABELS"),
        (jsonl('{"text": "t", "label": "a", "x": ' + "[" * 3000 + "]" * 3000 + "}"), 422, "data line 1"),
    ]
    for data, status, needle in cases:
        r = client.post("/v1/datasets", headers=hdr["a"], data={"name": "d", "task": "classification"},
                        files={"data": ("d.jsonl", data)})
        assert needle in error_of(r, status)["message"]
    assert client.get("/v1/datasets", headers=hdr["a"]).json()["items"] == []


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def served(world):
    """The same app behind a real uvicorn server, as `doctune up` runs it."""
    import uvicorn

    p, _, hdr = world
    server = uvicorn.Server(uvicorn.Config(create_app(p), host="127.0.0.1", port=_free_port(), log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        assert time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.05)
    yield server.config.port, hdr
    server.should_exit = True
    thread.join(10)


def test_real_server_cuts_off_an_endless_chunked_body(served):
    """A client that streams a body with no length and never stops gets a 413 once the cap passes."""
    port, hdr = served
    with socket.create_connection(("127.0.0.1", port), timeout=20) as conn:
        conn.sendall(f"POST /v1/jobs HTTP/1.1\r\nHost: x\r\n{'Authorization'}: {hdr['a']['Authorization']}\r\n"
                     "Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n".encode())
        chunk = b"x" * 1024
        answer = b""
        try:
            for _ in range(10 * JSON_CAP // len(chunk)):  # ten times the cap: the server answers long before
                conn.sendall(f"{len(chunk):x}\r\n".encode() + chunk + b"\r\n")
        except OSError:
            pass  # the server closed the connection after answering
        while b"\r\n\r\n" not in answer:
            data = conn.recv(65536)
            if not data:
                break
            answer += data
    assert answer.startswith(b"HTTP/1.1 413"), answer[:200]
