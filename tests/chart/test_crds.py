"""The doctune CRDs are what `make crds` generates from the pydantic specs now, they are structural
(the form the Kubernetes API server accepts), and the example custom resources in
docs/examples/k8s/ are valid against them and against the pydantic specs the API applies."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest
import yaml

from doctune.spec import DeploymentSpec, QuotaSpec, parse_job_spec, parse_sweep_spec
from tests.chart._schemas import ROOT, crd_schemas, load_docs, schema_errors

EXAMPLES = sorted((ROOT / "docs" / "examples" / "k8s").glob("*.yaml"))
KINDS = {"finetunejobs": ("FineTuneJob", "Namespaced", ["ftj"]), "sweeps": ("Sweep", "Namespaced", None),
         "modeldeployments": ("ModelDeployment", "Namespaced", ["mdep"]), "tenants": ("Tenant", "Cluster", None)}


def _generator():
    spec = importlib.util.spec_from_file_location("gen_crds", ROOT / "operators" / "gen_crds.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["gen_crds"] = module  # its pydantic models resolve their annotations there
    spec.loader.exec_module(module)
    return module


def test_committed_crds_are_what_make_crds_generates():
    stale = _generator().stale_files()
    assert not stale, f"run `make crds`: these differ from the pydantic specs: {[str(p) for p in stale]}"


@pytest.mark.parametrize("plural", sorted(KINDS))
def test_crd_names_scope_columns_and_status(plural):
    crd = yaml.safe_load((ROOT / "operators" / "crds" / f"{plural}.doctune.io.yaml").read_text())
    kind, scope, short = KINDS[plural]
    assert crd["metadata"]["name"] == f"{plural}.doctune.io"
    assert crd["spec"]["names"]["kind"] == kind and crd["spec"]["scope"] == scope
    assert crd["spec"]["names"].get("shortNames") == short
    (version,) = crd["spec"]["versions"]
    assert version["name"] == "v1alpha1" and version["subresources"] == {"status": {}}
    columns = {c["name"]: c["jsonPath"] for c in version["additionalPrinterColumns"]}
    assert columns == {"State": ".status.state", "Progress": ".status.progress", "Age": ".metadata.creationTimestamp"}


def _structural_problems(node, where="") -> list[str]:
    """The rules of a structural schema that a generator can break: a type on every node (unless
    it preserves unknown fields), no $ref/anyOf/oneOf/allOf/const/$defs, properties and
    additionalProperties never together."""
    problems = []
    if not isinstance(node, dict):
        return problems
    banned = {"$ref", "$defs", "anyOf", "oneOf", "allOf", "const", "definitions"} & set(node)
    if banned:
        problems.append(f"{where or '<root>'}: {sorted(banned)}")
    if "type" not in node and not node.get("x-kubernetes-preserve-unknown-fields"):
        problems.append(f"{where or '<root>'}: no type")
    if "properties" in node and "additionalProperties" in node:
        problems.append(f"{where}: properties with additionalProperties")
    for key, child in node.get("properties", {}).items():
        problems += _structural_problems(child, f"{where}.{key}")
    for key in ("items", "additionalProperties"):
        if isinstance(node.get(key), dict):
            problems += _structural_problems(node[key], f"{where}[{key}]")
    return problems


@pytest.mark.parametrize("plural", sorted(KINDS))
def test_crd_schemas_are_structural(plural):
    crd = yaml.safe_load((ROOT / "operators" / "crds" / f"{plural}.doctune.io.yaml").read_text())
    assert _structural_problems(crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]) == []


def test_chart_ships_the_same_crds():
    for path in (ROOT / "operators" / "crds").glob("*.yaml"):
        assert (ROOT / "charts" / "doctune" / "crds" / path.name).read_text() == path.read_text()


def _example(kind):
    (doc,) = [d for p in EXAMPLES for d in load_docs(p.read_text()) if d["kind"] == kind]
    return doc


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_example_custom_resources_are_valid_against_their_crds(path):
    schemas = crd_schemas(str(ROOT / "operators" / "crds"))
    for doc in load_docs(path.read_text()):
        assert schema_errors(doc, schemas[(doc["apiVersion"], doc["kind"])]) == []


def test_example_specs_are_valid_doctune_specs():
    parse_job_spec({**_example("FineTuneJob")["spec"], "tenant": "legal-team"})
    parse_sweep_spec({**_example("Sweep")["spec"], "tenant": "legal-team"})
    md = {k: v for k, v in _example("ModelDeployment")["spec"].items() if k != "promotion"}
    DeploymentSpec.model_validate({**md, "tenant": "legal-team"})
    tenant = _example("Tenant")["spec"]
    QuotaSpec.model_validate({k: v for k, v in tenant.items() if k in QuotaSpec.model_fields})


@pytest.mark.parametrize("kind, bad, field", [
    ("FineTuneJob", {"learning_rate": "fast"}, "spec.learning_rate"),
    ("FineTuneJob", {"tuning": {"method": "qlora"}}, "spec.tuning.method"),
    ("FineTuneJob", {"micro_batch_size": 0}, "spec.micro_batch_size"),
    ("Sweep", {"algorithm": "bayes"}, "spec.algorithm"),
    ("ModelDeployment", {"quantize": "int4"}, "spec.quantize"),
    ("Tenant", {"weight": 0}, "spec.weight"),
])
def test_a_bad_field_is_refused_by_the_crd_naming_the_field(kind, bad, field):
    doc = _example(kind)
    doc["spec"] = {**doc["spec"], **bad}
    schemas = crd_schemas(str(ROOT / "operators" / "crds"))
    errors = schema_errors(doc, schemas[(doc["apiVersion"], kind)])
    assert any(e.startswith(field) for e in errors), errors


def test_null_is_accepted_where_the_spec_allows_it():
    doc = _example("FineTuneJob")
    doc["spec"] = {**doc["spec"], "early_stopping": None, "max_steps": None}
    schemas = crd_schemas(str(ROOT / "operators" / "crds"))
    assert schema_errors(doc, schemas[("doctune.io/v1alpha1", "FineTuneJob")]) == []


def test_a_misspelled_field_is_refused():
    doc = _example("FineTuneJob")
    doc["spec"] = {**doc["spec"], "learning_rat": 0.001}
    schemas = crd_schemas(str(ROOT / "operators" / "crds"))
    assert any("learning_rat" in e for e in schema_errors(doc, schemas[("doctune.io/v1alpha1", "FineTuneJob")]))


def test_make_crds_check_reports_a_stale_file(tmp_path, monkeypatch, capsys):
    gen = _generator()
    for name, text in gen.render_all().items():
        (tmp_path / name).write_text(text)
    (tmp_path / "tenants.doctune.io.yaml").write_text("# edited by hand\n")
    monkeypatch.setattr(gen, "OUT_DIRS", [tmp_path])
    monkeypatch.setattr(gen, "ROOT", tmp_path.parent)
    assert gen.main(["--check"]) == 1
    out = capsys.readouterr().out
    assert "tenants.doctune.io.yaml (run `make crds`)" in out and "finetunejobs" not in out
