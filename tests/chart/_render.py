"""Running helm on charts/doctune (the helm that `make install` put beside the venv's python) and
walking the rendered objects: their Pod templates and containers."""

from __future__ import annotations

import shutil
import subprocess
import sys
from functools import cache
from pathlib import Path
from typing import Any, Iterator

import yaml

from tests.chart._schemas import ROOT, load_docs

CHART = ROOT / "charts" / "doctune"
CI_VALUES = sorted((CHART / "ci").glob("*.yaml"))
VALUE_SETS = [None, *CI_VALUES]  # None: the default values
# the API groups a cluster with KubeRay, the Prometheus Operator and Kueue serves
API_VERSIONS = ["ray.io/v1", "monitoring.coreos.com/v1", "kueue.x-k8s.io/v1beta2"]
RELEASE, NAMESPACE = "doctune", "doctune"


def helm_binary() -> str:
    found = shutil.which("helm", path=str(Path(sys.executable).parent)) or shutil.which("helm")
    if not found:
        raise AssertionError("no helm: run `make install` (platform/tools/install_helm.py puts helm in .venv/bin)")
    return found


def helm(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([helm_binary(), *args], capture_output=True, text=True, timeout=120, check=False)


def template_args(values: Path | None, sets: tuple[str, ...] = (), api_versions: tuple[str, ...] = tuple(API_VERSIONS)) -> list[str]:
    args = ["template", RELEASE, str(CHART), "-n", NAMESPACE, "--include-crds"]
    if values is not None:
        args += ["-f", str(values)]
    for version in api_versions:
        args += ["--api-versions", version]
    for s in sets:
        args += ["--set", s]
    return args


@cache
def render_text(values: Path | None, sets: tuple[str, ...] = ()) -> str:
    out = helm(*template_args(values, sets))
    assert out.returncode == 0, out.stderr
    return out.stdout


def render(values: Path | None, sets: tuple[str, ...] = ()) -> list[dict[str, Any]]:
    return load_docs(render_text(values, sets))


def values_of(values: Path | None) -> dict[str, Any]:
    """The chart's default values merged with a values file (one level of the file's keys deep is
    enough for what the tests read: existingSecret names)."""
    base = yaml.safe_load((CHART / "values.yaml").read_text())
    if values is not None:
        _merge(base, yaml.safe_load(values.read_text()) or {})
    return base


def _merge(base: dict, over: dict) -> None:
    for key, value in over.items():
        if isinstance(value, dict) and isinstance(base.get(key), dict):
            _merge(base[key], value)
        else:
            base[key] = value


def pod_templates(obj: dict[str, Any]) -> Iterator[tuple[str, dict[str, Any]]]:
    """``(where, pod template)`` of a workload: a Deployment's or StatefulSet's, or each group of a RayCluster."""
    if obj["kind"] in ("Deployment", "StatefulSet"):
        yield obj["metadata"]["name"], obj["spec"]["template"]
    elif obj["kind"] == "RayCluster":
        yield f"{obj['metadata']['name']}/head", obj["spec"]["headGroupSpec"]["template"]
        for group in obj["spec"].get("workerGroupSpecs", []):
            yield f"{obj['metadata']['name']}/{group['groupName']}", group["template"]


def containers(template: dict[str, Any]) -> Iterator[dict[str, Any]]:
    spec = template["spec"]
    yield from spec.get("initContainers", [])
    yield from spec["containers"]
