"""The New job form is generated from JobSpec, not written field by field: every spec field (nested
ones included) has an input with the field's description, and the form's values turn back into a
spec that JobSpec accepts, holding only what differs from the defaults."""

from __future__ import annotations

import gradio as gr
from pydantic import BaseModel

from doctune.console.forms import build_form
from doctune.spec import JobSpec

SKIP = frozenset({"tenant"})


def _all_paths(model: type[BaseModel], prefix: str = "") -> set[str]:
    from doctune.console.forms import spec_fields

    out = set()
    for path, tp, _, _ in spec_fields(model, prefix):
        if isinstance(tp, type) and issubclass(tp, BaseModel):
            out |= _all_paths(tp, f"{path}.")
        else:
            out.add(path)
    return out


def _form():
    added = {}
    with gr.Blocks():
        form = build_form(JobSpec, lambda name, c: added.setdefault(name, c), skip=SKIP,
                          dropdowns=frozenset({"task", "dataset.id"}), defaults={"epochs": 2.0})
    return form, added


def test_every_jobspec_field_has_an_input_with_its_description():
    form, added = _form()
    assert {leaf.path for leaf in form.leaves} == _all_paths(JobSpec) - SKIP
    lr = added["learning_rate"]
    assert "Typical" in lr.info and lr.value == 5e-4
    assert added["tuning.method"].choices and {c[1] for c in added["tuning.method"].choices} >= {"full", "lora", "freeze"}
    assert added["deepspeed.zero_stage"].value == 2 and isinstance(added["deepspeed.offload_params"], gr.Checkbox)
    assert "early_stopping.enabled" in added  # an optional section has its own switch


def test_form_values_become_a_valid_spec_with_only_the_changes():
    form, _ = _form()
    values = {leaf.path: leaf.component.value for leaf in form.leaves}
    values.update({"task": "classification", "dataset.id": "ds_1", "tuning.method": "full", "deepspeed.zero_stage": 3,
                   "tuning.lora.target_modules": "query, value"})
    spec = form.to_spec([values[leaf.path] for leaf in form.leaves] + [True], always=frozenset({"task", "dataset.id"}))
    assert spec == {"task": "classification", "dataset": {"id": "ds_1"}, "epochs": 2.0,
                    "tuning": {"method": "full", "lora": {"target_modules": ["query", "value"]}},
                    "deepspeed": {"zero_stage": 3}, "early_stopping": {}}
    parsed = JobSpec.model_validate({"tenant": "team-a", **spec})
    assert parsed.early_stopping.metric == "macro_f1" and parsed.tuning.method == "full"
    off = form.to_spec([values[leaf.path] for leaf in form.leaves] + [False])
    assert "early_stopping" not in off
