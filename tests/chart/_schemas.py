"""Shared helpers of the chart tests: read YAML documents and validate objects against a CRD's
``openAPIV3Schema`` with ``jsonschema`` (OpenAPI 3.0 is close to JSON Schema draft 4: the boolean
``exclusiveMinimum`` is draft 4's; ``nullable: true`` becomes a ``null`` type)."""

from __future__ import annotations

import copy
from functools import cache
from pathlib import Path
from typing import Any

import jsonschema
import yaml

ROOT = Path(__file__).resolve().parents[2]
THIRD_PARTY_CRDS = Path(__file__).resolve().parent / "crds"  # KubeRay's and Kueue's, copied from ../shared/crds


_Loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # libyaml: the KubeRay CRDs are 2 MB


def load_docs(text: str) -> list[dict[str, Any]]:
    return [d for d in yaml.load_all(text, Loader=_Loader) if d]


def _draft4(node: Any) -> Any:
    """An OpenAPI 3.0 CRD schema as draft 4, strict: a field the schema does not list is an error
    (as with `kubectl apply --validate=strict`), except where the schema preserves unknown fields."""
    if isinstance(node, list):
        return [_draft4(n) for n in node]
    if not isinstance(node, dict):
        return node
    out = {k: (v if k == "properties" else _draft4(v)) for k, v in node.items()}
    if "properties" in out:
        out["properties"] = {k: _draft4(v) for k, v in node["properties"].items()}
        if "additionalProperties" not in out and not out.get("x-kubernetes-preserve-unknown-fields"):
            out["additionalProperties"] = False
    if out.pop("nullable", False) and "type" in out:
        out["type"] = [out["type"], "null"]
    return out


@cache
def crd_schemas(folder: str) -> dict[tuple[str, str], dict[str, Any]]:
    """``(apiVersion, kind) -> draft-4 schema`` of every CRD in ``folder``."""
    out = {}
    for path in sorted(Path(folder).glob("*.yaml")):
        for crd in load_docs(path.read_text()):
            if crd.get("kind") != "CustomResourceDefinition":
                continue
            spec = crd["spec"]
            for version in spec["versions"]:
                key = (f"{spec['group']}/{version['name']}", spec["names"]["kind"])
                out[key] = _draft4(copy.deepcopy(version["schema"]["openAPIV3Schema"]))
    return out


def schema_errors(obj: dict[str, Any], schema: dict[str, Any]) -> list[str]:
    validator = jsonschema.Draft4Validator(schema)
    return [f"{'.'.join(map(str, e.absolute_path)) or '<root>'}: {e.message}"
            for e in sorted(validator.iter_errors(obj), key=lambda e: list(map(str, e.absolute_path)))]
