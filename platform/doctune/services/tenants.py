"""Tenants and API keys: who may call, and which tenant's objects they see.

Keys look like ``dtk_<id>_<secret>``; only the id and an HMAC of the secret are
stored (``doctune.store.keys``). Used by the API (every route) and the CLI's bootstrap;
Serve replicas check keys against the store themselves. :func:`list_owned` is the one
list of every resource (datasets, jobs, sweeps, models, deployments, keys, tenants): a
page of the caller's rows, newest first, with an opaque cursor to the next page.
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Callable, Generic, Iterable, TypeVar

from sqlalchemy import and_, func, or_, select
from sqlalchemy.exc import IntegrityError

from doctune.errors import DoctuneError
from doctune.services import Platform, Principal
from doctune.spec import TenantSpec
from doctune.store.db import ApiKey, Tenant, now
from doctune.store.keys import ROLES, bump_revocation_epoch, issue_key

Row = TypeVar("Row")
DEFAULT_PAGE_SIZE = 50
MAX_PAGE_SIZE = 200


@dataclass(frozen=True)
class RowPage(Generic[Row]):
    """One page of a list, newest first; ``next_cursor`` fetches the next one (None: this is the last)."""

    items: list[Row]
    next_cursor: str | None


def encode_cursor(created_at: datetime, row_id: str) -> str:
    """The opaque cursor after a row: base64url of its ``created_at`` and id."""
    return base64.urlsafe_b64encode(f"{created_at.isoformat()}|{row_id}".encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[datetime, str]:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        created_at, row_id = raw.split("|", 1)
        return datetime.fromisoformat(created_at), row_id
    except (ValueError, UnicodeDecodeError, binascii.Error):
        raise DoctuneError("cursor is not one this API handed out; pass a page's next_cursor unchanged, or leave "
                           "it out for the first page", "invalid_request", field="cursor") from None


def list_owned(p: Platform, caller: Principal, table, *, limit: int = DEFAULT_PAGE_SIZE, cursor: str | None = None,
               owner: Any = None, where: Iterable[Any] = (), **equal: Any) -> RowPage:
    """One page of the caller's rows of ``table``, newest first (``created_at``, then id, descending);
    an admin sees every tenant's. ``owner``: the column naming the tenant (default ``table.tenant_id``);
    ``equal``: column=value filters (a None value filters nothing); ``where``: further conditions."""
    if not 1 <= limit <= MAX_PAGE_SIZE:
        raise DoctuneError(f"limit must be 1..{MAX_PAGE_SIZE}; got {limit}", "invalid_request", field="limit")
    owner = table.tenant_id if owner is None else owner
    q = select(table).order_by(table.created_at.desc(), table.id.desc()).limit(limit + 1)
    if not caller.is_admin:
        q = q.where(owner == caller.tenant_id)
    q = q.where(*where, *(getattr(table, column) == value for column, value in equal.items() if value is not None))
    if cursor:
        created_at, row_id = decode_cursor(cursor)
        q = q.where(or_(table.created_at < created_at, and_(table.created_at == created_at, table.id < row_id)))
    with p.db.session() as s:
        rows = list(s.execute(q).scalars())
    if len(rows) <= limit:
        return RowPage(rows, None)
    last = rows[limit - 1]
    return RowPage(rows[:limit], encode_cursor(last.created_at, last.id))


def _issue_key(p: Platform, tenant_id: str | None, role: str) -> str:
    return issue_key(p.db, tenant_id, role, p.settings.key_secret)


def create_admin_key(p: Platform) -> str:
    """A platform-admin key (tenant None); `doctune up` makes the first one."""
    return _issue_key(p, None, "admin")


def _key_view(row: ApiKey) -> dict:
    return {"id": row.id, "tenant": row.tenant_id, "role": row.role,
            "created_at": row.created_at.isoformat() if row.created_at else None,
            "revoked_at": row.revoked_at.isoformat() if row.revoked_at else None}


def create_key(p: Platform, caller: Principal, tenant_id: str, role: str) -> tuple[dict, str]:
    """A new key for ``tenant_id``; members may issue member and viewer keys for their own tenant."""
    check_tenant_access(caller, tenant_id, write=True)
    if role == "admin":
        raise DoctuneError("tenant keys are 'member' or 'viewer'; admin keys belong to the platform", "invalid_request", field="role")
    tenant = get_tenant(p, tenant_id)
    if tenant is None:
        raise DoctuneError(f"tenant {tenant_id!r} not found", "not_found", field="tenant")
    _check_keys_quota(p, tenant)
    key = _issue_key(p, tenant_id, role)
    with p.db.session() as s:
        return _key_view(s.get(ApiKey, key.split("_")[1])), key


def _check_keys_quota(p: Platform, tenant: Tenant) -> None:
    """429 when the tenant already holds ``max_keys`` unrevoked keys."""
    if tenant.max_keys is None:
        return
    with p.db.session() as s:
        live = s.execute(select(func.count()).select_from(ApiKey)
                         .where(ApiKey.tenant_id == tenant.id, ApiKey.revoked_at.is_(None))).scalar()
    if live >= tenant.max_keys:
        raise DoctuneError(f"tenant {tenant.id} has {live} live keys, its quota (max_keys) is {tenant.max_keys}; revoke "
                           "keys it no longer uses (`doctune keys revoke ID`) or ask an admin to raise max_keys",
                           "quota_exceeded", field="max_keys")


def list_keys(p: Platform, caller: Principal, *, limit: int = DEFAULT_PAGE_SIZE, cursor: str | None = None) -> RowPage[dict]:
    """Keys by id (their public prefix) only, newest first; secrets are never stored, so never shown.
    An admin sees every key (admin keys too); a tenant's key sees its tenant's keys."""
    page = list_owned(p, caller, ApiKey, limit=limit, cursor=cursor)
    return RowPage([_key_view(r) for r in page.items], page.next_cursor)


def get_key(p: Platform, caller: Principal, key_id: str) -> dict:
    """One key's id, tenant, role and dates; another tenant's key (or, for a tenant, an admin key) is 404."""
    with p.db.session() as s:
        row = s.get(ApiKey, key_id)
    if row is None or not (caller.is_admin or (row.tenant_id is not None and row.tenant_id == caller.tenant_id)):
        raise DoctuneError(f"key {key_id!r} not found", "not_found", field="key_id")
    return _key_view(row)


def revoke_key(p: Platform, caller: Principal, key_id: str) -> dict:
    with p.db.session() as s:
        row = s.get(ApiKey, key_id)
        if row is None or not (caller.is_admin or row.tenant_id == caller.tenant_id):
            raise DoctuneError(f"key {key_id!r} not found", "not_found", field="key_id")
        if row.tenant_id is not None:
            check_tenant_access(caller, row.tenant_id, write=True)
        elif not caller.is_admin:
            raise DoctuneError("only an admin can revoke admin keys", "forbidden")
        if row.revoked_at is None:
            row.revoked_at = now()
            bump_revocation_epoch(s)  # every process drops its cached keys within 2 s
        view = _key_view(row)
    p.key_verifier.forget()  # this one at once
    return view


def rotate_key(p: Platform, caller: Principal, key_id: str) -> tuple[dict, str]:
    """Revoke ``key_id`` and issue a key with the same tenant and role (shown once)."""
    old = revoke_key(p, caller, key_id)
    key = _issue_key(p, old["tenant"], old["role"])
    with p.db.session() as s:
        return _key_view(s.get(ApiKey, key.split("_")[1])), key


def create_tenant(p: Platform, caller: Principal, spec: TenantSpec) -> tuple[Tenant, str]:
    """Create a tenant and its first member key (returned once, never stored in clear)."""
    if not caller.is_admin:
        raise DoctuneError("only a platform admin can create tenants", "forbidden")
    with p.db.session() as s:
        if s.get(Tenant, spec.name):
            raise DoctuneError(f"tenant {spec.name!r} already exists; pick another name", "conflict", field="name")
        tenant = Tenant(id=spec.name, display_name=spec.display_name)
        s.add(tenant)
    return tenant, _issue_key(p, spec.name, "member")


def get_tenant(p: Platform, tenant_id: str) -> Tenant | None:
    with p.db.session() as s:
        return s.get(Tenant, tenant_id)


def authenticate(p: Platform, key: str | None) -> Principal:
    """The principal behind an API key; raises ``unauthenticated`` for a missing or bad key. A key
    revoked by any process stops working here within 2 s (``doctune.store.keys.KeyVerifier``)."""
    return p.key_verifier.verify(key)


def check_tenant_access(caller: Principal, tenant_id: str, *, write: bool = False) -> None:
    """Raise unless ``caller`` may act on ``tenant_id``'s objects.

    A caller naming another tenant in a spec gets 403; routes that look an id
    up use :func:`visible` instead, so another tenant's ids read as 404.
    """
    if caller.is_admin:
        return
    if caller.tenant_id != tenant_id:
        raise DoctuneError(
            f"your key belongs to tenant {caller.tenant_id!r}, not {tenant_id!r}", "forbidden", field="tenant"
        )
    if write and caller.role == "viewer":
        raise DoctuneError("viewer keys are read-only; ask a member of your tenant", "forbidden")


def visible(caller: Principal, tenant_id: str) -> bool:
    return caller.is_admin or caller.tenant_id == tenant_id


def get_owned(p: Platform, caller: Principal, table, object_id: str, what: str, field: str):
    """The row ``object_id`` of ``table`` if the caller may see it; otherwise 404 —
    another tenant's ids look exactly like ids that do not exist."""
    with p.db.session() as s:
        row = s.get(table, object_id)
    if row is None or not visible(caller, row.tenant_id):
        raise DoctuneError(f"{what} {object_id!r} not found", "not_found", field=field)
    return row


