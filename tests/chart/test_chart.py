"""charts/doctune installs what a platform team needs and nothing unsafe: `helm lint --strict` and
`helm template --include-crds` pass with the default values and every values file in
charts/doctune/ci/; the output passes `kubernetes-validate --strict`, its KubeRay and Kueue objects
validate against those projects' CRDs and its doctune CRDs are the generated ones; Service and
workload selectors match Pod labels, every referenced Secret exists (rendered, or named in values
as an existing one), Service ports agree with container ports, no container runs as root; bad
values fail naming the key and the --set that fixes them."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.chart._render import (CHART, CI_VALUES, VALUE_SETS, containers, helm, pod_templates, render,
                                 render_text, template_args, values_of)
from tests.chart._schemas import ROOT, THIRD_PARTY_CRDS, crd_schemas, schema_errors

IDS = ["default" if v is None else v.stem for v in VALUE_SETS]
# kinds kubernetes-validate has no schema for, and where their schemas come from instead
CRD_FOLDERS = {"ray.io/v1": THIRD_PARTY_CRDS / "kuberay", "kueue.x-k8s.io/v1beta2": THIRD_PARTY_CRDS / "kueue",
               "doctune.io/v1alpha1": ROOT / "operators" / "crds"}
PROMETHEUS_OPERATOR = {"ServiceMonitor", "PodMonitor", "PrometheusRule"}  # no CRDs shipped to check against
values_sets = pytest.mark.parametrize("values", VALUE_SETS, ids=IDS)


def _kind(docs, kind):
    return [d for d in docs if d["kind"] == kind]


def test_there_are_at_least_three_ci_values_files():
    assert {p.stem for p in CI_VALUES} >= {"external-s3-postgresql-values", "gpu-rayjob-values", "minimal-values"}


@values_sets
def test_helm_lint_strict(values):
    args = ["lint", "--strict", str(CHART), "--set", "skipCapabilityChecks=true"]
    out = helm(*args, *(["-f", str(values)] if values else []))
    assert out.returncode == 0, out.stdout + out.stderr
    assert "0 chart(s) failed" in out.stdout


@values_sets
def test_rendered_objects_pass_kubernetes_validate_strict(values, tmp_path):
    rendered = tmp_path / "rendered.yaml"
    rendered.write_text(render_text(values))
    cli = shutil.which("kubernetes-validate", path=str(Path(sys.executable).parent)) or "kubernetes-validate"
    out = subprocess.run([cli, "--strict", str(rendered)], capture_output=True, text=True, timeout=300, check=False)
    assert out.returncode == 0, out.stdout + out.stderr
    unchecked = set(re.findall(r"Couldn't find schema for kind (\w+) with api version (\S+)", out.stdout + out.stderr))
    for kind, api_version in unchecked:  # custom resources: checked against their CRDs below
        assert api_version in CRD_FOLDERS or kind in PROMETHEUS_OPERATOR, (kind, api_version)
    assert "passed for resource deployment/doctune-api" in out.stdout


@values_sets
def test_custom_resources_are_valid_against_their_crds(values):
    checked = 0
    for doc in render(values):
        folder = CRD_FOLDERS.get(doc["apiVersion"])
        if folder is None:
            continue
        schema = crd_schemas(str(folder))[(doc["apiVersion"], doc["kind"])]
        assert schema_errors(doc, schema) == [], f"{doc['kind']}/{doc['metadata']['name']}"
        checked += 1
    assert checked >= 1  # the RayCluster at least


@values_sets
def test_the_chart_ships_the_generated_crds(values):
    rendered = {d["metadata"]["name"]: d for d in _kind(render(values), "CustomResourceDefinition")}
    for path in sorted((ROOT / "operators" / "crds").glob("*.yaml")):
        generated = yaml.safe_load(path.read_text())
        assert rendered[generated["metadata"]["name"]] == generated


def _pod_labels(docs):
    return {where: tpl["metadata"]["labels"] for d in docs for where, tpl in pod_templates(d)}


@values_sets
def test_selectors_match_pod_labels(values):
    docs = render(values)
    for d in _kind(docs, "Deployment") + _kind(docs, "StatefulSet"):
        selector = d["spec"]["selector"]["matchLabels"]
        labels = d["spec"]["template"]["metadata"]["labels"]
        assert selector.items() <= labels.items(), d["metadata"]["name"]
    pods = _pod_labels(docs)
    for svc in _kind(docs, "Service"):
        matched = [w for w, labels in pods.items() if svc["spec"]["selector"].items() <= labels.items()]
        assert len(matched) == 1, f"Service {svc['metadata']['name']} selects {matched}"


@values_sets
def test_service_ports_agree_with_container_ports(values):
    docs = render(values)
    templates = {w: tpl for d in docs for w, tpl in pod_templates(d)}
    for svc in _kind(docs, "Service"):
        (where,) = [w for w, tpl in templates.items() if svc["spec"]["selector"].items() <= tpl["metadata"]["labels"].items()]
        ports = {p["name"]: p["containerPort"] for c in containers(templates[where]) for p in c.get("ports", [])}
        for port in svc["spec"]["ports"]:
            target = port["targetPort"]
            assert target in ports or target in ports.values(), f"Service {svc['metadata']['name']} port {port}"
    # the URLs handed to the other components name the API Service's port, by a name that also
    # resolves from a tenant's namespace (its dedicated Ray cluster's jobs report to the API)
    api_svc = next(s for s in _kind(docs, "Service") if s["metadata"]["name"] == "doctune-api")
    api_url = f"http://doctune-api.doctune.svc:{api_svc['spec']['ports'][0]['port']}"  # helm's release namespace here
    for where, tpl in templates.items():
        for c in containers(tpl):
            for env in c.get("env", []):
                if env["name"] == "DOCTUNE_API_URL":
                    assert env["value"] == api_url, where


def _secret_refs(docs):
    """``(Secret name, key or None, where)`` of every reference to a Secret in the render."""
    for d in docs:
        for where, tpl in pod_templates(d):
            for c in containers(tpl):
                for env in c.get("env", []):
                    ref = env.get("valueFrom", {}).get("secretKeyRef")
                    if ref:
                        yield ref["name"], ref["key"], f"{where}/{c['name']}/{env['name']}"
        if d["kind"] == "RayCluster":
            yield d["spec"]["authOptions"]["secretName"], "auth_token", "RayCluster authOptions"
        if d["kind"] == "Ingress":
            for tls in d["spec"].get("tls", []):
                yield tls["secretName"], None, "Ingress tls"


@values_sets
def test_referenced_secrets_exist_in_the_render_or_are_named_in_values(values):
    docs = render(values)
    rendered = {s["metadata"]["name"]: s.get("data", {}) for s in _kind(docs, "Secret")}
    text = yaml.safe_dump(values_of(values))
    refs = list(_secret_refs(docs))
    assert refs
    for name, key, where in refs:
        if name in rendered:
            assert key is None or key in rendered[name], f"{where}: Secret {name} has no key {key}"
        else:
            assert f"existingSecret: {name}" in text or f"secretName: {name}" in text, f"{where}: Secret {name} is nowhere"


@values_sets
def test_no_container_runs_as_root_and_every_one_is_locked_down(values):
    docs = render(values)
    seen = 0
    for d in docs:
        for where, tpl in pod_templates(d):
            pod = tpl["spec"].get("securityContext", {})
            for c in containers(tpl):
                ctx = {**pod, **c.get("securityContext", {})}
                name = f"{where}/{c['name']}"
                assert ctx.get("runAsNonRoot") is True and ctx.get("runAsUser", 1) != 0, name
                assert ctx.get("allowPrivilegeEscalation") is False, name
                assert "ALL" in ctx.get("capabilities", {}).get("drop", []), name
                assert c["resources"].get("requests") and c["resources"].get("limits"), name
                seen += 1
    assert seen >= 3


@values_sets
def test_no_credential_is_a_plain_value(values):
    docs = render(values)
    assert not _kind(docs, "ConfigMap") or all(
        not re.search(r"(?i)key|password|token|secret", k) for cm in _kind(docs, "ConfigMap") for k in cm.get("data", {}))
    for d in docs:
        for where, tpl in pod_templates(d):
            for c in containers(tpl):
                for env in c.get("env", []):
                    if re.search(r"ACCESS_KEY|SECRET_KEY|ADMIN_KEY|PASSWORD|AUTH_TOKEN|DATABASE_URL", env["name"]):
                        assert "valueFrom" in env, f"{where}/{c['name']}: {env['name']} is a plain value"


def test_ray_processes_get_no_credentials():
    (ray,) = _kind(render(None), "RayCluster")
    for where, tpl in pod_templates(ray):
        for c in containers(tpl):
            names = {e["name"] for e in c.get("env", [])}
            assert "DOCTUNE_CREDENTIALS_FROM_ENV" in names, where
            assert not names & {"DOCTUNE_DATABASE_URL", "DOCTUNE_S3_ACCESS_KEY", "DOCTUNE_S3_SECRET_KEY", "DOCTUNE_ADMIN_KEY"}


def test_raycluster_has_token_auth_autoscaling_and_the_gpu_group():
    (ray,) = _kind(render(CHART / "ci" / "gpu-rayjob-values.yaml"), "RayCluster")
    spec = ray["spec"]
    assert spec["authOptions"]["mode"] == "token" and spec["enableInTreeAutoscaling"] is True
    autoscaler = spec["autoscalerOptions"]  # a sidecar of the head Pod (whose Pod securityContext applies too)
    assert autoscaler["securityContext"]["runAsNonRoot"] is True and autoscaler["resources"]["limits"]
    assert autoscaler["securityContext"]["capabilities"]["drop"] == ["ALL"]
    groups = {g["groupName"]: g for g in spec["workerGroupSpecs"]}
    assert (groups["cpu"]["minReplicas"], groups["cpu"]["maxReplicas"]) == (0, 8)
    gpu = groups["gpu"]
    (worker,) = gpu["template"]["spec"]["containers"]
    assert worker["resources"]["limits"]["nvidia.com/gpu"] == "2" and gpu["rayStartParams"]["num-gpus"] == "2"
    assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in gpu["template"]["spec"]["tolerations"]
    assert gpu["template"]["spec"]["nodeSelector"] == {"nvidia.com/gpu.present": "true"}
    assert "gpu" not in {g["groupName"] for g in _kind(render(None), "RayCluster")[0]["spec"]["workerGroupSpecs"]}


def _env(docs, deployment, container):
    (d,) = [d for d in _kind(docs, "Deployment") if d["metadata"]["name"] == deployment]
    (c,) = [c for c in d["spec"]["template"]["spec"]["containers"] if c["name"] == container]
    return {e["name"]: e.get("value") for e in c["env"]}


def test_runner_value_picks_the_adapter_and_only_rayjob_gets_rayjob_rights():
    shared = render(None)
    assert _env(shared, "doctune-api", "api")["DOCTUNE_RUNNER"] == "shared"
    assert [r["metadata"]["name"] for r in _kind(shared, "ClusterRole")] == ["doctune-operator"]
    assert not _kind(shared, "Role") and "doctune-job-env" not in {s["metadata"]["name"] for s in _kind(shared, "Secret")}
    rayjob = render(CHART / "ci" / "gpu-rayjob-values.yaml")
    env = _env(rayjob, "doctune-api", "api")
    assert env["DOCTUNE_RUNNER"] == "rayjob" and env["DOCTUNE_KUBE_NAMESPACE"] == "doctune"
    assert env["DOCTUNE_RAYJOB_OWNER"] == "apps/v1/deployments/doctune-api"
    assert env["DOCTUNE_RAYJOB_IMAGE"] == "ghcr.io/doctune/doctune:0.1.0"
    assert env["DOCTUNE_RAYJOB_ENV_SECRET"] == "doctune-job-env"
    (role,) = _kind(rayjob, "Role")  # namespaced: the RayJobs live in the release namespace
    rules = {(r["apiGroups"][0], r["resources"][0]): r for r in role["rules"]}
    assert set(rules) == {("ray.io", "rayjobs"), ("apps", "deployments")}
    assert rules[("apps", "deployments")]["resourceNames"] == ["doctune-api"]
    assert rules[("apps", "deployments")]["verbs"] == ["get"]


def _secrets(docs):
    import base64

    return {d["metadata"]["name"]: {k: base64.b64decode(v).decode() for k, v in d.get("data", {}).items()}
            for d in _kind(docs, "Secret")}


def test_generated_credentials_agree_between_the_secrets_that_carry_them():
    secrets = _secrets(render(CHART / "ci" / "gpu-rayjob-values.yaml"))
    job, minio, pg = secrets["doctune-job-env"], secrets["doctune-minio-root"], secrets["doctune-postgresql"]
    assert (job["DOCTUNE_S3_ACCESS_KEY"], job["DOCTUNE_S3_SECRET_KEY"]) == (minio["accessKey"], minio["secretKey"])
    assert job["DOCTUNE_DATABASE_URL"] == pg["url"]
    assert pg["url"] == f"postgresql+psycopg://doctune:{pg['password']}@doctune-postgresql:5432/doctune"
    assert re.fullmatch(r"dtk_[a-z0-9]{12}_[A-Za-z0-9]{32}", secrets["doctune-admin-key"]["admin-key"])
    assert len(secrets["doctune-ray-token"]["auth_token"]) == 48 and len(minio["secretKey"]) == 40
    assert "DOCTUNE_ADMIN_KEY" not in job  # RayJob pods never get the admin key


def test_rayjob_with_external_stores_needs_their_secrets_in_the_namespace_first():
    out = helm(*template_args(CHART / "ci" / "external-s3-postgresql-values.yaml", ("runner=rayjob",)))
    assert out.returncode != 0 and "Secret acme-doctune-db (key url) is not in namespace doctune: create it first" in out.stderr


def test_operator_rbac_is_least_privilege():
    (role,) = [r for r in _kind(render(None), "ClusterRole") if r["metadata"]["name"] == "doctune-operator"]
    verbs = {(g, res): set(rule["verbs"]) for rule in role["rules"] for g in rule["apiGroups"] for res in rule["resources"]}
    assert not any("*" in v for v in verbs.values()) and not any(res == "*" for _, res in verbs)
    assert verbs[("", "secrets")] == {"get", "create", "patch", "delete"}  # no list/watch of every Secret
    assert {"finetunejobs/status", "tenants/status"} <= {res for _, res in verbs}
    assert ("ray.io", "rayclusters") in verbs


def test_kueue_renders_a_fair_sharing_cluster_queue_and_a_weighted_local_queue_per_tenant():
    docs = render(CHART / "ci" / "kueue-values.yaml")
    (cq,) = _kind(docs, "ClusterQueue")
    assert cq["spec"]["admissionScope"]["admissionMode"] == "UsageBasedAdmissionFairSharing"
    queues = {q["metadata"]["namespace"]: q for q in _kind(docs, "LocalQueue")}
    assert {ns: q["spec"].get("fairSharing", {}).get("weight") for ns, q in queues.items()} == {
        "doctune": None, "legal-team": "2", "support": "1", "research": "0.5"}
    assert all(q["spec"]["clusterQueue"] == cq["metadata"]["name"] for q in queues.values())
    assert all(q["metadata"]["name"] == cq["metadata"]["name"] for q in queues.values())
    assert _env(docs, "doctune-api", "api")["DOCTUNE_RAYJOB_QUEUE"] == cq["metadata"]["name"]


def test_prometheus_rule_has_the_four_alerts():
    (rule,) = _kind(render(CHART / "ci" / "gpu-rayjob-values.yaml"), "PrometheusRule")
    alerts = {r["alert"]: r["expr"] for g in rule["spec"]["groups"] for r in g["rules"]}
    assert set(alerts) == {"DoctuneJobStuck", "DoctuneQueueWaitHigh", "DoctuneEndpointErrorRate", "DoctuneEndpointLatencyP99"}
    assert "> 900" in alerts["DoctuneQueueWaitHigh"]  # queueWaitMinutes: 15


def test_console_points_at_the_api_service():
    (console,) = [d for d in _kind(render(None), "Deployment") if d["metadata"]["name"] == "doctune-console"]
    cmd = console["spec"]["template"]["spec"]["containers"][0]["command"]
    assert cmd[:3] == ["python", "-m", "doctune.console"]
    assert cmd[cmd.index("--api-url") + 1] == "http://doctune-api:8080"


@pytest.mark.parametrize("sets, message", [
    (["objectStore.mode=external", "objectStore.external.existingSecret=s3"], "--set objectStore.external.endpoint="),
    (["objectStore.mode=external", "objectStore.external.endpoint=https://s3.example.com"],
     "--set objectStore.external.existingSecret="),
    (["postgresql.mode=external"], "--set postgresql.external.existingSecret="),
    (["ingress.enabled=true"], "--set ingress.host="),
    (["ingress.enabled=true", "ingress.host=d.example.com", "ingress.tls.enabled=true"], "--set ingress.tls.secretName="),
    (["rayCluster.cpuWorkers.minReplicas=5", "rayCluster.cpuWorkers.maxReplicas=2"],
     "rayCluster.cpuWorkers.minReplicas (5) must be <= rayCluster.cpuWorkers.maxReplicas (2): --set rayCluster.cpuWorkers.maxReplicas=5"),
    (["kueue.enabled=true", "kueue.tenants[0].name=a"], "--set runner=rayjob"),
])
def test_inconsistent_values_fail_naming_the_key_and_the_fix(sets, message):
    out = helm(*template_args(None, tuple(sets)))
    assert out.returncode != 0 and message in out.stderr, out.stderr


@pytest.mark.parametrize("sets, key", [
    (["runner=slurm"], "runner"),
    (["api.port=0"], "api.port"),
    (["objectStore.mode=s3"], "objectStore.mode"),
    (["rayCluster.rayVersion=2.40.0"], "rayCluster.rayVersion"),
    (["api.extraEnv.DOCTUNE_ADMIN_KEY=x"], "api.extraEnv"),
    (["podSecurityContext.runAsNonRoot=false"], "podSecurityContext.runAsNonRoot"),
])
def test_values_schema_refuses_bad_types_enums_and_ranges(sets, key):
    out = helm(*template_args(None, tuple(sets)))
    assert out.returncode != 0 and f"- {key}" in out.stderr, out.stderr


def test_a_cluster_without_kuberay_fails_early_saying_how_to_install_it():
    out = helm(*template_args(None, api_versions=()))
    assert out.returncode != 0
    assert "ray.io/v1" in out.stderr and "helm install kuberay-operator kuberay/kuberay-operator" in out.stderr


def test_monitoring_without_the_prometheus_operator_fails_naming_the_set():
    out = helm(*template_args(CHART / "ci" / "gpu-rayjob-values.yaml", api_versions=("ray.io/v1",)))
    assert out.returncode != 0 and "--set monitoring.serviceMonitor.enabled=false" in out.stderr


def test_every_value_is_documented():
    """Every key of values.yaml has a `# --` comment above it (the items of a list value are the value)."""
    lines = (CHART / "values.yaml").read_text().splitlines()
    undocumented, list_indent = [], None
    for i, line in enumerate(lines):
        item = re.match(r"^(\s*)- ", line)
        if item:
            list_indent = len(item.group(1))
            continue
        match = re.match(r"^(\s*)([A-Za-z][\w.-]*):", line)
        if not match:
            continue
        if list_indent is not None and len(match.group(1)) > list_indent:
            continue
        list_indent = None
        j = i - 1
        while j >= 0 and lines[j].strip().startswith("#") and not lines[j].strip().startswith("# --"):
            j -= 1
        if j < 0 or not lines[j].strip().startswith("# --"):
            undocumented.append(f"line {i + 1}: {match.group(2)}")
    assert undocumented == []


def test_the_crd_check_catches_a_misspelled_raycluster_field():
    (ray,) = _kind(render(None), "RayCluster")
    ray["spec"]["enableInTreeAutoscalling"] = True
    ray["spec"]["workerGroupSpecs"][0]["maxReplicas"] = "four"
    schema = crd_schemas(str(CRD_FOLDERS["ray.io/v1"]))[("ray.io/v1", "RayCluster")]
    errors = schema_errors(ray, schema)
    assert any("enableInTreeAutoscalling" in e for e in errors)
    assert any(e.startswith("spec.workerGroupSpecs.0.maxReplicas") for e in errors)


def _notes(tmp_path, *sets: str) -> str:
    """NOTES.txt as `helm install` prints it (helm template skips it: a copy of the chart renders it
    as a YAML block instead)."""
    chart = tmp_path / "doctune"
    shutil.copytree(CHART, chart)
    source = (CHART / "templates" / "NOTES.txt").read_text()
    (chart / "templates" / "notes-rendered.yaml").write_text(
        "notes: |\n" + "".join(f"  {line}\n" for line in source.splitlines()))
    args = ["template", "doctune", str(chart), "-n", "doctune", "--api-versions", "ray.io/v1",
            "--show-only", "templates/notes-rendered.yaml", *[a for s in sets for a in ("--set", s)]]
    out = helm(*args)
    assert out.returncode == 0, out.stderr
    return yaml.safe_load(out.stdout)["notes"]


def test_notes_say_how_to_reach_the_console_and_read_the_admin_key(tmp_path):
    notes = _notes(tmp_path)
    assert "kubectl -n doctune port-forward svc/doctune-console 7860:7860" in notes
    assert "kubectl -n doctune get secret doctune-admin-key -o jsonpath='{.data.admin-key}' | base64 -d" in notes
    with_ingress = _notes(tmp_path / "i", "ingress.enabled=true", "ingress.host=doctune.example.com",
                          "ingress.tls.enabled=true", "ingress.tls.secretName=tls")
    assert "https://doctune.example.com/" in with_ingress


@values_sets
def test_the_api_reaches_the_rayclusters_head_with_the_clusters_own_token(values):
    docs = render(values)
    (ray,) = _kind(docs, "RayCluster")
    head_svc = f"{ray['metadata']['name']}-head-svc"  # the Service KubeRay makes for the head
    (api,) = [d for d in _kind(docs, "Deployment") if d["metadata"]["name"] == "doctune-api"]
    env = {e["name"]: e for e in api["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert env["RAY_AUTH_TOKEN"]["valueFrom"]["secretKeyRef"] == {"name": ray["spec"]["authOptions"]["secretName"],
                                                                  "key": "auth_token"}
    assert env["RAY_AUTH_MODE"]["value"] == "token"
    assert env["DOCTUNE_RAY_DASHBOARD_URL"]["value"] == f"http://{head_svc}:8265"
    assert env["DOCTUNE_RAY_GCS_ADDRESS"]["value"] == f"{head_svc}:6379"
    head_ports = {p["containerPort"] for p in ray["spec"]["headGroupSpec"]["template"]["spec"]["containers"][0]["ports"]}
    assert {6379, 8265, 8000} <= head_ports  # KubeRay's head Service exposes the head container's ports
