"""The CEL rules (`x-kubernetes-validations`) of every committed doctune CRD compile, every committed
custom resource passes every rule of its CRD, and ModelDeployment's rule refuses a spec that names
no model with the CRD's message. No API server runs in `make test`, so cel-python (`celpy`) evaluates
the rules with the API server's semantics: `self` is the value at the rule's path (each item of a
list, each value of a map), a rule under an absent optional field is not run, an absent field is an
absent key (`has()` is false), `number` fields are doubles, and rules on `oldSelf` (updates only)
are not run on a created object."""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any, Iterator

import celpy
import pytest
from celpy import celtypes

from tests.chart._schemas import ROOT, crd_schemas, load_docs, schema_errors

CRD_FOLDERS = [ROOT / "operators" / "crds", ROOT / "charts" / "doctune" / "crds"]
EXAMPLE_FOLDERS = [ROOT / "docs", ROOT / "charts", ROOT / "operators"]
_ENV = celpy.Environment()


@dataclass(frozen=True)
class Rule:
    crd: str  # the CRD file, relative to the repository
    api_version: str  # group/version of the objects it validates
    kind: str
    path: tuple[str, ...]  # property names; "[*]" for every item of a list or value of a map
    schema: dict[str, Any]  # the schema node at `path`, which holds the rule
    rule: dict[str, Any]  # {rule, message?, messageExpression?, fieldPath?, reason?}

    def where(self) -> str:
        return f"{self.crd} ({self.api_version}, {self.kind}) at {_json_path(self.path)}"


def _json_path(path: tuple[str, ...]) -> str:
    return "".join(p if p == "[*]" else f".{p}" for p in path) or "<root>"


def _rules_in(node: dict[str, Any], path: tuple[str, ...] = ()) -> Iterator[tuple[tuple[str, ...], dict, dict]]:
    for rule in node.get("x-kubernetes-validations", []):
        yield path, node, rule
    for name, child in node.get("properties", {}).items():
        yield from _rules_in(child, path + (name,))
    for key in ("items", "additionalProperties"):
        if isinstance(node.get(key), dict):
            yield from _rules_in(node[key], path + ("[*]",))


@cache
def crd_rules(folder: Path) -> tuple[Rule, ...]:
    """Every rule of every version of every CRD in `folder`."""
    rules = []
    for path in sorted(folder.glob("*.yaml")):
        for crd in load_docs(path.read_text()):
            if crd.get("kind") != "CustomResourceDefinition":
                continue
            spec = crd["spec"]
            for version in spec["versions"]:
                for where, node, rule in _rules_in(version["schema"]["openAPIV3Schema"]):
                    rules.append(Rule(str(path.relative_to(ROOT)), f"{spec['group']}/{version['name']}",
                                      spec["names"]["kind"], where, node, rule))
    return tuple(rules)


def all_rules() -> list[Rule]:
    return [r for folder in CRD_FOLDERS for r in crd_rules(folder)]


@cache
def _program(expression: str):
    return _ENV.program(_ENV.compile(expression))


def _to_cel(value: Any, schema: dict[str, Any]) -> Any:
    """A JSON value as the API server hands it to CEL: typed by its schema, not by how YAML wrote it
    (`num_cpus: 1` is a double when the schema says `number`)."""
    if value is None or not schema or (schema.get("x-kubernetes-preserve-unknown-fields") and "type" not in schema):
        return celpy.json_to_cel(value)
    kind = schema.get("type")
    if kind == "object" and isinstance(value, dict):
        props, extra = schema.get("properties", {}), schema.get("additionalProperties")
        extra = extra if isinstance(extra, dict) else {}
        return celtypes.MapType({celtypes.StringType(k): _to_cel(v, props.get(k, extra)) for k, v in value.items()})
    if kind == "array" and isinstance(value, list):
        return celtypes.ListType([_to_cel(v, schema.get("items") or {}) for v in value])
    if kind == "number" and isinstance(value, (int, float)) and not isinstance(value, bool):
        return celtypes.DoubleType(value)
    return celpy.json_to_cel(value)


def _values_at(obj: Any, path: tuple[str, ...]) -> Iterator[Any]:
    """The values a rule at `path` runs on; none where an optional field on the way is absent."""
    if not path:
        yield obj
    elif path[0] == "[*]":
        items = obj.values() if isinstance(obj, dict) else obj if isinstance(obj, list) else []
        for item in items:
            yield from _values_at(item, path[1:])
    elif isinstance(obj, dict) and obj.get(path[0]) is not None:
        yield from _values_at(obj[path[0]], path[1:])


