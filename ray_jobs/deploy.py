"""Deploy (or update) one doctune deployment as a Ray Serve application.

    python -m ray_jobs.deploy --deployment-id dep-...            (submitted by the platform)
    python -m ray_jobs.deploy --deployment-id dep-... --delete   (undeploy: its Serve application goes)

With ``quantize: int8`` the model is first evaluated fp32 and int8 on its test split
(``doctune.serve.quantize``) and the result stored on the deployment, unless it was
measured already for this model (a restore after a cluster restart, a change of replicas).

With ``multiplex: true`` the endpoint is a router over the shared application of its
model's task and base model (``doctune.serve.multiplex``), started here unless it runs
already. A shared application goes once no deploying or running multiplexed deployment
uses it (checked after every deploy and delete).
"""

from __future__ import annotations

import argparse
import sys


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m ray_jobs.deploy")
    ap.add_argument("--deployment-id", required=True)
    ap.add_argument("--delete", action="store_true", help="Delete the deployment's Serve application.")
    args = ap.parse_args(argv)

    import ray
    from ray import serve

    from doctune.errors import DoctuneError
    from doctune.serve.app import build_application
    from doctune.serve.multiplex import delete_unused_shared_apps, run_multiplexed
    from doctune.serve.quantize import measure_deployment
    from doctune.services._context import Platform
    from doctune.services.deployments import set_info, set_status
    from doctune.spec import DeploymentSpec
    from doctune.store.db import Deployment, Model

    def delete_unused() -> None:  # after the status is set: a deployment that goes no longer counts
        try:
            for name in delete_unused_shared_apps(p):
                print(f"deleted the shared application {name}: no multiplexed deployment uses it")
        except Exception as exc:  # the endpoint itself is fine; an unused application only costs memory
            print(f"could not delete unused shared applications: {exc}", file=sys.stderr)

    p = Platform()
    with p.db.session() as s:
        dep = s.get(Deployment, args.deployment_id)
        model = s.get(Model, dep.model_id)
    if args.delete:
        ray.init()
        serve.delete(f"{dep.tenant_id}-{dep.name}", _blocking=True)
        set_status(p, dep.id, "deleted", f"undeployed; model {model.id} stays registered")
        delete_unused()
        print(f"deployment {dep.id} deleted")
        return 0
    spec = DeploymentSpec.model_validate(dep.spec)  # fields added since it was stored get their defaults
    if spec.quantize == "int8" and not (dep.info or {}).get("quantization"):
        set_status(p, dep.id, "deploying", f"measuring int8 quantization of model {model.id} on its test split")
        try:
            record = measure_deployment(p, model)
        except Exception as exc:
            why = exc.message if isinstance(exc, DoctuneError) else f"{type(exc).__name__}: {exc}"
            set_status(p, dep.id, "failed", f"int8 quantization could not be measured: {why}"[-2000:]
                       + ("" if "quantize: none" in why else "; deploy with quantize: none"))
            print(f"deployment {dep.id} failed: {why}", file=sys.stderr)
            return 1
        set_info(p, dep.id, {**(dep.info or {}), "quantization": record})
        print(f"int8 quantization: {record['metric']} {record['fp32']:.4f} -> {record['int8']:.4f} "
              f"({record['change']:+.4f}) on {record['examples']} test examples in {record['seconds']:.1f}s")
    try:
        ray.init()
        serve.start(http_options={"host": "127.0.0.1" if p.settings.serve_port else "0.0.0.0",
                                  "port": p.settings.serve_port or 8000})
        if spec.multiplex:
            shared = run_multiplexed(p, dep, model, p.settings.home or None)
        else:
            serve.run(build_application(dep, model, p.settings.home or None),
                      name=f"{dep.tenant_id}-{dep.name}", route_prefix=dep.route, blocking=False)
    except Exception as exc:
        set_status(p, dep.id, "failed", str(exc)[-2000:])
        print(f"deployment {dep.id} failed: {exc}", file=sys.stderr)
        return 1
    where = f" from the shared application {shared}" if spec.multiplex else ""
    set_status(p, dep.id, "running", f"serving model {model.id} at {dep.route}{where}")
    delete_unused()
    print(f"deployment {dep.id} running at {dep.route}{where}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
