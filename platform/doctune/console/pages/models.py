"""Models and deployments: the tenant's registered models with their metrics; deploy one with
autoscaling and batching settings (the form is generated from :class:`doctune.spec.DeploymentSpec`'s
fields and descriptions); each deployment's revisions, replicas and request metrics
(``GET /v1/deployments/{id}/metrics``); rollback; a deployment's retrain policy (a small form) and its decisions."""

from __future__ import annotations

import typing
from typing import Any

import gradio as gr
import pandas as pd

from doctune.console.context import Console, action
from doctune.errors import DoctuneError
from doctune.spec import DeploymentSpec, RetrainPolicySpec

MODEL_COLUMNS = ["id", "task", "job_id", "metric", "test", "dev", "baseline", "merged", "created_at"]
DEPLOYMENT_COLUMNS = ["id", "name", "model_id", "status", "revision", "url", "message"]
REVISION_COLUMNS = ["revision", "current", "model_id", "reason", "decision", "created_at"]
NAMED = ("tenant", "model_id", "name", "retrain")  # the form's own inputs (retrain: the policy form below); every
# other DeploymentSpec field is generated
RETRAIN_FIELDS = ("min_new_records", "min_growth_percent", "max_label_drift", "schedule", "metric")
RETRAIN_EVENT_COLUMNS = ["id", "at", "decision", "trigger", "job_id", "growth", "drift", "champion", "challenger", "reason"]


def models_table(models: list[dict[str, Any]], primary: dict[str, str]) -> pd.DataFrame:
    """One row per model with its task's primary metric (``primary``: task -> metric, from ``GET /v1/tasks``)."""
    rows = []
    for m in models:
        metrics = m.get("metrics") or {}
        name = primary.get(m["task"])
        pick = lambda part: (part or {}).get(name) if name else None  # noqa: E731
        rows.append({"id": m["id"], "task": m["task"], "job_id": m["job_id"], "metric": name, "test": pick(metrics.get("test")),
                     "dev": pick(metrics.get("dev")), "baseline": pick((metrics.get("baseline") or {}).get("test")),
                     "merged": m.get("merged"),
                     "created_at": m.get("created_at")})
    return pd.DataFrame(rows, columns=MODEL_COLUMNS)


def deployments_table(deps: list[dict[str, Any]]) -> pd.DataFrame:
    return pd.DataFrame([{c: d.get(c) for c in DEPLOYMENT_COLUMNS} for d in deps], columns=DEPLOYMENT_COLUMNS)


def revisions_table(revs: list[dict[str, Any]]) -> pd.DataFrame:
    return pd.DataFrame([{c: (str(r.get(c)) if c == "decision" and r.get(c) else r.get(c)) for c in REVISION_COLUMNS}
                         for r in revs], columns=REVISION_COLUMNS)


def spec_input(name: str, field: Any) -> Any:
    """A form input for one DeploymentSpec field: its type picks the component, its default the value."""
    kind, info = field.annotation, field.description
    if typing.get_origin(kind) is typing.Literal:
        return gr.Dropdown(list(typing.get_args(kind)), value=field.default, label=name, info=info)
    if kind is bool:
        return gr.Checkbox(value=field.default, label=name, info=info)
    return gr.Number(value=field.default, precision=0 if kind is int else None, label=name, info=info, min_width=180)


def retrain_events_table(events: list[dict[str, Any]]) -> pd.DataFrame:
    """One row per decision of a retrain policy, with the growth, drift and both test metrics."""
    def side(d: dict[str, Any] | None) -> str | None:
        return f"{d.get('model_id')}: {d.get('test')}" if d else None

    rows = [{"id": e["id"], "at": e.get("at"), "decision": e["decision"], "trigger": e.get("trigger"),
             "job_id": e.get("job_id"), "growth": ((e.get("data") or {}).get("growth") or {}).get("records"),
             "drift": (e.get("data") or {}).get("drift"), "champion": side((e.get("data") or {}).get("champion")),
             "challenger": side((e.get("data") or {}).get("challenger")), "reason": e.get("reason")} for e in events]
    return pd.DataFrame(rows, columns=RETRAIN_EVENT_COLUMNS)