def rule_failures(obj: dict[str, Any], rules) -> list[str]:
    """The messages of every rule of `obj`'s CRD that `obj` breaks, as the API server words them
    (`message`, else `messageExpression`, else `failed rule: <rule>`), each after the path it is at."""
    failures = []
    for r in rules:
        if (r.api_version, r.kind) != (obj.get("apiVersion"), obj.get("kind")):
            continue
        if re.search(r"\boldSelf\b", r.rule["rule"]):
            continue  # a transition rule: the API server runs it on updates only
        for value in _values_at(obj, r.path):
            if not r.path and isinstance(value.get("metadata"), dict):  # the root sees only these of metadata
                value = {**value, "metadata": {k: v for k, v in value["metadata"].items()
                                               if k in ("name", "generateName")}}
            activation = {"self": _to_cel(value, r.schema)}
            try:
                result = _program(r.rule["rule"]).evaluate(activation)
            except celpy.CELEvalError as e:
                result = e
            if isinstance(result, celtypes.BoolType) and bool(result):
                continue
            if isinstance(result, celpy.CELEvalError):
                message = f"{r.rule['rule']}: {result}"
            elif "message" in r.rule:
                message = r.rule["message"]
            elif "messageExpression" in r.rule:
                message = str(_program(r.rule["messageExpression"]).evaluate(activation))
            else:
                message = f"failed rule: {r.rule['rule']}"
            failures.append(f"{_json_path(r.path)}: {message}")
    return failures


def _example_docs() -> list[tuple[str, dict[str, Any]]]:
    """Every committed custom resource of a doctune CRD: YAML files and ```yaml blocks in Markdown
    under docs/, charts/ and operators/ (the chart's templates are rendered and checked by
    test_chart.py, not here)."""
    kinds = {key for folder in CRD_FOLDERS for key in crd_schemas(str(folder))}
    found = []
    for folder in EXAMPLE_FOLDERS:
        for path in sorted(folder.rglob("*")):
            if path.suffix not in (".yaml", ".yml", ".md") or "templates" in path.relative_to(ROOT).parts:
                continue
            text = path.read_text()
            if not any(f"kind: {kind}" in text for _, kind in kinds):
                continue
            blocks = re.findall(r"```ya?ml\n(.*?)```", text, re.S) if path.suffix == ".md" else [text]
            for block in blocks:
                found += [(str(path.relative_to(ROOT)), d) for d in load_docs(block)
                          if isinstance(d, dict) and (d.get("apiVersion"), d.get("kind")) in kinds]
    return found


EXAMPLES = _example_docs()


def test_the_crds_rules_are_found_in_both_folders():
    found = {(r.crd, r.kind, _json_path(r.path)) for r in all_rules()}
    for folder in CRD_FOLDERS:
        crd = str((folder / "modeldeployments.doctune.io.yaml").relative_to(ROOT))
        assert (crd, "ModelDeployment", ".spec") in found, found


def compile_errors(rules) -> list[str]:
    errors = []
    for r in rules:
        for key in ("rule", "messageExpression"):
            if key in r.rule:
                try:
                    _program(r.rule[key])
                except celpy.CELParseError as e:
                    errors.append(f"{r.where()}: {key} {r.rule[key]!r} does not compile: {e}")
    return errors


def test_every_crd_rule_compiles():
    assert compile_errors(all_rules()) == []


@pytest.mark.parametrize("folder", CRD_FOLDERS, ids=lambda p: str(p.relative_to(ROOT)))
def test_the_committed_custom_resources_pass_every_rule(folder):
    assert "ModelDeployment" in {d["kind"] for _, d in EXAMPLES}, "no committed ModelDeployment example found"
    failures = [f"{path}: {d['kind']} {d['metadata'].get('name')}: {f}" for path, d in EXAMPLES
                for f in rule_failures(d, crd_rules(folder))]
    assert failures == []


def _deployment_rule(folder: Path) -> Rule:
    crd = str((folder / "modeldeployments.doctune.io.yaml").relative_to(ROOT))
    (rule,) = [r for r in crd_rules(folder) if r.crd == crd and "model_id" in r.rule["rule"]]
    return rule


@pytest.mark.parametrize("folder", CRD_FOLDERS, ids=lambda p: str(p.relative_to(ROOT)))
@pytest.mark.parametrize("spec, refused", [
    ({"model_id": "m-0123456789ab"}, False),
    ({"promotion": {"sweep_id": "s-0123456789ab"}}, False),
    ({"model_id": "m-0123456789ab", "promotion": {"metric": "macro_f1", "force": True}}, False),
    ({"min_replicas": 1}, True),
    ({"promotion": {"metric": "macro_f1"}}, True),
], ids=["model_id", "promotion.sweep_id", "model_id+promotion", "neither", "promotion without sweep_id"])
def test_a_model_deployment_must_name_its_model_or_a_sweep(folder, spec, refused):
    rule = _deployment_rule(folder)
    doc = {"apiVersion": rule.api_version, "kind": "ModelDeployment", "metadata": {"name": "bbc-news"}, "spec": spec}
    assert schema_errors(doc, crd_schemas(str(folder))[(rule.api_version, rule.kind)]) == []  # only the rule refuses
    expected = [f".spec: {rule.rule['message']}"] if refused else []
    assert rule_failures(doc, [rule]) == expected
    assert rule_failures(doc, crd_rules(folder)) == expected  # and no other rule refuses it


def test_a_typo_in_a_rule_is_reported_naming_the_crd_path_and_rule():
    good = _deployment_rule(CRD_FOLDERS[0])
    typo = Rule(good.crd, good.api_version, good.kind, good.path, good.schema,
                {**good.rule, "rule": good.rule["rule"].replace("has(self.promotion)", "has(self.promotion")})
    (error,) = compile_errors([good, typo])
    assert error.startswith("operators/crds/modeldeployments.doctune.io.yaml (doctune.io/v1alpha1, ModelDeployment) "
                            f"at .spec: rule {typo.rule['rule']!r} does not compile")
