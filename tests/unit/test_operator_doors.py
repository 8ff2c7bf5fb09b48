"""The doctune operator, really running (``kopf.testing.KopfRunner``), against kmock's Kubernetes API
emulator and the real REST API over a real database, with no Ray cluster: what needs no training.
A Tenant becomes an API tenant with its quota and a namespace with its ResourceQuota, LimitRange
and a working key; a resource in a namespace without a Tenant waits, saying which Tenant to
apply; bad specs end Failed with the API's reason; deleting a Tenant revokes its keys.
(tests/integration/test_operator.py runs jobs through it on the real stack.)"""

from __future__ import annotations

import base64
import os
import socket
import threading
import time

import pytest

pytest.importorskip("kopf")
pytest.importorskip("kmock")

from doctune.client import DoctuneClient  # noqa: E402
from doctune.config import Settings  # noqa: E402
from doctune.services import Platform, tenants  # noqa: E402
from tests.operator.kube import KubeEmulator  # noqa: E402

GROUP, VERSION = "doctune.io", "v1alpha1"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def api(tmp_path_factory):
    """The REST API (uvicorn) over a SQLite database; returns (url, admin key)."""
    import uvicorn

    from doctune.api.app import create_app

    home = tmp_path_factory.mktemp("operator-api")
    p = Platform(Settings(home=str(home), database_url=f"sqlite:///{home / 'doctune.db'}"))
    p.db.migrate()
    admin_key = tenants.create_admin_key(p)
    server = uvicorn.Server(uvicorn.Config(create_app(p), host="127.0.0.1", port=_free_port(), log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.05)
    yield f"http://127.0.0.1:{server.config.port}", admin_key
    server.should_exit = True
    thread.join(10)


@pytest.fixture(scope="module")
def kube(api, tmp_path_factory):
    from kopf.testing import KopfRunner

    url, admin_key = api
    env = {"DOCTUNE_API_URL": url, "DOCTUNE_ADMIN_KEY": admin_key, "DOCTUNE_OPERATOR_POLL_S": "1"}
    saved = {k: os.environ.get(k) for k in [*env, "KUBECONFIG"]}
    with KubeEmulator() as emulator:
        os.environ.update(env, KUBECONFIG=str(emulator.kubeconfig(tmp_path_factory.mktemp("kube") / "config")))
        try:
            with KopfRunner(["run", "--all-namespaces", "--standalone", "-m", "operators.doctune_operator.handlers"],
                            timeout=60) as runner:
                yield emulator
            assert runner.exit_code == 0, runner.output[-5000:]
        finally:
            for k, v in saved.items():
                os.environ.pop(k) if v is None else os.environ.__setitem__(k, v)


@pytest.fixture(scope="module")
def kubectl(kube):
    from kubernetes import client

    return client.CustomObjectsApi(kube.api_client()), client.CoreV1Api(kube.api_client())


def wait(fn, what: str, deadline_s: float = 60):
    end = time.monotonic() + deadline_s
    while time.monotonic() < end:
        if value := fn():
            return value
        time.sleep(0.3)
    raise AssertionError(f"timed out waiting for {what}")


def status_of(custom, plural: str, name: str, namespace: str | None) -> dict:
    from kubernetes.client.exceptions import ApiException

    try:
        obj = (custom.get_namespaced_custom_object(GROUP, VERSION, namespace, plural, name) if namespace
               else custom.get_cluster_custom_object(GROUP, VERSION, plural, name))
    except ApiException as exc:
        if exc.status == 404:
            return {"gone": True}
        raise
    return obj.get("status") or {}


def apply(custom, kind: str, plural: str, name: str, spec: dict, namespace: str | None = None) -> None:
    body = {"apiVersion": f"{GROUP}/{VERSION}", "kind": kind, "spec": spec,
            "metadata": {"name": name, **({"namespace": namespace} if namespace else {})}}
    if namespace:
        custom.create_namespaced_custom_object(GROUP, VERSION, namespace, plural, body)
    else:
        custom.create_cluster_custom_object(GROUP, VERSION, plural, body)


@pytest.fixture(scope="module")
def tenant(kubectl, api):
    custom, core = kubectl
    apply(custom, "Tenant", "tenants", "team-op", {"displayName": "Team Op", "maxConcurrentJobs": 1, "maxCpus": 4})
    wait(lambda: status_of(custom, "tenants", "team-op", None).get("state") == "Ready", "the Tenant to be Ready")
    key = base64.b64decode(core.read_namespaced_secret("doctune-api-key", "team-op").data["api-key"]).decode()
    return DoctuneClient(api[0], key)


def test_a_tenant_gets_an_api_tenant_with_its_quota_a_namespace_and_a_working_key(kubectl, api, tenant):
    custom, core = kubectl
    uid = custom.get_cluster_custom_object(GROUP, VERSION, "tenants", "team-op")["metadata"]["uid"]
    ns = core.read_namespace("team-op")
    assert [(o.kind, o.name, o.uid) for o in ns.metadata.owner_references] == [("Tenant", "team-op", uid)]
    assert core.read_namespaced_resource_quota("doctune", "team-op").spec.hard == {"requests.cpu": "4"}
    assert core.read_namespaced_limit_range("doctune", "team-op").spec.limits[0].default_request["cpu"] == "250m"
    seen = DoctuneClient(api[0], api[1]).request("GET", "/v1/tenants/team-op")
    assert seen["display_name"] == "Team Op" and seen["quota"]["max_concurrent_jobs"] == 1
    assert tenant.request("GET", "/v1/whoami")["tenant"] == "team-op"


def test_a_resource_in_a_namespace_without_a_tenant_waits_and_says_which_tenant(kubectl):
    custom, _ = kubectl
    apply(custom, "FineTuneJob", "finetunejobs", "early", {"task": "classification"}, namespace="nobody")
    status = wait(lambda: (s := status_of(custom, "finetunejobs", "early", "nobody")).get("conditions") and s,
                  "a waiting status")
    assert status["state"] == "Pending"
    assert status["conditions"][0]["reason"] == "TenantNotReady" and "Tenant named nobody" in status["conditions"][0]["message"]
    custom.delete_namespaced_custom_object(GROUP, VERSION, "nobody", "finetunejobs", "early")
    wait(lambda: status_of(custom, "finetunejobs", "early", "nobody").get("gone"), "the resource to go")


@pytest.mark.parametrize("kind,plural,spec,field", [
    ("FineTuneJob", "finetunejobs", {"task": "classification", "baseModel": "all-minilm-l6-v2",
                                     "dataset": {"id": "ds-none"}, "learningRate": -1.0}, "learning_rate"),
    ("Sweep", "sweeps", {"job": {"task": "classification", "dataset": {"id": "ds-none"}}, "algorithm": "grid",
                         "search_space": {"learning_rate": {"type": "choice", "values": []}}}, "search_space"),
    ("ModelDeployment", "modeldeployments", {"modelId": "model-none", "minReplicas": 1}, "model"),
])
def test_a_bad_spec_ends_failed_with_the_apis_reason(kubectl, tenant, kind, plural, spec, field):
    custom, _ = kubectl
    name = f"bad-{plural}"
    apply(custom, kind, plural, name, spec, namespace="team-op")
    status = wait(lambda: (s := status_of(custom, plural, name, "team-op")).get("state") == "Failed" and s,
                  f"the bad {kind} to fail")
    ready = status["conditions"][0]
    assert ready["status"] == "False" and ready["reason"] in ("InvalidSpec", "Failed")
    assert field in ready["message"], ready["message"]
    custom.delete_namespaced_custom_object(GROUP, VERSION, "team-op", plural, name)
    wait(lambda: status_of(custom, plural, name, "team-op").get("gone"), "the resource to go")


def test_deleting_a_tenant_revokes_its_keys_and_its_namespace(kubectl, api, tenant):
    custom, core = kubectl
    custom.delete_cluster_custom_object(GROUP, VERSION, "tenants", "team-op")
    wait(lambda: status_of(custom, "tenants", "team-op", None).get("gone"), "the Tenant to go")
    admin = DoctuneClient(api[0], api[1])
    assert all(k["revoked_at"] for k in admin.list_keys() if k["tenant"] == "team-op")
    from doctune.errors import DoctuneError

    with pytest.raises(DoctuneError) as err:
        tenant.list_jobs()
    assert err.value.code == "unauthenticated"
    assert "team-op" not in [n.metadata.name for n in core.list_namespace().items]