def retrain_policy_input(name: str) -> Any:
    """A retrain-policy form input, labelled and described by RetrainPolicySpec's field."""
    field = RetrainPolicySpec.model_fields[name]
    if name in ("schedule", "metric"):
        return gr.Textbox(label=name, info=field.description, placeholder="empty: none" if name == "schedule" else
                          "empty: the task's primary metric")
    return gr.Textbox(label=name, info=field.description, placeholder="empty: no such trigger")


def metrics_markdown(m: dict[str, Any]) -> str:
    ms = lambda v: "—" if v is None else f"{1000 * v:.1f} ms"  # noqa: E731
    codes = ", ".join(f"{code}: {n}" for code, n in m["requests"].items()) or "none yet"
    batch = "—" if m["mean_batch_size"] is None else f"{m['mean_batch_size']:.2f}"
    return (f"**Replicas**: {m['replicas']} · **requests**: {m['requests_total']} ({codes}) · **latency** mean "
            f"{ms(m['latency_mean_s'])}, p50 ≤ {ms(m['latency_p50_s'])}, p95 ≤ {ms(m['latency_p95_s'])} · "
            f"**inputs per model call**: {batch}")


def build(console: Console) -> None:
    refresh = console.add("models.refresh", gr.Button("Refresh", elem_id="models-refresh"))
    models = console.add("models.models", gr.Dataframe(headers=MODEL_COLUMNS, interactive=False, label="Registered models",
                                                      elem_id="models-models"))
    with gr.Accordion("Deploy a model", open=False) as deploy_box:
        with gr.Row():
            model = console.add("models.model", gr.Dropdown(label="Model", choices=[], allow_custom_value=True))
            name = console.add("models.name", gr.Textbox(label="Endpoint name", placeholder="bbc"))
        with gr.Row():
            settings = [console.add(f"models.spec.{n}", spec_input(n, f))
                        for n, f in DeploymentSpec.model_fields.items() if n not in NAMED]
        deploy = console.add("models.deploy", gr.Button("Deploy", variant="primary", elem_id="models-deploy"))
    deployments = console.add("models.deployments", gr.Dataframe(headers=DEPLOYMENT_COLUMNS, interactive=False,
                                                                label="Deployments", elem_id="models-deployments"))
    chosen = console.add("models.deployment", gr.Dropdown(label="Deployment", choices=[], allow_custom_value=True))
    metrics = gr.Markdown(elem_id="models-metrics")
    revisions = console.add("models.revisions", gr.Dataframe(headers=REVISION_COLUMNS, interactive=False, label="Revisions"))
    with gr.Row():
        revision = console.add("models.rollback_revision", gr.Number(label="Revision to roll back to (empty: the previous)",
                                                                    precision=0, value=None))
        rollback = console.add("models.rollback", gr.Button("Roll back", variant="stop", elem_id="models-rollback"))
    with gr.Accordion("Retrain policy", open=False) as retrain_box:
        with gr.Row():
            policy = [console.add(f"models.retrain.{n}", retrain_policy_input(n)) for n in RETRAIN_FIELDS]
        with gr.Row():
            save = console.add("models.retrain_save", gr.Button("Save policy", variant="primary"))
            remove = console.add("models.retrain_remove", gr.Button("Remove policy", variant="stop"))
    events = console.add("models.retrain_events", gr.Dataframe(headers=RETRAIN_EVENT_COLUMNS, interactive=False,
                                                              label="Retrain decisions"))
    console.writes(deploy_box, deploy, rollback, revision, save, remove)
    _wire(console, refresh, (models, model, deployments, chosen), (name, settings, deploy), (metrics, revisions),
          (revision, rollback))
    _wire_retrain(console, chosen, policy, (save, remove), events, retrain_box)


