"""The deploy driver: what ``python -m ray_jobs.deploy`` runs on the Ray cluster.

:func:`deploy` starts (or updates) one deployment's Serve application and records the
outcome on the deployment; :func:`undeploy` deletes it. With ``quantize: int8`` the model is
first evaluated fp32 and int8 on its test split (``doctune.serve.quantize``) and the result
stored on the deployment, unless it was measured already for this model (a restore after a
cluster restart, a change of replicas). With ``multiplex: true`` the endpoint is a router
over the shared application of its model's task and base model (``doctune.serve.multiplex``),
started here unless it runs already; a shared application goes once no deploying or running
multiplexed deployment uses it (checked after every deploy and delete).
"""

from __future__ import annotations

import sys

from doctune.errors import DoctuneError
from doctune.services import Platform
from doctune.services.deployments import set_info, set_status
from doctune.spec import DeploymentSpec
from doctune.states import DeploymentState
from doctune.store.db import Deployment, Model

__all__ = ["deploy", "undeploy"]


def _load(p: Platform, deployment_id: str) -> tuple[Deployment, Model]:
    with p.db.session() as s:
        dep = s.get(Deployment, deployment_id)
        if dep is None:
            raise DoctuneError(f"deployment {deployment_id!r} not found", "not_found", field="deployment_id")
        return dep, s.get(Model, dep.model_id)


def _delete_unused_shared_apps(p: Platform) -> None:
    """After the status is set: a deployment that goes no longer counts."""
    from doctune.serve.multiplex import delete_unused_shared_apps

    try:
        for name in delete_unused_shared_apps(p):
            print(f"deleted the shared application {name}: no multiplexed deployment uses it")
    except Exception as exc:  # the endpoint itself is fine; an unused application only costs memory
        print(f"could not delete unused shared applications: {exc}", file=sys.stderr)


def undeploy(deployment_id: str, p: Platform | None = None) -> int:
    import ray
    from ray import serve

    from doctune.serve.names import app_name

    p = p or Platform()
    dep, model = _load(p, deployment_id)
    ray.init()
    serve.delete(app_name(dep), _blocking=True)
    _drop_legacy_app(p, dep)  # one deployed before applications were named by id, and never since
    set_status(p, dep.id, DeploymentState.DELETED, f"undeployed; model {model.id} stays registered")
    _delete_unused_shared_apps(p)
    print(f"deployment {dep.id} deleted")
    return 0


def _measure_int8(p: Platform, dep: Deployment, model: Model) -> bool:
    """Measure int8's accuracy change once per model; False (the deployment failed) if it cannot."""
    from doctune.serve.quantize import measure_deployment

    set_status(p, dep.id, DeploymentState.DEPLOYING, f"measuring int8 quantization of model {model.id} on its test split")
    try:
        record = measure_deployment(p, model)
    except Exception as exc:
        why = exc.message if isinstance(exc, DoctuneError) else f"{type(exc).__name__}: {exc}"
        set_status(p, dep.id, DeploymentState.FAILED, f"int8 quantization could not be measured: {why}"[-2000:]
                   + ("" if "quantize: none" in why else "; deploy with quantize: none"))
        print(f"deployment {dep.id} failed: {why}", file=sys.stderr)
        return False
    set_info(p, dep.id, {**(dep.info or {}), "quantization": record})
    print(f"int8 quantization: {record['metric']} {record['fp32']:.4f} -> {record['int8']:.4f} "
          f"({record['change']:+.4f}) on {record['examples']} test examples in {record['seconds']:.1f}s")
    return True


def _drop_legacy_app(p: Platform, dep: Deployment) -> None:
    """Delete the application this deployment ran under its old name (``<tenant>-<name>``),
    which still holds its route after an upgrade, unless that name is some deployment's id."""
    from ray import serve

    from doctune.serve.names import legacy_app_name

    legacy = legacy_app_name(dep)
    if legacy not in serve.status().applications:
        return
    with p.db.session() as s:
        if s.get(Deployment, legacy) is not None:
            return
    serve.delete(legacy, _blocking=True)
    print(f"deleted the application {legacy}: deployment {dep.id} ran under that name before upgrading")


def _serve(p: Platform, dep: Deployment, model: Model, spec: DeploymentSpec) -> str:
    """Start the application(s); returns where the endpoint's model is served from."""
    import ray
    from ray import serve

    from doctune.serve.app import build_application
    from doctune.serve.multiplex import run_multiplexed
    from doctune.serve.names import app_name

    ray.init()
    serve.start(http_options={"host": "127.0.0.1" if p.settings.serve_port else "0.0.0.0",
                              "port": p.settings.serve_port or 8000})
    _drop_legacy_app(p, dep)
    if spec.multiplex:
        return f" from the shared application {run_multiplexed(p, dep, model, p.settings.home or None)}"
    serve.run(build_application(dep, model, p.settings.home or None), name=app_name(dep), route_prefix=dep.route,
              blocking=False)
    return ""


def deploy(deployment_id: str, p: Platform | None = None) -> int:
    p = p or Platform()
    dep, model = _load(p, deployment_id)
    spec = DeploymentSpec.from_stored(dep.spec)  # fields added since get their defaults, dropped ones go
    if spec.quantize == "int8" and not (dep.info or {}).get("quantization") and not _measure_int8(p, dep, model):
        return 1
    try:
        where = _serve(p, dep, model, spec)
    except Exception as exc:
        set_status(p, dep.id, DeploymentState.FAILED, str(exc)[-2000:])
        print(f"deployment {dep.id} failed: {exc}", file=sys.stderr)
        return 1
    set_status(p, dep.id, DeploymentState.RUNNING, f"serving model {model.id} at {dep.route}{where}")
    _delete_unused_shared_apps(p)
    print(f"deployment {dep.id} running at {dep.route}{where}")
    return 0
