"""A Kubernetes API for tests: ``kmock``'s emulator served on a free local port from a thread of
its own, so that synchronous code (the ``kubernetes`` client, ``kopf.testing.KopfRunner``) talks
to it over HTTP as it would to a real API server. :meth:`KubeEmulator.kubeconfig` writes a
kubeconfig that both kopf and the ``kubernetes`` client read through ``KUBECONFIG``.

The emulator keeps objects as JSON and merges patches; it does not validate them against CRDs or
run controllers (no garbage collection), so tests validate what they care about themselves."""

from __future__ import annotations

import asyncio
import functools
import threading
from pathlib import Path
from typing import Any

import yaml

CRDS = Path(__file__).parent / "crds"

# the resources the emulator announces in API discovery (kopf discovers what it watches)
DOCTUNE = {"tenants": ("Tenant", False), "finetunejobs": ("FineTuneJob", True), "sweeps": ("Sweep", True),
           "modeldeployments": ("ModelDeployment", True)}
RAY = {"rayjobs": ("RayJob", True), "rayclusters": ("RayCluster", True)}
# what kopf watches besides its resources (it waits for the CRDs' list before it watches anything)
BACKBONE = {"apiextensions.k8s.io/v1/customresourcedefinitions": ("CustomResourceDefinition", False),
            "v1/namespaces": ("Namespace", False), "v1/secrets": ("Secret", True), "v1/events": ("Event", True),
            "v1/resourcequotas": ("ResourceQuota", True), "v1/limitranges": ("LimitRange", True),
            "v1/nodes": ("Node", False), "v1/pods": ("Pod", True), "apps/v1/deployments": ("Deployment", True)}


def _patch_namespace_paths(parsing) -> None:
    """kmock 0.8 reads ``/api/v1/namespaces[/<name>]`` as a namespaced path and fails (500) on it:
    make those paths the cluster-scoped ``namespaces`` resource, as a real API server does."""
    if getattr(parsing.parse_path, "doctune_patched", False):
        return
    original = parsing.parse_path

    def parse_path(path: str):
        parts = path.strip("/").split("/")
        if parts[:3] == ["api", "v1", "namespaces"] and (
                len(parts) <= 4 or (len(parts) == 5 and parts[4] in ("status", "finalize"))):
            return parsing.ParsedPath("", "v1", "namespaces", None, parts[3] if len(parts) > 3 else None,
                                      parts[4] if len(parts) > 4 else None)
        return original(path)

    parse_path.doctune_patched = True
    parsing.parse_path = parse_path


