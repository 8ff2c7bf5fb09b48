"""API keys in the metadata store: how a key is made, stored (hashed) and checked.

Keys look like ``dtk_<id>_<secret>``, the secret 192 random bits. Only the id and
HMAC-SHA256(server secret, id:secret) are stored: a secret that random needs no slow hash, and a
wrong key costs a database read and a few microseconds, not tens of milliseconds of CPU. The
server secret is ``DOCTUNE_KEY_SECRET`` (`doctune up` makes one), else one the database keeps
(made by its migration), so that every process of a cluster agrees. Keys stored before HMAC
(``hash_scheme`` "scrypt") keep verifying and are re-hashed with HMAC the first time they do.

:class:`KeyVerifier` is the one check every door uses: the API (through
``doctune.services.tenants.authenticate``) and each Serve replica (``doctune.serve.auth``), which
reads the store directly and so needs no service layer. It caches the keys it verified until a
revocation anywhere bumps the revocation epoch (:func:`bump_revocation_epoch`), which it re-reads
at most every ``EPOCH_CHECK_S`` seconds: a revoked key stops working everywhere within 2 s.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import threading
import time
from dataclasses import dataclass

from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from doctune.errors import DoctuneError
from doctune.store.db import ApiKey, Database, KeyRevocations, PlatformSecret

__all__ = ["EPOCH_CHECK_S", "ROLES", "KeyVerifier", "Principal", "bump_revocation_epoch", "issue_key", "split_key"]

ROLES = ("admin", "member", "viewer")
HMAC, SCRYPT = "hmac-sha256", "scrypt"
_SCRYPT = {"n": 2**14, "r": 8, "p": 1, "dklen": 32}
EPOCH_CHECK_S = 1.0  # a revocation reaches every process within this (plus one request)
CACHE_MAX = 10_000  # verified keys a process keeps; only valid keys are cached, so only they fill it
SECRET_NAME = "api_key_hmac"


@dataclass(frozen=True)
class Principal:
    """Who is calling: a tenant's member/viewer, or the platform admin (tenant None)."""

    key_id: str
    role: str
    tenant_id: str | None

    @property
    def is_admin(self) -> bool:
        return self.role == "admin" and self.tenant_id is None


def scrypt_hash(secret: str, salt: str) -> str:
    """The hash of keys issued before HMAC (kept only to verify those)."""
    return hashlib.scrypt(secret.encode(), salt=bytes.fromhex(salt), **_SCRYPT).hex()


def hmac_hash(server_secret: bytes, key_id: str, secret: str) -> str:
    return hmac.new(server_secret, f"{key_id}:{secret}".encode(), hashlib.sha256).hexdigest()


def server_secret(db: Database, configured: str = "") -> bytes:
    """The HMAC key: ``configured`` (DOCTUNE_KEY_SECRET) if set, else the database's own."""
    if configured:
        return configured.encode()
    with db.session() as s:
        row = s.get(PlatformSecret, SECRET_NAME)
        if row is not None:
            return row.value.encode()
    try:  # a database made without the migrations' row (create_all): make it once
        with db.session() as s:
            s.add(PlatformSecret(name=SECRET_NAME, value=secrets.token_hex(32)))
    except IntegrityError:
        pass  # another process made it first
    with db.session() as s:
        return s.get(PlatformSecret, SECRET_NAME).value.encode()


def issue_key(db: Database, tenant_id: str | None, role: str, key_secret: str = "") -> str:
    """Store a new key's id and HMAC; returns the whole key (the only time it exists in clear).
    ``key_secret``: the configured server secret (``Settings.key_secret``)."""
    if role not in ROLES:
        raise DoctuneError(f"role must be one of {ROLES}; got {role!r}", "invalid_request", field="role")
    key_id = secrets.token_hex(6)
    secret = secrets.token_urlsafe(24)  # 192 bits
    digest = hmac_hash(server_secret(db, key_secret), key_id, secret)
    with db.session() as s:
        s.add(ApiKey(id=key_id, tenant_id=tenant_id, role=role, salt="", hash=digest, hash_scheme=HMAC))
    return f"dtk_{key_id}_{secret}"


