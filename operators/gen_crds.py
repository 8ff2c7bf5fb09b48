"""Generate the doctune CustomResourceDefinitions from the pydantic specs (``make crds``).

Each CRD's ``openAPIV3Schema`` is the spec model's ``model_json_schema()`` made structural (the
form the Kubernetes API server accepts): ``$ref``s inlined and ``$defs`` dropped, ``anyOf: [X,
null]`` turned into ``X`` with ``nullable: true``, free-form mappings and ``Any`` values marked
``x-kubernetes-preserve-unknown-fields``, ``const`` as a one-value ``enum``, draft-2020
``exclusiveMinimum: n`` as OpenAPI 3.0's ``minimum: n, exclusiveMinimum: true``. The spec models
of the custom resources are the REST specs less the field that Kubernetes already says (a
FineTuneJob's tenant is its namespace's tenant, a Tenant's name is its ``metadata.name``).

    PYTHONPATH=platform python operators/gen_crds.py            # writes operators/crds/*.yaml
    PYTHONPATH=platform python operators/gen_crds.py --check    # exit 1 when a file is stale

The chart ships the same files (``charts/doctune/crds/``, written by the same run);
tests/chart/test_crds.py fails when a committed file differs from what this generates now.
"""

from __future__ import annotations

import argparse
import copy
import sys
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field

from doctune.spec import DeploymentSpec, JobSpec, QuotaSpec, SweepSpec, TenantSpec

ROOT = Path(__file__).resolve().parent.parent
OUT_DIRS = [ROOT / "operators" / "crds", ROOT / "charts" / "doctune" / "crds"]
GROUP, VERSION = "doctune.io", "v1alpha1"


class _CR(BaseModel):
    model_config = ConfigDict(extra="forbid")


class PromotionRules(_CR):
    """Champion/challenger rules of a ModelDeployment (doctune.spec.PromotionSpec, as a CR field)."""

    sweep_id: str | None = Field(
        None, min_length=1, max_length=64,
        description="The challenger is this sweep's winner (the sweep must have succeeded) instead of model_id.")

    metric: str | None = Field(
        None, description="Test metric the new model and the one served now are compared on (default: the task's "
        "primary metric); higher is better except for loss and perplexity.")
    force: bool = Field(
        False, description="Promote even when the new model is not better, or when the two were tested on "
        "different datasets.")


class TenantRayCluster(_CR):
    """A dedicated KubeRay RayCluster in the tenant's namespace; the tenant's jobs then run there,
    behind the tenant's own Ray token."""

    enabled: bool = Field(False, description="Give the tenant its own RayCluster in its namespace.")
    minWorkers: int = Field(0, ge=0, le=1000, description="Fewest CPU workers the autoscaler keeps.")
    maxWorkers: int = Field(2, ge=1, le=1000, description="Most CPU workers the autoscaler starts.")
    workerCpus: float = Field(2.0, gt=0, le=256, description="CPUs each worker Pod requests.")
    workerMemory: str = Field("8Gi", pattern=r"^[0-9]+(\.[0-9]+)?(Ki|Mi|Gi|Ti|K|M|G|T)?$",
                              description="Memory each worker Pod requests, as a Kubernetes quantity (e.g. 8Gi).")
    gpuWorkers: int = Field(0, ge=0, le=1000, description="Most GPU workers (one nvidia.com/gpu each); 0: none.")


class TenantCRSpec(_CR):
    display_name: str | None = TenantSpec.model_fields["display_name"]
    rayCluster: TenantRayCluster | None = Field(None, description=" ".join((TenantRayCluster.__doc__ or "").split()))


class ModelDeploymentCRSpec(_CR):
    promotion: PromotionRules | None = Field(
        None, description="When set, the model replaces the one served now only if it beats it on the test split "
        "(champion/challenger); when unset, the model is deployed as is.")


def _fields_of(model: type[BaseModel], drop: set[str]) -> tuple[dict[str, Any], list[str]]:
    """``(properties, required)`` of a model's inlined schema, less the fields in ``drop``."""
    schema = structural(model.model_json_schema())
    props = {k: v for k, v in schema["properties"].items() if k not in drop}
    return props, [r for r in schema.get("required", []) if r not in drop]


