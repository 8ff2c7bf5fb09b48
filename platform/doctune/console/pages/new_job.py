"""New job: a form generated from ``JobSpec`` (:mod:`doctune.console.forms`), the pre-flight plan
(``POST /v1/jobs/plan``), the equivalent YAML with its ``doctune jobs submit`` and ``ray job submit``
lines (the latter with a one-time token from ``POST /v1/jobs/tokens``), and Submit."""

from __future__ import annotations

import shlex
from typing import Any

import gradio as gr
import yaml

from doctune.console.context import Console, action
from doctune.console.forms import Form, build_form
from doctune.spec import JobSpec, TuningSpec

# inputs whose choices come from the API once signed in (any other value may still be typed)
DROPDOWNS = frozenset({"task", "base_model", "dataset.id"})
ALWAYS = frozenset({"task", "base_model", "dataset.id"})
# initial values where the spec has no default worth starting from (a job needs epochs or max_steps)
STARTING = {"epochs": 3.0}
METHOD_SETTINGS = [m for m in TuningSpec.model_fields if m not in ("method", "merge_adapter")]
SPEC_FILE = "job.yaml"


def build(console: Console) -> None:
    gr.Markdown("Every input below is a `JobSpec` field (see each one's note); the YAML that the form amounts to "
                "is shown with the plan.")
    form = build_form(JobSpec, lambda name, c: console.add(f"new_job.{name}", c), skip=frozenset({"tenant"}),
                      dropdowns=DROPDOWNS, defaults=STARTING)
    with gr.Row():
        plan = console.add("new_job.plan", gr.Button("Plan", elem_id="new-job-plan"))
        submit = console.add("new_job.submit", gr.Button("Submit", variant="primary", elem_id="new-job-submit"))
    console.writes(submit)
    status = console.add("new_job.status", gr.Markdown("", elem_id="new-job-status"))
    with gr.Row():
        plan_text = console.add("new_job.plan_text", gr.Markdown("", elem_id="new-job-plan-text"))
        spec_yaml = console.add("new_job.yaml", gr.Code("", language="yaml", label=SPEC_FILE, elem_id="new-job-yaml"))
    commands = console.add("new_job.commands", gr.Code("", language="shell", label="Run it from a terminal",
                                                       elem_id="new-job-commands"))
    _wire_choices(console, form)
    _wire_method(form)
    _wire_actions(console, form, plan, submit, status, plan_text, spec_yaml, commands)


def _leaf(form: Form, path: str) -> Any:
    return next(leaf.component for leaf in form.leaves if leaf.path == path)


def _wire_choices(console: Console, form: Form) -> None:
    def lists(request: gr.Request, pick_first: bool) -> tuple[Any, Any, Any]:
        client = console.client(request)
        tasks = [t["name"] for t in client.list_tasks()]
        bases = [(f"{b['name']} ({b['source']})", b["base_model"]) for b in client.list_base_models()]
        datasets = [(f"{d['name']} · {d['task']} ({d['id']})", d["id"]) for d in client.list_datasets(limit=200)]
        first = {"value": datasets[0][1] if datasets else None} if pick_first else {}
        return gr.update(choices=tasks), gr.update(choices=bases), gr.update(choices=datasets, **first)

    @action
    def choices(request: gr.Request):  # at sign-in: the newest dataset is chosen
        return lists(request, pick_first=True)

    @action
    def refresh_choices(request: gr.Request):  # a dataset uploaded since sign-in shows up; nothing chosen changes
        return lists(request, pick_first=False)

    outputs = [_leaf(form, "task"), _leaf(form, "base_model"), _leaf(form, "dataset.id")]
    console.on_sign_in(choices, outputs)
    for name in ("task", "base_model", "dataset.id"):
        _leaf(form, name).focus(refresh_choices, None, outputs, api_visibility="private")


def _wire_method(form: Form) -> None:
    """Only the chosen method's settings show."""
    groups = [form.groups[f"tuning.{m}"] for m in METHOD_SETTINGS]
    chosen = _leaf(form, "tuning.method").value
    for method, group in zip(METHOD_SETTINGS, groups):
        group.visible = method == chosen

    def show(method: str):
        return [gr.update(visible=m == method) for m in METHOD_SETTINGS]

    _leaf(form, "tuning.method").change(show, [_leaf(form, "tuning.method")], groups, api_visibility="private")


def _wire_actions(console: Console, form: Form, plan, submit, status, plan_text, spec_yaml, commands) -> None:
    def spec_of(values: list[Any], request: gr.Request) -> dict[str, Any]:
        spec = form.to_spec(list(values), always=ALWAYS)
        return {"tenant": console.user(request).tenant, **spec} if console.user(request).tenant else spec

    @action
    def plan_job(request: gr.Request, *values: Any):  # the request first: Gradio passes it only as a positional
        user = console.user(request)
        spec = spec_of(values, request)
        planned = user.client.plan_job(spec)
        lines = f"doctune jobs submit {SPEC_FILE}"
        if user.can_write:
            minted = user.client.request("POST", "/v1/jobs/tokens", json=spec)
            lines += "\n" + ray_submit_line(minted["token"], minted.get("ray_address"))
        return plan_markdown(planned), yaml.safe_dump(spec, sort_keys=False, allow_unicode=True), lines

    @action
    def submit_job(request: gr.Request, *values: Any):
        job = console.client(request).submit_job(spec_of(values, request))
        return f"Submitted **{job['id']}** ({job['status']}); follow it on the Jobs page."

    plan.click(plan_job, form.inputs, [plan_text, spec_yaml, commands], api_name="plan_job")
    submit.click(submit_job, form.inputs, [status], api_name="submit_job")


def ray_submit_line(token: str, ray_address: str | None) -> str:
    """The ``ray job submit`` line for :data:`SPEC_FILE` in the current folder (as ``doctune jobs token`` prints it)."""
    address = f"--address {shlex.quote(ray_address)} " if ray_address else ""
    return (f"ray job submit {address}--working-dir . -- python -m ray_jobs.finetune "
            f"--spec {SPEC_FILE} --token {shlex.quote(token)}")


def plan_markdown(plan: dict[str, Any]) -> str:
    """The plan as a short table: memory per worker, tokens, steps, expected time, whether it fits."""
    m, t, st = plan["memory_per_worker_mb"], plan["tokens"], plan["steps"]
    est = plan.get("expected_time")
    rows = [
        ("model", f"{plan['base_model']}: {plan['model']['parameters']:,} parameters, "
                  f"{plan['model']['trainable_parameters']:,} trainable ({plan['model']['method']})"),
        ("memory per worker", f"{m['total_mb'] / 1024:.2f} GiB × {plan['workers']} worker(s)"),
        ("tokens", f"{t.get('tokens_per_epoch', 0):,} per epoch ({t.get('truncated_documents', 0)} documents truncated)"),
        ("steps", f"{st['total']} ({st['per_epoch']} per epoch), {st['evaluations']} evaluations"),
        ("expected time", f"about {est['total_s'] / 60:.1f} min ({est.get('basis', '')})" if est else
         "unknown until a comparable job has run"),
        *([("expected time to target", f"about {target['total_s'] / 60:.1f} min ({target['basis']})")]
          if (target := plan.get("expected_time_to_target")) else []),
        ("fits the quota", "yes" if plan["fits"] else "**no**"),
    ]
    text = "| | |\n|---|---|\n" + "\n".join(f"| {k} | {v} |" for k, v in rows)
    return text + "".join(f"\n\n⚠ {w}" for w in plan.get("warnings", []))