def delete_with_files(p: Platform, table, row_id: str, uri: str, what: str) -> None:
    """Delete the row ``row_id`` of ``table`` and the objects under its ``uri`` together: the row goes
    first, inside a transaction that commits only once the files are gone. A row something still
    refers to (a foreign key) is a 409 with no file touched; a store that fails rolls the row back."""
    try:
        with p.db.session() as s:
            row = s.get(table, row_id)
            if row is not None:
                s.delete(row)
                s.flush()
            p.objects.delete_prefix(p.objects.key_of(uri).rstrip("/") + "/")
    except IntegrityError:
        raise DoctuneError(f"{what} {row_id} came into use while it was being deleted; nothing was deleted",
                           "conflict", field=f"{what}_id", tenant_error=True) from None


QUOTA_FIELDS = ("weight", "max_concurrent_jobs", "max_cpus", "max_gpus", "max_storage_bytes", "max_deployments",
                "max_trials", "max_queued_jobs", "max_keys")
SETTINGS_FIELDS = ("redact_pii",)


def tenant_view(t: Tenant) -> dict:
    return {"id": t.id, "display_name": t.display_name, "quota": {f: getattr(t, f) for f in QUOTA_FIELDS},
            "settings": {f: bool(getattr(t, f)) for f in SETTINGS_FIELDS},
            "created_at": t.created_at.isoformat() if t.created_at else None}


