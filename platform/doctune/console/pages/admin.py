"""Admin (platform admin only): tenants with their weights and quotas (edited through
``PUT /v1/tenants/{id}/quota``, the form generated from :class:`doctune.spec.QuotaSpec`), API keys
(list, create, revoke), the job queue in fair-share order (``GET /v1/queue``) and the cluster's
resources (``GET /v1/cluster``)."""

from __future__ import annotations

from typing import Any

import gradio as gr
import pandas as pd

from doctune.console.context import Console, action
from doctune.errors import DoctuneError
from doctune.spec import QuotaSpec

QUOTA_FIELDS = list(QuotaSpec.model_fields)  # weight first, then each max_*
TENANT_COLUMNS = ["tenant", "display_name", *QUOTA_FIELDS]
KEY_COLUMNS = ["id", "tenant", "role", "created_at", "revoked_at"]
QUEUE_COLUMNS = ["position", "job_id", "tenant", "task", "priority", "cpus", "gpus", "weight", "tenant_share", "reason"]


def tenants_table(tenants: list[dict[str, Any]]) -> pd.DataFrame:
    rows = [{"tenant": t["id"], "display_name": t.get("display_name") or "",
             **{f: ("unlimited" if t["quota"].get(f) is None else t["quota"][f]) for f in QUOTA_FIELDS}} for t in tenants]
    return pd.DataFrame(rows, columns=TENANT_COLUMNS)


def keys_table(keys: list[dict[str, Any]]) -> pd.DataFrame:
    return pd.DataFrame([{c: k.get(c) or ("platform" if c == "tenant" else "") for c in KEY_COLUMNS} for k in keys],
                        columns=KEY_COLUMNS)


def queue_table(queue: list[dict[str, Any]]) -> pd.DataFrame:
    return pd.DataFrame([{c: q.get(c) for c in QUEUE_COLUMNS} for q in queue], columns=QUEUE_COLUMNS)


def cluster_markdown(client: Any) -> str:
    """The cluster's CPUs and GPUs as a small table, or why the cluster did not answer."""
    try:
        r = client.cluster_resources()
    except DoctuneError as e:
        return f"Cluster: {e.message}"
    gib = r["memory_bytes"] / 2**30
    return ("| resource | total | used | free |\n|---|---|---|---|\n"
            f"| CPU | {r['cpus']:g} | {r['cpus_used']:g} | {r['cpus_free']:g} |\n"
            f"| GPU | {r['gpus']:g} | {r['gpus_used']:g} | {r['gpus_free']:g} |\n"
            f"| memory (GiB) | {gib:.1f} | | |")


def quota_changes(values: list[Any], unlimited: list[str]) -> dict[str, Any]:
    """The PUT body: each field given a number, and None for each field made unlimited; the rest unchanged."""
    body = {f: v for f, v in zip(QUOTA_FIELDS, values) if v is not None}
    body.update({f: None for f in unlimited or []})
    if not body:
        raise DoctuneError("Nothing to change: enter a value in a field, or tick it under 'Make unlimited'.",
                           "invalid_request", field="quota")
    return body


def _quota_inputs(console: Console) -> list[Any]:
    """One number input per QuotaSpec field, labelled with its name and described by its description."""
    inputs = []
    with gr.Row():
        for name, field in QuotaSpec.model_fields.items():
            inputs.append(console.add(f"admin.quota.{name}", gr.Number(label=name, info=field.description, value=None,
                                                                         min_width=160)))
    return inputs