def split_key(key: str | None) -> tuple[str, str]:
    """``(key id, secret)`` of an ``Authorization`` value or a bare key; 401 when malformed."""
    if not key:
        raise DoctuneError("missing API key; send 'Authorization: Bearer <key>'", "unauthenticated")
    parts = key.removeprefix("Bearer ").strip().split("_", 2)
    if len(parts) != 3 or parts[0] != "dtk" or not parts[1] or len(parts[1]) > 32:
        raise DoctuneError("malformed API key; keys look like dtk_<id>_<secret>", "unauthenticated")
    return parts[1], parts[2]


def bump_revocation_epoch(s: Session) -> None:
    """Call in the transaction that revokes a key: every process drops its cached keys within 2 s."""
    bumped = s.execute(update(KeyRevocations).where(KeyRevocations.id == 1)
                       .values(epoch=KeyRevocations.epoch + 1)).rowcount
    if not bumped:
        s.add(KeyRevocations(id=1, epoch=1))


def read_revocation_epoch(db: Database) -> int:
    with db.session() as s:
        return s.execute(select(KeyRevocations.epoch).where(KeyRevocations.id == 1)).scalar() or 0


class KeyVerifier:
    """Checks keys against the store, keeping the keys it verified until a revocation anywhere."""

    def __init__(self, db: Database, key_secret: str = "") -> None:
        self.db, self.key_secret = db, key_secret
        self._secret: bytes | None = None
        self._cache: dict[str, Principal] = {}
        self._epoch: int | None = None
        self._epoch_read_at = float("-inf")
        self._lock = threading.Lock()

    @property
    def secret(self) -> bytes:
        if self._secret is None:
            self._secret = server_secret(self.db, self.key_secret)
        return self._secret

    def _fresh(self) -> bool:
        return time.monotonic() - self._epoch_read_at < EPOCH_CHECK_S

    def _refresh_epoch(self) -> None:
        """Re-read the revocation epoch if it is older than EPOCH_CHECK_S; a change empties the cache."""
        with self._lock:
            if self._fresh():
                return
            epoch = read_revocation_epoch(self.db)
            if epoch != self._epoch:
                self._cache.clear()
                self._epoch = epoch
            self._epoch_read_at = time.monotonic()

    def cached(self, key: str | None) -> Principal | None:
        """The principal of a key verified since the last revocation, without touching the store;
        None when the key is not cached or the epoch is due to be re-read (then call :meth:`verify`)."""
        return self._cache.get(key or "") if self._fresh() else None

    def forget(self) -> None:
        """Drop every cached key now (this process just revoked one)."""
        with self._lock:
            self._cache.clear()
            self._epoch_read_at = float("-inf")

    def verify(self, key: str | None) -> Principal:
        """The principal behind a key; ``unauthenticated`` for a missing, malformed, wrong or revoked key."""
        self._refresh_epoch()
        hit = self._cache.get(key or "")
        if hit is not None:
            return hit
        who = self._check_in_store(key)
        if len(self._cache) >= CACHE_MAX:
            self._cache.clear()
        self._cache[key or ""] = who
        return who

    def _check_in_store(self, key: str | None) -> Principal:
        key_id, secret = split_key(key)
        with self.db.session() as s:
            row = s.get(ApiKey, key_id)
            if row is None or row.revoked_at is not None or not self._matches(row, secret):
                raise DoctuneError("invalid or revoked API key", "unauthenticated")
            if row.hash_scheme != HMAC:  # a key from before HMAC: re-hash it, so it costs scrypt only once
                row.salt, row.hash, row.hash_scheme = "", hmac_hash(self.secret, key_id, secret), HMAC
            return Principal(key_id=row.id, role=row.role, tenant_id=row.tenant_id)

    def _matches(self, row: ApiKey, secret: str) -> bool:
        if row.hash_scheme == HMAC:
            return hmac.compare_digest(row.hash, hmac_hash(self.secret, row.id, secret))
        return hmac.compare_digest(row.hash, scrypt_hash(secret, row.salt))