def _emulator_class():
    """kmock's emulator, plus what kopf relies on: each object gets a uid, a creationTimestamp and a
    resourceVersion that every change bumps."""
    import datetime
    import itertools
    import uuid

    import kmock
    from kmock._internal import parsing

    versions = itertools.count(1)
    _patch_namespace_paths(parsing)

    class Emulator(kmock.KubernetesEmulator):
        async def _handle(self, request):
            data = request.data
            if request.resource is not None and request.action == kmock.action.CREATE and isinstance(data, dict):
                meta = data.setdefault("metadata", {})
                meta.update({"uid": str(uuid.uuid4()), "resourceVersion": str(next(versions)),
                             "creationTimestamp": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")})
            elif request.resource is not None and request.action == kmock.action.UPDATE:
                if isinstance(data, dict):
                    data.setdefault("metadata", {})["resourceVersion"] = str(next(versions))
                elif isinstance(data, list):  # a JSON patch: kopf tests the resourceVersion it last saw; the
                    # emulator's watch stream can lag its store, so optimistic concurrency is not emulated
                    data[:] = [op for op in data if not (op.get("op") == "test" and op.get("path") == "/metadata/resourceVersion")]
                    data.append({"op": "add", "path": "/metadata/resourceVersion", "value": str(next(versions))})
            return await super()._handle(request)

    return Emulator


class KubeEmulator:
    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="kmock", daemon=True)
        self.url = ""

    def __enter__(self) -> "KubeEmulator":
        self.thread.start()
        self.url = asyncio.run_coroutine_threadsafe(self._start(), self.loop).result(30)
        return self

    def __exit__(self, *exc: Any) -> None:
        asyncio.run_coroutine_threadsafe(self._stop(), self.loop).result(30)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)

    async def _start(self) -> str:
        import kmock

        self.emulator = _emulator_class()()
        await self.emulator.__aenter__()
        for group, version, kinds in (("doctune.io", "v1alpha1", DOCTUNE), ("ray.io", "v1", RAY)):
            for plural, (kind, namespaced) in kinds.items():
                self.emulator.resources[f"{group}/{version}/{plural}"] = kmock.ResourceInfo(
                    kind=kind, singular=kind.lower(), namespaced=namespaced, subresources={"status"},
                    verbs={"list", "watch", "get", "create", "patch", "update", "delete"})
        for key, (kind, namespaced) in BACKBONE.items():
            self.emulator.resources[key] = kmock.ResourceInfo(
                kind=kind, singular=kind.lower(), namespaced=namespaced,
                verbs={"list", "watch", "get", "create", "patch", "update", "delete"})
        self.server = kmock.Server(self.emulator)
        await self.server.__aenter__()
        return str(self.server.url).rstrip("/")

    async def _stop(self) -> None:
        await self.server.__aexit__(None, None, None)
        await self.emulator.__aexit__(None, None, None)

    def kubeconfig(self, path: Path) -> Path:
        path.write_text(yaml.safe_dump({
            "apiVersion": "v1", "kind": "Config", "current-context": "kmock",
            "clusters": [{"name": "kmock", "cluster": {"server": self.url}}],
            "users": [{"name": "kmock", "user": {"token": "kmock"}}],
            "contexts": [{"name": "kmock", "context": {"cluster": "kmock", "user": "kmock", "namespace": "default"}}],
        }))
        return path

    def api_client(self):
        """A ``kubernetes`` ApiClient for this emulator (what a test uses as ``kubectl``)."""
        from kubernetes import client

        config = client.Configuration(host=self.url)
        config.api_key = {"authorization": "Bearer kmock"}
        return client.ApiClient(config)


@functools.cache
def crd_schema(file: str, version: str) -> dict[str, Any]:
    """The ``openAPIV3Schema`` of one version of a CRD in tests/operator/crds/."""
    crd = yaml.load((CRDS / file).read_text(), Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))
    return next(v for v in crd["spec"]["versions"] if v["name"] == version)["schema"]["openAPIV3Schema"]


def unknown_fields(obj: Any, schema: dict[str, Any], path: str = "") -> list[str]:
    """Fields of ``obj`` that the structural ``schema`` does not declare: a real API server would drop
    them silently (pruning), so a test must catch them (``jsonschema`` alone does not)."""
    if schema.get("x-kubernetes-preserve-unknown-fields") or not isinstance(obj, (dict, list)):
        return []
    if isinstance(obj, list):
        items = schema.get("items") or {}
        return [p for i, v in enumerate(obj) for p in unknown_fields(v, items, f"{path}[{i}]")]
    props = schema.get("properties")
    if props is None:
        extra = schema.get("additionalProperties")
        return [p for k, v in obj.items() for p in unknown_fields(v, extra, f"{path}.{k}")] \
            if isinstance(extra, dict) else []
    out = [f"{path}.{k}" for k in obj if k not in props and not (path == "" and k in ("apiVersion", "kind"))]
    return out + [p for k, v in obj.items() if k in props for p in unknown_fields(v, props[k], f"{path}.{k}")]


def validate(obj: dict[str, Any], schema: dict[str, Any]) -> list[str]:
    """Every schema error and every unknown field of ``obj`` (empty when it is valid)."""
    import jsonschema

    errors = [f"{'.'.join(map(str, e.absolute_path))}: {e.message}"
              for e in jsonschema.Draft7Validator(schema).iter_errors(obj)]
    return errors + [f"{p}: not in the schema" for p in unknown_fields(obj, schema)]
