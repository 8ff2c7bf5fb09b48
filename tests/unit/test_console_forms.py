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


def test_empty_number_fields_are_left_out_not_sent_as_zero():
    form, added = _form()
    assert isinstance(added["resources_per_worker.threads"], gr.Textbox)  # a gr.Number would send 0 when empty
    values = {leaf.path: leaf.component.value for leaf in form.leaves}
    values.update({"task": "classification", "dataset.id": "ds_1"})
    spec = form.to_spec([values[leaf.path] for leaf in form.leaves] + [False])
    assert "resources_per_worker" not in spec
    values["resources_per_worker.threads"] = "4"
    spec = form.to_spec([values[leaf.path] for leaf in form.leaves] + [False])
    assert spec["resources_per_worker"] == {"threads": 4}
    values["resources_per_worker.threads"] = "four"
    try:
        form.to_spec([values[leaf.path] for leaf in form.leaves] + [False])
    except gr.Error as e:
        assert "resources_per_worker.threads" in str(e) and "not a number" in str(e)
    else:
        raise AssertionError("a non-number was accepted")


def test_an_error_toast_lists_each_bad_field_once():
    from doctune.console.context import describe_error
    from doctune.errors import from_validation_error
    from pydantic import ValidationError

    try:
        JobSpec.model_validate({"tenant": "t", "task": "classification", "dataset": {"id": "d"},
                                "resources_per_worker": {"threads": 0, "memory_gb": 0}})
    except ValidationError as exc:
        text = describe_error(from_validation_error(exc))
    assert text.count("resources_per_worker.threads") == 1 and text.count("memory_gb") == 1, text
    assert text.splitlines()[0] == "2 invalid field(s)"
