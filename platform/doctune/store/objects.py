"""The object store: one S3 client for every S3 server (SeaweedFS, MinIO, AWS).

Keys always live under ``tenants/<tenant-id>/``; :func:`tenant_key` builds them
and refuses names that would climb out of that prefix. Ray Train writes
checkpoints through :meth:`ObjectStore.pyarrow_fs`, the same endpoint and keys.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Callable, Iterator

from doctune.config import Settings
from doctune.errors import DoctuneError

_SAFE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")

UPLOAD_RETRY_S = 60.0  # how long an upload keeps retrying while the S3 server is down (e.g. restarting)


def _transient(exc: BaseException) -> bool:
    """Worth retrying: the server is unreachable or answered 5xx (restarting, overloaded); not a
    refusal of the request itself (a 4xx, such as a key the server will never accept)."""
    from botocore.exceptions import ClientError

    if isinstance(exc, DoctuneError):
        return False
    if isinstance(exc, ClientError):
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 500
        return status >= 500
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


class ObjectStore:
    def __init__(self, settings: Settings) -> None:
        if not settings.s3_endpoint:
            raise DoctuneError(
                "no object store configured: run `doctune up`, or set DOCTUNE_S3_ENDPOINT, "
                "DOCTUNE_S3_ACCESS_KEY and DOCTUNE_S3_SECRET_KEY",
                "unavailable",
            )
        import boto3
        from botocore.config import Config

        self.settings = settings
        self.bucket = settings.bucket
        self.client = boto3.client(
            "s3",
            endpoint_url=settings.s3_endpoint,
            aws_access_key_id=settings.s3_access_key,
            aws_secret_access_key=settings.s3_secret_key,
            region_name=settings.s3_region,
            config=Config(s3={"addressing_style": "path"}, retries={"max_attempts": 5, "mode": "standard"}),
        )

    def ensure_bucket(self) -> None:
        from botocore.exceptions import ClientError

        try:
            self.client.head_bucket(Bucket=self.bucket)
        except ClientError:
            self.client.create_bucket(Bucket=self.bucket)

    def put_bytes(self, key: str, data: bytes) -> None:
        for attempt in retrying_upload(f"upload of {key}"):
            with attempt:
                self.client.put_object(Bucket=self.bucket, Key=key, Body=data)

    def get_bytes(self, key: str) -> bytes:
        from botocore.exceptions import ClientError

        try:
            return self.client.get_object(Bucket=self.bucket, Key=key)["Body"].read()
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in ("NoSuchKey", "404"):
                raise DoctuneError(f"object {key} not found", "not_found") from None
            raise

    def list_keys(self, prefix: str) -> Iterator[str]:
        pages = self.client.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=prefix)
        for page in pages:
            for obj in page.get("Contents", []):
                yield obj["Key"]

    def prefix_bytes(self, prefix: str) -> int:
        """Bytes stored under ``prefix`` (storage accounting and quotas)."""
        total = 0
        for page in self.client.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=prefix):
            total += sum(o["Size"] for o in page.get("Contents", []))
        return total

    def delete_prefix(self, prefix: str) -> int:
        keys = list(self.list_keys(prefix))
        for i in range(0, len(keys), 1000):
            self.client.delete_objects(
                Bucket=self.bucket, Delete={"Objects": [{"Key": k} for k in keys[i : i + 1000]]}
            )
        return len(keys)

    def upload_dir(self, local: str | Path, prefix: str) -> int:
        local = Path(local)
        n = 0
        for path in sorted(local.rglob("*")):
            if path.is_file():
                for attempt in retrying_upload(f"upload of {path.name}"):
                    with attempt:
                        self.client.upload_file(str(path), self.bucket, f"{prefix}/{path.relative_to(local).as_posix()}")
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
            self.client.download_file(self.bucket, key, str(dest))
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
        return self.client.generate_presigned_url(
            "get_object", Params={"Bucket": self.bucket, "Key": key}, ExpiresIn=expires_s
        )

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

        _RetryingS3FileSystem = RetryingS3FileSystem
    return _RetryingS3FileSystem(**kwargs)


_RetryingS3FileSystem = None


def _rebuild_s3_filesystem(kwargs: dict):
    return retrying_s3_filesystem(**kwargs)


def object_store_from_env() -> ObjectStore:
    from doctune.config import load_settings

    return ObjectStore(load_settings())


os.environ.setdefault("AWS_EC2_METADATA_DISABLED", "true")
