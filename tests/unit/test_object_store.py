"""The object store speaks the MinIO SDK to the real SeaweedFS server: large files go up in parts
and come back whole, presigned URLs download without credentials, a prefix is deleted in batches,
a refused request (4xx) fails at once while an unreachable server is retried, and a bad endpoint
setting is named with its fix."""

from __future__ import annotations

import io
import time

import httpx
import pytest

from doctune.config import Settings
from doctune.errors import DoctuneError
from doctune.store.objects import ObjectStore, _transient

from tests.unit.test_cli import s3  # noqa: F401  (a bucket of its own on the session's real SeaweedFS server)

MiB = 1024 * 1024


@pytest.fixture
def store(s3):  # noqa: F811
    st = ObjectStore(Settings(**s3))
    st.ensure_bucket()
    st.ensure_bucket()  # a second call finds it there
    yield st
    st.delete_prefix("tenants/team-s/")


def test_a_large_file_goes_up_in_parts_and_comes_back_whole(store, tmp_path):
    data = bytes(range(256)) * (11 * MiB // 256)
    (tmp_path / "up").mkdir()
    (tmp_path / "up" / "weights.bin").write_bytes(data)
    store.upload_file(tmp_path / "up" / "weights.bin", "tenants/team-s/m/weights.bin", part_size=5 * MiB)
    assert store.client.stat_object(store.bucket, "tenants/team-s/m/weights.bin").etag.endswith("-3")  # 3 parts
    store.put_stream("tenants/team-s/m/stream.bin", io.BytesIO(data), part_size=5 * MiB)  # length unknown
    assert store.size_of("tenants/team-s/m/stream.bin") == len(data)
    assert store.download_dir("tenants/team-s/m", tmp_path / "down") == 2
    assert (tmp_path / "down" / "weights.bin").read_bytes() == data
    assert (tmp_path / "down" / "stream.bin").read_bytes() == data
    assert store.prefix_bytes("tenants/team-s/m/") == 2 * len(data)


def test_a_presigned_url_downloads_without_credentials_until_it_expires(store):
    store.put_bytes("tenants/team-s/m/config.json", b'{"a": 1}')
    url = store.presign_download("tenants/team-s/m/config.json", expires_s=60)
    assert httpx.get(url).content == b'{"a": 1}'
    short = store.presign_download("tenants/team-s/m/config.json", expires_s=1)
    time.sleep(2)  # the URL's expiry is the behaviour under test
    assert httpx.get(short).status_code == 403
    assert httpx.get(url.split("?")[0]).status_code == 403  # no signature, no object


def test_a_prefix_is_deleted_in_batches_and_nothing_else_goes(store):
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(16) as pool:  # more than one DeleteObjects request holds (1000 keys), put 16 at a time
        list(pool.map(lambda i: store.put_bytes(f"tenants/team-s/many/{i:04d}", b"x"), range(1005)))
    store.put_bytes("tenants/team-s/kept", b"k")
    assert sorted(store.list_keys("tenants/team-s/many/"))[-1] == "tenants/team-s/many/1004"
    assert store.delete_prefix("tenants/team-s/many/") == 1005
    assert list(store.list_keys("tenants/team-s/many/")) == []
    assert store.get_bytes("tenants/team-s/kept") == b"k"
    with pytest.raises(DoctuneError) as e:
        store.get_bytes("tenants/team-s/many/0001")
    assert e.value.code == "not_found"


def test_a_refused_upload_fails_at_once_instead_of_retrying(s3):  # noqa: F811
    from minio.error import S3Error

    wrong_key = ObjectStore(Settings(**{**s3, "s3_secret_key": "not-the-secret"}))
    started = time.monotonic()
    with pytest.raises(S3Error) as e:
        wrong_key.put_bytes("tenants/team-s/x", b"x")
    assert e.value.response.status == 403 and time.monotonic() - started < 5


def test_only_unreachable_or_failing_servers_are_retried():
    import urllib3.exceptions
    from minio.error import ServerError

    assert _transient(urllib3.exceptions.MaxRetryError(None, "/", "connection refused"))
    assert _transient(ConnectionRefusedError())
    assert _transient(ServerError("bad gateway", 502))
    assert not _transient(ValueError("object name with '..' path segment is not supported"))
    assert not _transient(DoctuneError("bad name", "invalid_request"))


@pytest.mark.parametrize("endpoint", ["127.0.0.1:8333", "ftp://host:21", "http://host:8333/some/path"])
def test_an_endpoint_that_is_not_a_url_is_named_with_its_fix(endpoint):
    with pytest.raises(DoctuneError) as e:
        ObjectStore(Settings(s3_endpoint=endpoint))
    assert e.value.field == "s3_endpoint" and "http://HOST:PORT" in e.value.message


def test_an_https_endpoint_is_spoken_to_over_tls():
    url = ObjectStore(Settings(s3_endpoint="https://s3.example.com", s3_access_key="a", s3_secret_key="b"))
    assert url.presign_download("k", 60).startswith("https://s3.example.com/doctune/k?")


def test_no_code_of_ours_speaks_boto3():
    """One S3 client: the MinIO SDK (Ray Train's checkpoints go through pyarrow's S3 filesystem)."""
    import re
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    pattern = re.compile(r"^\s*(import|from)\s+(boto3|botocore|s3transfer)\b", re.M)
    files = [f for d in ("platform", "ray_jobs", "operators", "tests") if (root / d).exists()
             for f in (root / d).rglob("*.py")]
    assert [str(f.relative_to(root)) for f in files if pattern.search(f.read_text(errors="replace"))] == []


def test_file_names_with_spaces_and_chinese_come_back_as_named(store, tmp_path):
    (tmp_path / "up" / "子目录").mkdir(parents=True)
    (tmp_path / "up" / "子目录" / "词表 v1+2.txt").write_text("你好", encoding="utf-8")
    assert store.upload_dir(tmp_path / "up", "tenants/team-s/zh") == 1
    assert list(store.list_keys("tenants/team-s/zh/")) == ["tenants/team-s/zh/子目录/词表 v1+2.txt"]
    store.download_dir("tenants/team-s/zh", tmp_path / "down")
    assert (tmp_path / "down" / "子目录" / "词表 v1+2.txt").read_text(encoding="utf-8") == "你好"