def _object(props: dict[str, Any], required: list[str], description: str) -> dict[str, Any]:
    out: dict[str, Any] = {"type": "object", "description": description, "properties": props}
    if required:
        out["required"] = required
    return out


def finetunejob_spec() -> dict[str, Any]:
    props, req = _fields_of(JobSpec, {"tenant"})
    return _object(props, req, "A doctune JobSpec (doctune.spec.JobSpec) less tenant: the job belongs to the "
                   "tenant of the resource's namespace.")


def sweep_spec() -> dict[str, Any]:
    props, req = _fields_of(SweepSpec, {"tenant"})
    job_props, job_req = _fields_of(JobSpec, {"tenant"})
    props["job"] = _object(job_props, job_req, props["job"].get("description", ""))
    return _object(props, req, "A doctune SweepSpec (doctune.spec.SweepSpec) less tenant: the sweep and its trials "
                   "belong to the tenant of the resource's namespace.")


def modeldeployment_spec() -> dict[str, Any]:
    props, req = _fields_of(DeploymentSpec, {"tenant"})
    extra, _ = _fields_of(ModelDeploymentCRSpec, set())
    props["name"]["description"] += " Default: the resource's metadata.name."
    props["model_id"]["description"] += " Required unless promotion.sweep_id names the challenger."
    out = _object({**props, **extra}, [r for r in req if r not in ("name", "model_id")],
                  "A doctune DeploymentSpec (doctune.spec.DeploymentSpec) less tenant, plus optional promotion rules.")
    out["x-kubernetes-validations"] = [{
        "rule": "has(self.model_id) || (has(self.promotion) && has(self.promotion.sweep_id))",
        "message": "set model_id (the model to serve), or promotion.sweep_id to serve a sweep's winner"}]
    return out


def tenant_spec() -> dict[str, Any]:
    props, _ = _fields_of(TenantCRSpec, set())
    quota, _ = _fields_of(QuotaSpec, set())
    return _object({**props, **quota}, [], "A doctune tenant (its id is metadata.name): display name, quotas "
                   "(doctune.spec.QuotaSpec; null or absent: unlimited) and an optional dedicated RayCluster.")


def structural(schema: dict[str, Any]) -> dict[str, Any]:
    """A pydantic JSON schema as a Kubernetes structural schema (see the module docstring)."""
    defs = schema.get("$defs", {})
    return _convert(schema, defs)


def _convert(node: Any, defs: dict[str, Any]) -> Any:
    if isinstance(node, list):
        return [_convert(n, defs) for n in node]
    if not isinstance(node, dict):
        return node
    if "$ref" in node:
        target = copy.deepcopy(defs[node["$ref"].rsplit("/", 1)[-1]])
        merged = {**target, **{k: v for k, v in node.items() if k != "$ref"}}
        return _convert(merged, defs)
    node = dict(node)
    if "anyOf" in node:
        node = _nullable(node, defs)
    out: dict[str, Any] = {}
    for key, value in node.items():
        if key in ("$defs", "title", "default", "examples"):
            continue
        if key == "properties":
            out[key] = {k: _convert(v, defs) for k, v in value.items()}
        elif key == "additionalProperties":
            if isinstance(value, dict) and value:
                out[key] = _convert(value, defs)
            elif value is True or value == {}:
                out["x-kubernetes-preserve-unknown-fields"] = True
            # additionalProperties: false (extra="forbid"): Kubernetes prunes unknown fields instead
        elif key == "const":
            out["enum"] = [value]
        elif key in ("exclusiveMinimum", "exclusiveMaximum") and not isinstance(value, bool):
            out["minimum" if key == "exclusiveMinimum" else "maximum"] = value
            out[key] = True
        else:
            out[key] = _convert(value, defs)
    if "type" not in out and "x-kubernetes-preserve-unknown-fields" not in out:
        out["x-kubernetes-preserve-unknown-fields"] = True  # Any: a value of any type
    if out.get("type") == "object" and "properties" not in out and "additionalProperties" not in out:
        out["x-kubernetes-preserve-unknown-fields"] = True
    return out