def build(console: Console) -> None:
    refresh = console.add("admin.refresh", gr.Button("Refresh", elem_id="admin-refresh"))
    console.add("admin.tenants_heading", gr.Markdown("### Tenants, weights and quotas"))
    tenants = console.add("admin.tenants", gr.Dataframe(headers=TENANT_COLUMNS, interactive=False, label="Tenants",
                                                       elem_id="admin-tenants"))
    with gr.Accordion("Edit a tenant's weight and quotas", open=False):
        tenant = console.add("admin.quota_tenant", gr.Dropdown(label="Tenant", choices=[], allow_custom_value=True))
        quota = _quota_inputs(console)
        unlimited = console.add("admin.unlimited", gr.CheckboxGroup(QUOTA_FIELDS[1:], label="Make unlimited"))
        save = console.add("admin.save_quota", gr.Button("Save quota", variant="primary", elem_id="admin-save-quota"))
    console.add("admin.keys_heading", gr.Markdown("### API keys"))
    keys = console.add("admin.keys", gr.Dataframe(headers=KEY_COLUMNS, interactive=False, label="Keys", elem_id="admin-keys"))
    with gr.Row():
        key_tenant = console.add("admin.key_tenant", gr.Dropdown(label="Tenant", choices=[], allow_custom_value=True))
        role = console.add("admin.key_role", gr.Radio(["member", "viewer"], value="member", label="Role"))
        create = console.add("admin.create_key", gr.Button("Create key", variant="primary"))
    new_key = console.add("admin.new_key", gr.Textbox(label="New key (shown once: copy it now)", interactive=False,
                                                     elem_id="admin-new-key"))
    with gr.Row():
        key_id = console.add("admin.key_id", gr.Dropdown(label="Key", choices=[], allow_custom_value=True))
        revoke = console.add("admin.revoke_key", gr.Button("Revoke key", variant="stop"))
    console.add("admin.queue_heading", gr.Markdown("### Queue, in fair-share order"))
    queue = console.add("admin.queue", gr.Dataframe(headers=QUEUE_COLUMNS, interactive=False, label="Queued jobs",
                                                   elem_id="admin-queue"))
    console.add("admin.cluster_heading", gr.Markdown("### Cluster resources"))
    cluster = gr.Markdown(elem_id="admin-cluster")
    _wire(console, refresh, [tenants, tenant, key_tenant, keys, key_id, queue, cluster],
          (tenant, quota, unlimited, save), (key_tenant, role, create, new_key), (key_id, revoke))


def _wire(console: Console, refresh: Any, shown: list[Any], quota_form: tuple, create_form: tuple, revoke_form: tuple) -> None:
    tenant, quota, unlimited, save = quota_form
    key_tenant, role, create, new_key = create_form
    key_id, revoke = revoke_form

    def load(request: gr.Request):
        client = console.client(request)
        ts, ks = client.list_tenants(), client.list_keys()
        names = [t["id"] for t in ts]
        live = [k["id"] for k in ks if not k.get("revoked_at")]
        return [tenants_table(ts), gr.update(choices=names), gr.update(choices=names), keys_table(ks),
                gr.update(choices=live), queue_table(client.job_queue()), cluster_markdown(client)]

    @action
    def admin_refresh(request: gr.Request):
        return load(request)

    @action
    def admin_set_quota(form: dict[Any, Any], request: gr.Request):
        """``form``: the inputs' values by component (gradio passes a set of inputs as one dict)."""
        name, values, made_unlimited = form[tenant], [form[q] for q in quota], form[unlimited]
        if not name:
            raise DoctuneError("Choose a tenant first.", "invalid_request", field="tenant")
        console.client(request).set_quota(name, **quota_changes(list(values), made_unlimited))
        gr.Info(f"Quota of {name} saved.")
        return load(request)

    @action
    def admin_create_key(name: str, key_role: str, request: gr.Request):
        created = console.client(request).create_key(name or None, key_role)
        return [created["api_key"], *load(request)]

    @action
    def admin_revoke_key(kid: str, request: gr.Request):
        if not kid:
            raise DoctuneError("Choose a key to revoke.", "invalid_request", field="key")
        console.client(request).revoke_key(kid)
        gr.Info(f"Key {kid} revoked.")
        return load(request)

    refresh.click(admin_refresh, None, shown, api_name="admin_refresh")
    save.click(admin_set_quota, {tenant, *quota, unlimited}, shown, api_name="admin_set_quota")
    create.click(admin_create_key, [key_tenant, role], [new_key, *shown], api_name="admin_create_key")
    revoke.click(admin_revoke_key, [key_id], shown, api_name="admin_revoke_key")
    def admin_signed_in(request: gr.Request):
        return load(request) if console.user(request).is_admin else [gr.update()] * len(shown)

    console.on_sign_in(admin_signed_in, shown)
