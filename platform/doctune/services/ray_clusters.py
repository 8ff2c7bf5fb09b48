"""A tenant's dedicated Ray cluster: registered by an admin (``PUT /v1/tenants/ID/ray-cluster``,
or the operator for a Tenant with ``spec.rayCluster``), replaced, removed.

Once registered, the tenant's new jobs and sweeps are submitted to that cluster
(:meth:`doctune.services.Platform.runner_for`); each records the cluster it went to, so status,
logs, cancel and pause keep reaching it after the cluster is replaced or removed (a replaced
cluster's row is retired, never deleted). Deployments stay on the shared cluster's Serve. The
token is never part of an answer.
"""

from __future__ import annotations

from sqlalchemy import select

from doctune.errors import DoctuneError
from doctune.services import Platform, Principal
from doctune.spec import RayClusterSpec
from doctune.store.db import RayCluster, Tenant, new_id, now

__all__ = ["cluster_view", "remove_ray_cluster", "set_ray_cluster"]


def _admin_and_tenant(p: Platform, caller: Principal, tenant_id: str, what: str) -> None:
    if not caller.is_admin:
        raise DoctuneError(f"only a platform admin can {what} a tenant's Ray cluster", "forbidden")
    with p.db.session() as s:
        if s.get(Tenant, tenant_id) is None:
            raise DoctuneError(f"tenant {tenant_id!r} not found", "not_found", field="tenant")


def _active(s, tenant_id: str) -> RayCluster | None:
    return s.execute(select(RayCluster).where(RayCluster.tenant_id == tenant_id,
                                              RayCluster.retired_at.is_(None))).scalars().first()


def cluster_view(p: Platform, tenant_id: str) -> dict | None:
    """The tenant's dedicated cluster as answers show it (its address; never its token), or None."""
    with p.db.session() as s:
        row = _active(s, tenant_id)
        return None if row is None else {"address": row.address, "registered_at": row.created_at}


def set_ray_cluster(p: Platform, caller: Principal, tenant_id: str, spec: RayClusterSpec) -> dict | None:
    """Admin only. Register the tenant's cluster, or replace the one it has: the old one is retired
    (its running jobs stay there) and new work goes to the new one. The same address and token
    again changes nothing."""
    _admin_and_tenant(p, caller, tenant_id, "register")
    with p.db.session() as s:
        old = _active(s, tenant_id)
        if old is not None and (old.address, old.token) == (spec.address, spec.token):
            return cluster_view(p, tenant_id)
        if old is not None:
            old.retired_at = now()
        s.add(RayCluster(id=new_id("rc"), tenant_id=tenant_id, address=spec.address, token=spec.token))
    return cluster_view(p, tenant_id)


def remove_ray_cluster(p: Platform, caller: Principal, tenant_id: str) -> None:
    """Admin only. The tenant's new work goes to the shared cluster again; jobs and sweeps still
    running on the removed one keep reaching it until they end. 404 when it has none."""
    _admin_and_tenant(p, caller, tenant_id, "remove")
    with p.db.session() as s:
        row = _active(s, tenant_id)
        if row is None:
            raise DoctuneError(f"tenant {tenant_id!r} has no Ray cluster of its own", "not_found", field="ray_cluster")
        row.retired_at = now()