def _wire_retrain(console: Console, chosen: Any, policy: list[Any], buttons: tuple, events: Any, box: Any) -> None:
    """The chosen deployment's retrain policy (shown in the form, saved or removed) and its decisions."""
    save, remove = buttons

    def shown(client: Any, dep_id: str) -> list[Any]:
        dep = client.get_deployment(dep_id)
        current = dep.get("retrain") or {}
        return [*("" if current.get(n) is None else str(current[n]) for n in RETRAIN_FIELDS),
                retrain_events_table(client.retrain_events(dep_id))]

    @action
    def models_retrain_show(dep_id: str, request: gr.Request):
        if not dep_id:
            return [*([""] * len(RETRAIN_FIELDS)), retrain_events_table([])]
        return shown(console.client(request), dep_id)

    @action
    def models_retrain_save(dep_id: str, min_new_records: str, min_growth_percent: str, max_label_drift: str,
                            schedule: str, metric: str, request: gr.Request):
        if not dep_id:
            raise DoctuneError("Choose a deployment first.", "invalid_request", field="deployment")
        values = (min_new_records, min_growth_percent, max_label_drift, schedule, metric)
        body = {n: v.strip() for n, v in zip(RETRAIN_FIELDS, values) if isinstance(v, str) and v.strip()}
        client = console.client(request)
        client.set_retrain_policy(dep_id, body)  # the API converts and checks every field, naming a bad one
        gr.Info("Retrain policy saved.")
        return shown(client, dep_id)

    @action
    def models_retrain_remove(dep_id: str, request: gr.Request):
        if not dep_id:
            raise DoctuneError("Choose a deployment first.", "invalid_request", field="deployment")
        client = console.client(request)
        client.set_retrain_policy(dep_id, None)
        gr.Info("Retrain policy removed.")
        return shown(client, dep_id)

    outputs = [*policy, events]
    chosen.change(models_retrain_show, [chosen], outputs, api_name="models_retrain_show")
    save.click(models_retrain_save, [chosen, *policy], outputs, api_name="models_retrain_save")
    remove.click(models_retrain_remove, [chosen], outputs, api_name="models_retrain_remove")


def _wire(console: Console, refresh: Any, lists: tuple, deploying: tuple, detail: tuple, rolling: tuple) -> None:
    models, model, deployments, chosen = lists
    name, settings, deploy = deploying
    metrics, revisions = detail
    revision, rollback = rolling
    spec_names = [n for n in DeploymentSpec.model_fields if n not in NAMED]

    def listed(request: gr.Request):
        client = console.client(request)
        ms, ds = client.list_models(limit=200), client.list_deployments(limit=200)
        primary = {t["name"]: t["primary_metric"] for t in client.list_tasks()}
        return [models_table(ms, primary), gr.update(choices=[m["id"] for m in ms]), deployments_table(ds),
                gr.update(choices=[d["id"] for d in ds])]

    @action
    def models_refresh(request: gr.Request):
        return listed(request)

    @action
    def models_deploy(form: dict[Any, Any], request: gr.Request):
        """``form``: the inputs' values by component (gradio passes a set of inputs as one dict)."""
        model_id, endpoint, values = form[model], form[name], [form[c] for c in settings]
        if not model_id or not (endpoint or "").strip():
            raise DoctuneError("Choose a model and name its endpoint.", "invalid_request", field="name")
        spec = {k: (int(v) if isinstance(v, float) and DeploymentSpec.model_fields[k].annotation is int else v)
                for k, v in zip(spec_names, values) if v is not None}
        dep = console.client(request).deploy(model_id, endpoint.strip(), **spec)
        gr.Info(f"Deploying {dep['name']} (revision {dep['revision']}).")
        return listed(request)

    @action
    def models_deployment(dep_id: str, request: gr.Request):
        if not dep_id:
            return ["", revisions_table([])]
        client = console.client(request)
        try:
            shown = metrics_markdown(client.deployment_metrics(dep_id))
        except DoctuneError as e:  # the cluster's metrics may be unreachable; the revisions still show
            shown = f"Request metrics: {e.message}"
        return [shown, revisions_table(client.deployment_revisions(dep_id))]

    @action
    def models_rollback(dep_id: str, rev: float | None, request: gr.Request):
        if not dep_id:
            raise DoctuneError("Choose a deployment to roll back.", "invalid_request", field="deployment")
        dep = console.client(request).rollback(dep_id, None if rev is None else int(rev))
        gr.Info(f"{dep['name']} rolls back: revision {dep['revision']}.")
        return [*listed(request), revisions_table(console.client(request).deployment_revisions(dep_id))]

    refresh.click(models_refresh, None, [models, model, deployments, chosen], api_name="models_refresh")
    deploy.click(models_deploy, {model, name, *settings}, [models, model, deployments, chosen], api_name="models_deploy")
    chosen.change(models_deployment, [chosen], [metrics, revisions], api_name="models_deployment")
    rollback.click(models_rollback, [chosen, revision], [models, model, deployments, chosen, revisions],
                   api_name="models_rollback")
    console.on_sign_in(listed, [models, model, deployments, chosen])
