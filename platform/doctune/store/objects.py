"""The object store: one S3 client, the MinIO SDK (``minio``), for every S3 server (SeaweedFS, MinIO, AWS).

Keys always live under ``tenants/<tenant-id>/``; :func:`tenant_key` builds them
and refuses names that would climb out of that prefix. Ray Train writes
checkpoints through :meth:`ObjectStore.pyarrow_fs`, the same endpoint and keys.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import BinaryIO, Callable, Iterator

from doctune.config import Settings
from doctune.errors import DoctuneError

_SAFE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")

UPLOAD_RETRY_S = 60.0  # how long an upload keeps retrying while the S3 server is down (e.g. restarting)


def _transient(exc: BaseException) -> bool:
    """Worth retrying: the server is unreachable (a urllib3 or OS network error) or answered 5xx
    (restarting, overloaded); not a refusal of the request itself (an ``S3Error`` with a 4xx status,
    such as a key the server will never accept) nor a request the SDK refused to send."""
    from minio.error import S3Error, ServerError

    if isinstance(exc, (DoctuneError, ValueError, TypeError)):
        return False
    if isinstance(exc, S3Error):
        return (getattr(exc.response, "status", None) or 500) >= 500
    if isinstance(exc, ServerError):
        return exc.status_code >= 500
    return True


def retrying_upload(what: str, retry_s: float | None = None):
    """A tenacity ``Retrying`` for uploads: exponential backoff (0.5 s doubling, at most 10 s apart)
    for up to ``retry_s`` (UPLOAD_RETRY_S) in all, then the last error is raised. An S3 server
    that is briefly unreachable (restarting, a network blip) costs a pause, not the job."""
    import logging

    from tenacity import Retrying, retry_if_exception, stop_after_delay, wait_exponential

    def say(state) -> None:
        logging.getLogger("doctune.objects").warning("%s failed (%s); retrying in %.1fs", what,
                                                     state.outcome.exception(), state.next_action.sleep)

    return Retrying(stop=stop_after_delay(UPLOAD_RETRY_S if retry_s is None else retry_s),
                    wait=wait_exponential(multiplier=0.5, max=10), reraise=True,
                    retry=retry_if_exception(_transient), before_sleep=say)


def tenant_key(tenant: str, *parts: str) -> str:
    """``tenants/<tenant>/<parts...>``, refusing any segment that is not a plain name."""
    for p in (tenant, *parts):
        for seg in p.split("/"):
            if not _SAFE.match(seg) or seg in (".", ".."):
                raise DoctuneError(
                    f"name {seg!r} is not allowed in a storage path; use letters, digits, '.', '_' or '-'",
                    "invalid_request",
                    field="name",
                )
    return "/".join(("tenants", tenant, *parts))


PART_SIZE = 16 * 1024 * 1024  # objects larger than this go up as a multipart upload, this much per part


def s3_client(settings: Settings):
    """A ``minio.Minio`` client for ``settings.s3_endpoint`` (``http://host:port`` or ``https://...``).
    Requests time out after 10 s connecting and 120 s waiting for an answer; network errors and 5xx
    answers are retried 5 times inside one call, with backoff, before the call raises."""
    from urllib.parse import urlsplit

    import certifi
    import urllib3
    from minio import Minio

    url = urlsplit(settings.s3_endpoint)
    if url.scheme not in ("http", "https") or not url.netloc or url.path.strip("/"):
        raise DoctuneError(
            f"s3_endpoint {settings.s3_endpoint!r} is not an S3 endpoint URL; set DOCTUNE_S3_ENDPOINT to "
            "http://HOST:PORT or https://HOST[:PORT] (no path)", "invalid_request", field="s3_endpoint")
    http = urllib3.PoolManager(
        timeout=urllib3.Timeout(connect=10, read=120), maxsize=10, ca_certs=certifi.where(),
        retries=urllib3.Retry(total=5, backoff_factor=0.2, status_forcelist=[500, 502, 503, 504]),
    )
    return Minio(url.netloc, access_key=settings.s3_access_key or None, secret_key=settings.s3_secret_key or None,
                 secure=url.scheme == "https", region=settings.s3_region or None, http_client=http)


class ObjectStore:
    """The bucket of one platform through the MinIO SDK (``self.client`` is a ``minio.Minio``): the
    same code runs against the embedded SeaweedFS server, MinIO and AWS S3."""

    def __init__(self, settings: Settings) -> None:
        if not settings.s3_endpoint:
            raise DoctuneError(
                "no object store configured: run `doctune up`, or set DOCTUNE_S3_ENDPOINT, "
                "DOCTUNE_S3_ACCESS_KEY and DOCTUNE_S3_SECRET_KEY",
                "unavailable",
            )
        self.settings = settings
        self.bucket = settings.bucket
        self.client = s3_client(settings)

    def ensure_bucket(self) -> None:
        from minio.error import S3Error

        if self.client.bucket_exists(self.bucket):
            return
        try:
            self.client.make_bucket(self.bucket)
        except S3Error as exc:  # another process made it first
            if exc.code not in ("BucketAlreadyOwnedByYou", "BucketAlreadyExists"):
                raise

    def put_bytes(self, key: str, data: bytes) -> None:
        import io

        for attempt in retrying_upload(f"upload of {key}"):
            with attempt:
                self.client.put_object(self.bucket, key, io.BytesIO(data), len(data), part_size=PART_SIZE)

    def put_stream(self, key: str, stream: BinaryIO, length: int = -1, part_size: int = PART_SIZE) -> None:
        """Store what ``stream`` holds (``length`` bytes, or -1: until it ends) without reading it
        all into memory: a multipart upload of ``part_size`` parts once it is larger than one part.
        Not retried: a stream cannot be rewound in general (use :meth:`upload_file` for files)."""
        self.client.put_object(self.bucket, key, stream, length, part_size=part_size)

    def upload_file(self, path: str | Path, key: str, part_size: int = PART_SIZE) -> None:
        """Store the file at ``path`` as ``key`` (multipart above ``part_size``), retried for up to
        a minute while the server is unreachable (:func:`retrying_upload`)."""
        for attempt in retrying_upload(f"upload of {Path(path).name}"):
            with attempt:
                self.client.fput_object(self.bucket, key, str(path), part_size=part_size)

    def get_bytes(self, key: str) -> bytes:
        from minio.error import S3Error

        try:
            response = self.client.get_object(self.bucket, key)
        except S3Error as exc:
            if exc.code in ("NoSuchKey", "NoSuchObject"):
                raise DoctuneError(f"object {key} not found", "not_found") from None
            raise
        try:
            return response.read()
        finally:
            response.close()
            response.release_conn()

    def size_of(self, key: str) -> int | None:
        """The size in bytes of ``key``, or None when nothing is stored there."""
        from minio.error import S3Error

        try:
            return self.client.stat_object(self.bucket, key).size
        except S3Error as exc:
            if exc.code in ("NoSuchKey", "NoSuchObject", "ResourceNotFound"):
                return None
            raise

    def list_objects(self, prefix: str) -> Iterator[tuple[str, int]]:
        """``(key, bytes)`` of every object whose key starts with ``prefix``, in key order."""
        for obj in self.client.list_objects(self.bucket, prefix=prefix, recursive=True):
            if not obj.is_dir:
                yield obj.object_name, obj.size or 0

    def list_keys(self, prefix: str) -> Iterator[str]:
        for key, _ in self.list_objects(prefix):
            yield key

    def prefix_bytes(self, prefix: str) -> int:
        """Bytes stored under ``prefix`` (storage accounting and quotas)."""
        return sum(size for _, size in self.list_objects(prefix))

    def delete_prefix(self, prefix: str) -> int:
        """Delete every object under ``prefix`` (batched, 1000 keys a request); the number deleted.
        A key the server refuses to delete fails the call, naming it."""
        from minio.deleteobjects import DeleteObject

        keys = list(self.list_keys(prefix))
        errors = list(self.client.remove_objects(self.bucket, (DeleteObject(k) for k in keys)))  # lazy: consume it
        failed = [e for e in errors if e.code not in ("NoSuchKey", "NoSuchObject")]
        if failed:
            raise DoctuneError(f"could not delete {len(failed)} object(s) under {prefix}, e.g. {failed[0].name}: "
                               f"{failed[0].code} {failed[0].message}", "unavailable")
        return len(keys)

    def upload_dir(self, local: str | Path, prefix: str) -> int:
        local = Path(local)
        n = 0
        for path in sorted(local.rglob("*")):
            if path.is_file():
                self.upload_file(path, f"{prefix}/{path.relative_to(local).as_posix()}")
                n += 1
        return n

    def download_dir(self, prefix: str, local: str | Path, *, only: Callable[[str], bool] | None = None) -> int:
        """Copy every object under ``prefix`` into ``local`` (``only``: those whose path below the
        prefix it accepts). A key whose tail would land outside ``local`` (``..``, an absolute
        segment) fails the whole download before any file is written."""
        from doctune.store.paths import confined_path

        local = Path(local)
        prefix = prefix.rstrip("/") + "/"
        keys = [k for k in self.list_keys(prefix)  # a key ending in "/" is a folder marker, not a file
                if not k.endswith("/") and (only is None or only(k[len(prefix):]))]
        targets = [(key, confined_path(local, key[len(prefix):])) for key in keys]
        for key, dest in targets:
            dest.parent.mkdir(parents=True, exist_ok=True)
            self.client.fget_object(self.bucket, key, str(dest))
        if not targets:
            raise DoctuneError(f"nothing stored under {prefix}", "not_found")
        return len(targets)

    def uri(self, key: str) -> str:
        return f"s3://{self.bucket}/{key}"

    def key_of(self, uri: str) -> str:
        head = f"s3://{self.bucket}/"
        if not uri.startswith(head):
            raise DoctuneError(f"{uri} is not in bucket {self.bucket}", "invalid_request")
        return uri[len(head) :]

    def presign_download(self, key: str, expires_s: int = 3600) -> str:
        """A URL that GETs ``key`` with no credentials for ``expires_s`` seconds (1 s .. 7 days)."""
        from datetime import timedelta

        return self.client.presigned_get_object(self.bucket, key, expires=timedelta(seconds=expires_s))

    def pyarrow_fs(self):
        """A pyarrow S3 filesystem on the same endpoint, for Ray Train's RunConfig; it retries
        network errors for about a minute (:func:`retrying_s3_filesystem`)."""
        endpoint = self.settings.s3_endpoint
        scheme = "https" if endpoint.startswith("https") else "http"
        return retrying_s3_filesystem(
            access_key=self.settings.s3_access_key,
            secret_key=self.settings.s3_secret_key,
            endpoint_override=endpoint.split("://", 1)[-1],
            scheme=scheme,
            region=self.settings.s3_region,
        )


S3_FS_ATTEMPTS = 11  # the AWS SDK's default strategy waits 25 ms * 2^n between tries: 11 tries span ~51 s


def retrying_s3_filesystem(**kwargs):
    """A ``pyarrow.fs.S3FileSystem`` whose every request retries network errors and 5xx answers with
    exponential backoff for about a minute, in every process it is pickled to. Ray Train's
    controller writes its checkpoint index and deletes old checkpoints through it with no retry of
    its own, so an S3 server that restarts would otherwise fail the whole attempt. (pyarrow drops
    ``retry_strategy`` when a filesystem is pickled; this subclass keeps it.)"""
    global _RetryingS3FileSystem
    if _RetryingS3FileSystem is None:
        import pyarrow.fs

        class RetryingS3FileSystem(pyarrow.fs.S3FileSystem):
            def __init__(self, **kw):
                self._doctune_kwargs = kw
                super().__init__(retry_strategy=pyarrow.fs.AwsDefaultS3RetryStrategy(max_attempts=S3_FS_ATTEMPTS), **kw)

            def __reduce__(self):
                return _rebuild_s3_filesystem, (self._doctune_kwargs,)

            def create_dir(self, path, *, recursive=True):
                try:
                    return super().create_dir(path, recursive=recursive)
                except OSError as exc:
                    # a recursive create first asks whether the bucket exists (HeadBucket), which a
                    # tenant-scoped key (doctune.store.tenant_keys) may not; S3 needs no folders first
                    if "HeadBucket" not in str(exc):
                        raise

        _RetryingS3FileSystem = RetryingS3FileSystem
    return _RetryingS3FileSystem(**kwargs)


_RetryingS3FileSystem = None


def _rebuild_s3_filesystem(kwargs: dict):
    return retrying_s3_filesystem(**kwargs)


def object_store_from_env() -> ObjectStore:
    from doctune.config import load_settings

    return ObjectStore(load_settings())


os.environ.setdefault("AWS_EC2_METADATA_DISABLED", "true")
