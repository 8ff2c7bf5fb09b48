"""API keys in the metadata store: how a key is made, stored (hashed) and checked.

Keys look like ``dtk_<id>_<secret>``; only the id and a salted hash of the secret are
stored. :func:`verify_key` is the one check every door uses: the API (through
``doctune.services.tenants.authenticate``) and each Serve replica, which reads the
store directly and so needs no service layer.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass

from sqlalchemy import select

from doctune.errors import DoctuneError
from doctune.store.db import ApiKey, Database

__all__ = ["ROLES", "Principal", "issue_key", "verify_key"]

ROLES = ("admin", "member", "viewer")
_SCRYPT = {"n": 2**14, "r": 8, "p": 1, "dklen": 32}


@dataclass(frozen=True)
class Principal:
    """Who is calling: a tenant's member/viewer, or the platform admin (tenant None)."""

    key_id: str
    role: str
    tenant_id: str | None

    @property
    def is_admin(self) -> bool:
        return self.role == "admin" and self.tenant_id is None


def hash_secret(secret: str, salt: str) -> str:
    return hashlib.scrypt(secret.encode(), salt=bytes.fromhex(salt), **_SCRYPT).hex()


def issue_key(db: Database, tenant_id: str | None, role: str) -> str:
    """Store a new key's id and hash; returns the whole key (the only time it exists in clear)."""
    if role not in ROLES:
        raise DoctuneError(f"role must be one of {ROLES}; got {role!r}", "invalid_request", field="role")
    key_id = secrets.token_hex(6)
    secret = secrets.token_urlsafe(24)
    salt = secrets.token_hex(16)
    with db.session() as s:
        s.add(ApiKey(id=key_id, tenant_id=tenant_id, role=role, salt=salt, hash=hash_secret(secret, salt)))
    return f"dtk_{key_id}_{secret}"


def split_key(key: str | None) -> tuple[str, str]:
    """``(key id, secret)`` of an ``Authorization`` value or a bare key; 401 when malformed."""
    if not key:
        raise DoctuneError("missing API key; send 'Authorization: Bearer <key>'", "unauthenticated")
    parts = key.removeprefix("Bearer ").strip().split("_", 2)
    if len(parts) != 3 or parts[0] != "dtk":
        raise DoctuneError("malformed API key; keys look like dtk_<id>_<secret>", "unauthenticated")
    return parts[1], parts[2]


def verify_key(db: Database, key: str | None) -> Principal:
    """The principal behind a key; ``unauthenticated`` for a missing, malformed, wrong or revoked key."""
    key_id, secret = split_key(key)
    with db.session() as s:
        row = s.execute(select(ApiKey).where(ApiKey.id == key_id)).scalar_one_or_none()
    if row is None or row.revoked_at is not None or not hmac.compare_digest(row.hash, hash_secret(secret, row.salt)):
        raise DoctuneError("invalid or revoked API key", "unauthenticated")
    return Principal(key_id=row.id, role=row.role, tenant_id=row.tenant_id)
