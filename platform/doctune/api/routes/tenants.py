"""``/v1/tenants``: create tenants, set their quotas, settings and dedicated Ray clusters (admin), list
and read them."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends

from doctune.api.deps import AdminCaller, CurrentCaller, CurrentPlatform, Paging, SpecBody
from doctune.api.schemas import Page, TenantCreated, TenantOut
from doctune.services import ray_clusters as clusters_svc
from doctune.services import tenants as tenants_svc
from doctune.spec import QuotaSpec, RayClusterSpec, TenantSettingsSpec, TenantSpec

router = APIRouter(prefix="/v1/tenants", tags=["tenants"])

# the admin check (AdminCaller) comes before the body in each signature: a non-admin gets 403, not field errors
TenantBody = Annotated[TenantSpec, Depends(SpecBody(TenantSpec, claims_tenant=False))]
QuotaBody = Annotated[QuotaSpec, Depends(SpecBody(QuotaSpec, claims_tenant=False))]
RayClusterBody = Annotated[RayClusterSpec, Depends(SpecBody(RayClusterSpec, claims_tenant=False))]
SettingsBody = Annotated[TenantSettingsSpec, Depends(SpecBody(TenantSettingsSpec, claims_tenant=False))]


@router.post("", status_code=201, response_model=TenantCreated)
def create_tenant(who: AdminCaller, spec: TenantBody, p: CurrentPlatform) -> TenantCreated:
    """A tenant and its first member key (shown once)."""
    tenant, key = tenants_svc.create_tenant(p, who, spec)
    return TenantCreated(tenant=TenantOut.model_validate(tenants_svc.tenant_view(tenant)), api_key=key)


@router.get("", response_model=Page[TenantOut])
def list_tenants(who: CurrentCaller, p: CurrentPlatform, page: Paging) -> Page[TenantOut]:
    """Every tenant (admin); a tenant's key sees only its own."""
    rows = tenants_svc.list_tenants(p, who, limit=page.limit, cursor=page.cursor)
    return Page[TenantOut].of(rows, TenantOut.model_validate)


@router.get("/{tenant_id}", response_model=TenantOut)
def get_tenant(tenant_id: str, who: CurrentCaller, p: CurrentPlatform) -> TenantOut:
    return TenantOut.model_validate(tenants_svc.describe_tenant(p, who, tenant_id))


@router.put("/{tenant_id}/quota", response_model=TenantOut)
def set_quota(tenant_id: str, who: AdminCaller, spec: QuotaBody, p: CurrentPlatform) -> TenantOut:
    """Change only the fields given; null means unlimited."""
    return TenantOut.model_validate(tenants_svc.set_quota(p, who, tenant_id, spec.model_dump(exclude_unset=True)))


@router.put("/{tenant_id}/settings", response_model=TenantOut)
def set_settings(tenant_id: str, who: AdminCaller, spec: SettingsBody, p: CurrentPlatform) -> TenantOut:
    """Change only the settings given: `redact_pii` replaces personal data in every dataset the tenant
    uploads from now on (datasets stored before stay as they are)."""
    return TenantOut.model_validate(tenants_svc.set_settings(p, who, tenant_id, spec.model_dump(exclude_unset=True)))



@router.put("/{tenant_id}/ray-cluster", response_model=TenantOut)
def set_ray_cluster(tenant_id: str, who: AdminCaller, spec: RayClusterBody, p: CurrentPlatform) -> TenantOut:
    """Register (or replace) the tenant's dedicated Ray cluster: its new jobs and sweeps run there; jobs
    already running stay where they are. The token is stored and never shown."""
    clusters_svc.set_ray_cluster(p, who, tenant_id, spec)
    return TenantOut.model_validate(tenants_svc.describe_tenant(p, who, tenant_id))


@router.delete("/{tenant_id}/ray-cluster", response_model=TenantOut)
def remove_ray_cluster(tenant_id: str, who: AdminCaller, p: CurrentPlatform) -> TenantOut:
    """The tenant's new work goes to the shared cluster again; running jobs finish where they are."""
    clusters_svc.remove_ray_cluster(p, who, tenant_id)
    return TenantOut.model_validate(tenants_svc.describe_tenant(p, who, tenant_id))