def _nullable(node: dict[str, Any], defs: dict[str, Any]) -> dict[str, Any]:
    options = node.pop("anyOf")
    kept = [o for o in options if o.get("type") != "null"]
    if len(kept) != 1:
        raise ValueError(f"cannot make anyOf {options} structural: one non-null option is needed")
    inner = _convert(kept[0], defs)
    merged = {**inner, **node}
    if len(kept) < len(options):
        merged["nullable"] = True
    return merged


KINDS: list[dict[str, Any]] = [
    {"kind": "FineTuneJob", "plural": "finetunejobs", "scope": "Namespaced", "short": ["ftj"], "spec": finetunejob_spec,
     "about": "A doctune fine-tuning job, run under the tenant of its namespace."},
    {"kind": "Sweep", "plural": "sweeps", "scope": "Namespaced", "short": [], "spec": sweep_spec,
     "about": "A doctune hyper-parameter sweep; its status carries the leaderboard."},
    {"kind": "ModelDeployment", "plural": "modeldeployments", "scope": "Namespaced", "short": ["mdep"],
     "spec": modeldeployment_spec, "about": "A registered model served behind an autoscaled endpoint."},
    {"kind": "Tenant", "plural": "tenants", "scope": "Cluster", "short": [], "spec": tenant_spec,
     "about": "A doctune tenant: its namespace, quotas, API-key Secret and optional RayCluster."},
]

STATUS = {
    "type": "object",
    "description": "Written by the doctune operator: the object's state, progress and conditions.",
    "x-kubernetes-preserve-unknown-fields": True,
    "properties": {
        "state": {"type": "string", "description": "The doctune object's state (e.g. queued, running, succeeded)."},
        "progress": {"type": "string", "description": "How far it has got, for people (e.g. '120/200 steps')."},
        "id": {"type": "string", "description": "The doctune object's id behind this resource."},
        "conditions": {"type": "array", "description": "Standard conditions (type, status, reason, message).",
                       "items": {"type": "object", "x-kubernetes-preserve-unknown-fields": True}},
    },
}


def crd(entry: dict[str, Any]) -> dict[str, Any]:
    names = {"kind": entry["kind"], "listKind": f"{entry['kind']}List", "plural": entry["plural"],
             "singular": entry["kind"].lower()}
    if entry["short"]:
        names["shortNames"] = entry["short"]
    schema = {"type": "object", "description": entry["about"],
              "properties": {"apiVersion": {"type": "string"}, "kind": {"type": "string"},
                             "metadata": {"type": "object"}, "spec": entry["spec"](), "status": STATUS}}
    columns = [{"name": "State", "type": "string", "jsonPath": ".status.state"},
               {"name": "Progress", "type": "string", "jsonPath": ".status.progress"},
               {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"}]
    if entry["kind"] != "Tenant":  # a Tenant may leave everything at its defaults
        schema["required"] = ["spec"]
    return {
        "apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
        "metadata": {"name": f"{entry['plural']}.{GROUP}",
                     "annotations": {"doctune.io/generated-by": "make crds (operators/gen_crds.py)"}},
        "spec": {"group": GROUP, "names": names, "scope": entry["scope"],
                 "versions": [{"name": VERSION, "served": True, "storage": True, "subresources": {"status": {}},
                               "additionalPrinterColumns": columns, "schema": {"openAPIV3Schema": schema}}]},
    }


def render_all() -> dict[str, str]:
    """File name -> YAML text of every CRD."""
    header = "# Generated by `make crds` (operators/gen_crds.py) from doctune.spec; do not edit.\n"
    return {f"{e['plural']}.{GROUP}.yaml": header + yaml.safe_dump(crd(e), sort_keys=False, width=120)
            for e in KINDS}


def stale_files() -> list[Path]:
    """Committed CRD files that differ from what the generator makes now (or are missing)."""
    out = []
    for folder in OUT_DIRS:
        for name, text in render_all().items():
            path = folder / name
            if not path.exists() or path.read_text() != text:
                out.append(path)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="only report stale files; exit 1 if any")
    args = parser.parse_args(argv)
    if args.check:
        stale = stale_files()
        for path in stale:
            print(f"stale: {path.relative_to(ROOT)} (run `make crds`)")
        return 1 if stale else 0
    for folder in OUT_DIRS:
        folder.mkdir(parents=True, exist_ok=True)
        for name, text in render_all().items():
            (folder / name).write_text(text)
            print(f"wrote {(folder / name).relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