def list_tenants(p: Platform, caller: Principal, *, limit: int = DEFAULT_PAGE_SIZE,
                 cursor: str | None = None) -> RowPage[dict]:
    """Every tenant for an admin; a tenant's key sees only its own tenant."""
    page = list_owned(p, caller, Tenant, limit=limit, cursor=cursor, owner=Tenant.id)
    return RowPage([tenant_view(t) for t in page.items], page.next_cursor)


def set_quota(p: Platform, caller: Principal, tenant_id: str, changes: dict) -> dict:
    """Admin only. ``changes`` holds only the fields to change (None = unlimited)."""
    def refusal(field: str, value: Any) -> str | None:
        return "weight cannot be unlimited; give a number > 0" if field == "weight" and value is None else None

    return _update_tenant(p, caller, tenant_id, changes, "only a platform admin can set quotas", refusal)


def set_settings(p: Platform, caller: Principal, tenant_id: str, changes: dict) -> dict:
    """Admin only: a tenant's settings (``redact_pii``); ``changes`` holds only the fields to change."""
    def refusal(field: str, value: Any) -> str | None:
        return f"{field} is true or false; leave it out to keep its value" if value is None else None

    return _update_tenant(p, caller, tenant_id, changes, "only a platform admin can change a tenant's settings",
                          refusal)


def _update_tenant(p: Platform, caller: Principal, tenant_id: str, changes: dict, forbidden: str,
                   refusal: Callable[[str, Any], str | None]) -> dict:
    """Admin only (else ``forbidden``): set ``changes`` on the tenant; ``refusal`` says why a value cannot be set."""
    if not caller.is_admin:
        raise DoctuneError(forbidden, "forbidden")
    with p.db.session() as s:
        t = s.get(Tenant, tenant_id)
        if t is None:
            raise DoctuneError(f"tenant {tenant_id!r} not found", "not_found", field="tenant")
        for k, v in changes.items():
            if (why := refusal(k, v)) is not None:
                raise DoctuneError(why, "invalid_spec", field=k)
            setattr(t, k, v)
        return tenant_view(t)


def describe_tenant(p: Platform, caller: Principal, tenant_id: str) -> dict:
    """The tenant with its quota and its dedicated Ray cluster's address (never its token)."""
    from doctune.services.ray_clusters import cluster_view

    t = get_tenant(p, tenant_id)
    if t is None or not visible(caller, tenant_id):
        raise DoctuneError(f"tenant {tenant_id!r} not found", "not_found", field="tenant")
    return {**tenant_view(t), "ray_cluster": cluster_view(p, tenant_id)}


def storage_refusal(p: Platform, tenant: str, adding: int, what: str) -> DoctuneError | None:
    """Why storing ``adding`` more bytes (``what``: "an upload of N bytes", ...) would pass the
    tenant's storage quota, or None. Counts every byte under the tenant's prefix: datasets,
    checkpoints, exported models, sweep results. Call it under :func:`take_quota_lock`."""
    from doctune.store.objects import tenant_key

    limit = get_tenant(p, tenant).max_storage_bytes
    if limit is None:
        return None
    used = p.objects.prefix_bytes(tenant_key(tenant) + "/")
    if used + adding <= limit:
        return None
    return DoctuneError(
        f"tenant {tenant} stores {used} bytes (datasets, checkpoints and models); {what} would pass its storage "
        f"quota of {limit} bytes. Delete old datasets (DELETE /v1/datasets/ID), models (DELETE /v1/models/ID) or "
        "checkpoints (DELETE /v1/jobs/ID/checkpoints), or ask an admin to raise max_storage_bytes",
        "quota_exceeded", field="max_storage_bytes", tenant_error=True)
