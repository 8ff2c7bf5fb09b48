"""Usage accounting: what each tenant has consumed (trained tokens, worker CPU-
and GPU-seconds from finished jobs) and what it stores (bytes under its prefix)."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select

from doctune.services import Platform, Principal
from doctune.services.tenants import DEFAULT_PAGE_SIZE, RowPage, list_owned
from doctune.store.db import Job, Tenant
from doctune.store.objects import tenant_key

COUNTERS = ("trained_tokens", "worker_cpu_seconds", "worker_gpu_seconds")


def tenant_usage(p: Platform, caller: Principal, *, limit: int = DEFAULT_PAGE_SIZE,
                 cursor: str | None = None) -> RowPage[dict[str, Any]]:
    """One page of tenants' usage (an admin: every tenant, newest first; a tenant: its own): a page,
    so that an admin's call never reads every tenant's jobs and storage at once."""
    page = list_owned(p, caller, Tenant, limit=limit, cursor=cursor, owner=Tenant.id)
    ids = [t.id for t in page.items]
    with p.db.session() as s:
        jobs = list(s.execute(select(Job).where(Job.tenant_id.in_(ids))).scalars())
    out = []
    for tenant in ids:
        mine = [j for j in jobs if j.tenant_id == tenant]
        row: dict[str, Any] = {"tenant": tenant, "jobs": len(mine),
                               "jobs_by_status": {st: sum(j.status == st for j in mine) for st in sorted({j.status for j in mine})}}
        for c in COUNTERS:
            row[c] = sum(((j.metrics or {}).get("usage") or {}).get(c, 0) for j in mine)
        try:
            row["storage_bytes"] = p.objects.prefix_bytes(tenant_key(tenant) + "/")
        except Exception:
            row["storage_bytes"] = None  # object store unreachable: say so rather than guess
        out.append(row)
    return RowPage(out, page.next_cursor)
