"""Tenant-scoped object-store keys: an S3 identity per tenant that may read, write, list and delete
only under ``tenants/<tenant>/`` of the platform's bucket (its datasets, base models, checkpoints
and models all live there). The platform gives such a key, never its root key, to the jobs it
submits to a tenant's dedicated Ray cluster, whose Ray token the tenant holds
(:class:`doctune.runners.RayJobsRunner`).

One small interface, :class:`TenantKeys`, and one implementation per server:

- :class:`WeedTenantKeys`, the embedded SeaweedFS (``doctune up``): ``weed shell`` ``s3.configure``
  on the stack's master (``DOCTUNE_WEED_MASTER``) adds the identity with actions
  ``Read|Write|List|Tagging:<bucket>/tenants/<tenant>/*``; the S3 server takes it without a restart.
- :class:`MinioTenantKeys`, MinIO (the Helm chart): a MinIO user with a policy on that prefix,
  through the admin API (``minio.MinioAdmin``) with the platform's root keys.

A key is derived from the root secret and the tenant id (HMAC-SHA256), so issuing it again gives the
same key and nothing has to be stored; rotating the root secret rotates every tenant key.
"""

from __future__ import annotations

import hashlib
import hmac
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from doctune.config import Settings
from doctune.errors import DoctuneError

__all__ = ["MinioTenantKeys", "ScopedKey", "TenantKeys", "WeedTenantKeys", "scoped_key", "tenant_keys"]


@dataclass(frozen=True)
class ScopedKey:
    access_key: str
    secret_key: str

    def __repr__(self) -> str:  # never print the secret
        return f"ScopedKey(access_key={self.access_key!r})"


class TenantKeys(Protocol):
    def issue(self, tenant: str) -> ScopedKey:
        """The tenant's key (made on the server if it is not there yet): the tenant's prefix only."""
        ...


def scoped_key(settings: Settings, tenant: str) -> ScopedKey:
    """The tenant's key pair, derived from the root secret (the same every time)."""
    if not settings.s3_secret_key:
        raise DoctuneError("no object-store root key to derive tenant keys from (DOCTUNE_S3_SECRET_KEY)",
                           "unavailable")
    digest = hmac.new(settings.s3_secret_key.encode(), f"doctune-tenant-s3:{tenant}".encode(), hashlib.sha256)
    secret = digest.hexdigest()
    # 3..20 characters (MinIO's limit), letters and digits only
    access = "dtt" + hashlib.sha256(f"{settings.bucket}/{tenant}".encode()).hexdigest()[:17]
    return ScopedKey(access, secret[:40])


def tenant_prefix(settings: Settings, tenant: str) -> str:
    return f"{settings.bucket}/tenants/{tenant}/"


class WeedTenantKeys:
    """SeaweedFS: the identity is added with ``weed shell`` (``s3.configure -apply``) on the master."""

    def __init__(self, settings: Settings) -> None:
        if not settings.weed_master:
            raise DoctuneError("no SeaweedFS master to add tenant keys on (DOCTUNE_WEED_MASTER, host:port)",
                               "unavailable")
        self.settings = settings

    def issue(self, tenant: str) -> ScopedKey:
        key = scoped_key(self.settings, tenant)
        where = tenant_prefix(self.settings, tenant) + "*"
        actions = ",".join(f"{a}:{where}" for a in ("Read", "Write", "List", "Tagging"))
        command = (f"s3.configure -user doctune-tenant-{tenant} -access_key {key.access_key} "
                   f"-secret_key {key.secret_key} -actions {actions} -apply\n")
        weed = shutil.which("weed") or str(Path(sys.executable).parent / "weed")
        out = subprocess.run([weed, "shell", f"-master={self.settings.weed_master}"], input=command,
                             capture_output=True, text=True, timeout=120)
        if out.returncode != 0 or key.access_key not in out.stdout:
            raise DoctuneError(f"SeaweedFS did not add the S3 identity of tenant {tenant}: "
                               f"{(out.stderr or out.stdout)[-500:]}", "unavailable")
        return key


class MinioTenantKeys:
    """MinIO: a user with a policy on the tenant's prefix, through the admin API and the root keys."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings

    def issue(self, tenant: str) -> ScopedKey:
        from urllib.parse import urlsplit

        from minio.credentials import StaticProvider
        from minio.minioadmin import MinioAdmin

        s, key = self.settings, scoped_key(self.settings, tenant)
        url = urlsplit(s.s3_endpoint)
        admin = MinioAdmin(endpoint=url.netloc, credentials=StaticProvider(s.s3_access_key, s.s3_secret_key),
                           region=s.s3_region or "", secure=url.scheme == "https")
        prefix = f"tenants/{tenant}/"
        policy = {"Version": "2012-10-17", "Statement": [
            {"Effect": "Allow", "Action": ["s3:GetBucketLocation"], "Resource": [f"arn:aws:s3:::{s.bucket}"]},
            {"Effect": "Allow", "Action": ["s3:ListBucket", "s3:ListBucketMultipartUploads"],
             "Resource": [f"arn:aws:s3:::{s.bucket}"], "Condition": {"StringLike": {"s3:prefix": [f"{prefix}*"]}}},
            {"Effect": "Allow", "Action": ["s3:GetObject", "s3:PutObject", "s3:DeleteObject",
                                           "s3:AbortMultipartUpload", "s3:ListMultipartUploadParts"],
             "Resource": [f"arn:aws:s3:::{s.bucket}/{prefix}*"]},
        ]}
        name = f"doctune-tenant-{tenant}"
        try:
            admin.user_add(key.access_key, key.secret_key)
            admin.policy_add(name, policy=policy)
            admin.policy_set(name, user=key.access_key)
        except Exception as exc:
            raise DoctuneError(f"MinIO did not add the S3 user of tenant {tenant}: {exc}", "unavailable") from None
        return key


def tenant_keys(settings: Settings) -> TenantKeys:
    """The embedded SeaweedFS where its master is known (``doctune up`` records it), else MinIO."""
    return WeedTenantKeys(settings) if settings.weed_master else MinioTenantKeys(settings)
