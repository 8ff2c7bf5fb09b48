"""A Gradio form generated from a pydantic spec model (``JobSpec``): one input per field, labelled with
the field's name and described by its ``Field(description=...)``; nested settings in accordions.
The spec is the single source: a new field in ``doctune.spec`` appears in the console without an edit here.

Called by the New job page: :func:`build_form` inside a ``gr.Blocks`` context, then
:meth:`Form.to_spec` turns the inputs' values back into the spec mapping (only what differs from the
defaults, plus required fields), which the API validates."""

from __future__ import annotations

import types
import typing
from dataclasses import dataclass, field
from typing import Any, Literal

import gradio as gr
from pydantic import BaseModel

__all__ = ["Form", "Leaf", "build_form", "spec_fields"]


@dataclass
class Leaf:
    """One input: the field's dotted path, its kind (str, int, float, bool, choice, list) and rules."""

    path: str
    kind: str
    default: Any
    required: bool
    optional: bool
    description: str
    choices: list[Any] | None = None
    component: Any = None


@dataclass
class Form:
    leaves: list[Leaf] = field(default_factory=list)
    toggles: dict[str, Any] = field(default_factory=dict)  # optional nested model path -> its "use it" checkbox
    groups: dict[str, Any] = field(default_factory=dict)  # nested model path -> its accordion

    @property
    def inputs(self) -> list[Any]:
        return [leaf.component for leaf in self.leaves] + list(self.toggles.values())

    def to_spec(self, values: list[Any], always: frozenset[str] = frozenset()) -> dict[str, Any]:
        """The spec mapping for the inputs' ``values`` (in :attr:`inputs` order): required fields, those
        in ``always``, and every value that differs from its default; an optional section only when its
        checkbox is ticked."""
        on = dict(zip(self.toggles, values[len(self.leaves):]))
        spec: dict[str, Any] = {}
        for path in (p for p, ticked in on.items() if ticked):
            _put(spec, path.split("."), {})
        for leaf, raw in zip(self.leaves, values):
            if any(leaf.path.startswith(p + ".") and not ticked for p, ticked in on.items()):
                continue
            value = _coerce(leaf, raw)
            if value is _MISSING or (value == leaf.default and not leaf.required and leaf.path not in always):
                continue
            _put(spec, leaf.path.split("."), value)
        return spec


_MISSING = object()


def _put(spec: dict[str, Any], keys: list[str], value: Any) -> None:
    for key in keys[:-1]:
        spec = spec.setdefault(key, {})
    if not (isinstance(value, dict) and keys[-1] in spec):
        spec[keys[-1]] = value


def _coerce(leaf: Leaf, raw: Any) -> Any:
    """The spec value of one input; an empty input is left out of the spec (the API's default applies)."""
    if raw is None or (isinstance(raw, str) and not raw.strip()):
        return _MISSING
    if leaf.kind in ("int", "float"):
        try:
            number = float(raw)
        except (TypeError, ValueError):
            raise gr.Error(f"{leaf.path}: {raw!r} is not a number; type a number or leave it empty for the default",
                           title="Not done") from None
        return int(number) if leaf.kind == "int" and number == int(number) else number
    if leaf.kind == "list":
        return [s.strip() for s in str(raw).split(",") if s.strip()]
    return raw.strip() if isinstance(raw, str) else raw


def _unwrap(annotation: Any) -> tuple[Any, bool]:
    """(the type, whether None is allowed) of ``X | None`` or ``Optional[X]``."""
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        return (args[0] if len(args) == 1 else annotation), len(args) < len(typing.get_args(annotation))
    return annotation, False


def _kind(tp: Any) -> tuple[str, list[Any] | None]:
    if typing.get_origin(tp) is Literal:
        return "choice", list(typing.get_args(tp))
    if typing.get_origin(tp) is list:
        return "list", None
    return {bool: "bool", int: "int", float: "float"}.get(tp, "str"), None


def spec_fields(model: type[BaseModel], prefix: str = "") -> list[tuple[str, Any, Any, bool]]:
    """(path, type, pydantic FieldInfo, optional) for each field of ``model``, in declaration order."""
    out = []
    for name, info in model.model_fields.items():
        tp, optional = _unwrap(info.annotation)
        out.append((f"{prefix}{name}", tp, info, optional))
    return out


def build_form(model: type[BaseModel], add: Any, *, skip: frozenset[str] = frozenset(),
               dropdowns: frozenset[str] = frozenset(), defaults: dict[str, Any] | None = None,
               per_row: int = 3, form: Form | None = None, prefix: str = "") -> Form:
    """Inputs for ``model``'s fields (less ``skip``), created in the current Blocks context; ``add(name,
    component)`` registers each as ``name`` = its dotted path. Fields in ``dropdowns`` are dropdowns that
    also take a typed value (their choices are filled later); ``defaults`` overrides initial values."""
    form = form or Form()
    defaults = defaults or {}
    scalars, nested = [], []
    for path, tp, info, optional in spec_fields(model, prefix):
        if path in skip:
            continue
        (nested if isinstance(tp, type) and issubclass(tp, BaseModel) else scalars).append((path, tp, info, optional))
    for i in range(0, len(scalars), per_row):
        with gr.Row():
            for path, tp, info, optional in scalars[i:i + per_row]:
                form.leaves.append(_input(path, tp, info, optional, add, dropdowns, defaults))
    for path, tp, info, optional in nested:
        with gr.Accordion(f"{path.rsplit('.', 1)[-1]}: {info.description or ''}", open=False,
                          elem_id=f"form-{path.replace('.', '-')}") as group:
            form.groups[path] = group
            if optional:
                form.toggles[path] = add(f"{path}.enabled", gr.Checkbox(
                    bool(defaults.get(path)), label=f"use {path.rsplit('.', 1)[-1]}", elem_id=f"form-{path.replace('.', '-')}-on"))
            build_form(tp, add, skip=skip, dropdowns=dropdowns, defaults=defaults, per_row=per_row, form=form,
                       prefix=f"{path}.")
    return form


def _input(path: str, tp: Any, info: Any, optional: bool, add: Any, dropdowns: frozenset[str],
           defaults: dict[str, Any]) -> Leaf:
    kind, choices = _kind(tp)
    default = None if info.is_required() else info.get_default(call_default_factory=True)
    leaf = Leaf(path, kind, default, info.is_required(), optional, info.description or "", choices)
    value = defaults.get(path, default)
    common = {"label": path.rsplit(".", 1)[-1], "info": leaf.description, "elem_id": f"form-{path.replace('.', '-')}"}
    if path in dropdowns:
        component = gr.Dropdown([value] if value else [], value=value, allow_custom_value=True, **common)
    elif kind == "choice":
        component = gr.Dropdown(choices, value=value, **common)
    elif kind == "bool":
        component = gr.Checkbox(bool(value), **common)
    elif kind in ("int", "float") and value is not None:
        component = gr.Number(value, precision=0 if kind == "int" else None, **common)
    elif kind in ("int", "float"):  # no default: a gr.Number would send 0 when left empty, so a text box
        component = gr.Textbox("", placeholder="empty: the default", **common)
    else:
        text = ", ".join(value) if isinstance(value, list) else ("" if value is None else str(value))
        component = gr.Textbox(text, placeholder="comma-separated" if kind == "list" else None, **common)
    leaf.component = add(path, component)
    return leaf
