"""Endpoint names cannot collide across tenants: tenant ``team``'s endpoint ``a-x`` and
tenant ``team-a``'s endpoint ``x`` (both ``team-a-x`` under the old ``<tenant>-<name>``
naming) get Serve applications of their own, and deploying or deleting one leaves the other
serving. The cluster here is a recording runner that keeps Serve applications by the name
the deploy driver gives them (``doctune.serve.names.app_name``); no Ray."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from doctune.serve.names import app_name, legacy_app_name
from doctune.services import Platform, tenants
from doctune.services import deployments as dep_svc
from doctune.spec import SLUG, DeploymentSpec, TenantSpec
from doctune.states import DeploymentState
from doctune.store.db import Deployment, Job, Model


class ServeByName:
    """A cluster whose Serve applications are a dict keyed by application name, as Ray Serve's are:
    ``serve.run`` under a taken name replaces that application, ``serve.delete`` removes it."""

    def __init__(self, p: Platform) -> None:
        self.p, self.apps = p, {}

    def _row(self, deployment_id: str) -> Deployment:
        with self.p.db.session() as s:
            return s.get(Deployment, deployment_id)

    def deploy_app(self, deployment_id: str) -> str:
        row = self._row(deployment_id)
        self.apps[app_name(row)] = row.route  # what the deploy driver's serve.run does
        dep_svc.set_status(self.p, deployment_id, DeploymentState.RUNNING)
        return f"deploy-{deployment_id}"

    def delete_app(self, deployment_id: str) -> str:
        self.apps.pop(app_name(self._row(deployment_id)), None)  # what the undeploy driver's serve.delete does
        dep_svc.set_status(self.p, deployment_id, DeploymentState.DELETED)
        return f"delete-{deployment_id}"

    def applications(self) -> dict:
        return {name: {"status": "RUNNING"} for name in self.apps}


@pytest.fixture
def two_tenants(database_url, tmp_path):
    """Tenants ``team`` and ``team-a``, each with one registered model, on a recording cluster."""
    from doctune.config import Settings

    p = Platform(Settings(home=str(tmp_path), database_url=database_url))
    p.runner = ServeByName(p)
    p.db.migrate()
    admin = tenants.authenticate(p, tenants.create_admin_key(p))
    callers = {}
    for tenant in ("team", "team-a"):
        _, key = tenants.create_tenant(p, admin, TenantSpec(name=tenant))
        callers[tenant] = tenants.authenticate(p, key)
        with p.db.session() as s:
            s.add(Job(id=f"job-{tenant}", tenant_id=tenant, task="classification", status="succeeded",
                      spec={"tenant": tenant}))
        with p.db.session() as s:
            s.add(Model(id=f"model-{tenant}", tenant_id=tenant, job_id=f"job-{tenant}", task="classification",
                        uri=f"s3://doctune/tenants/{tenant}/models/model-{tenant}"))
    yield p, callers
    p.db.dispose()


def test_app_names_are_deployment_ids_and_never_collide():
    team = SimpleNamespace(id="dep-0123456789ab", tenant_id="team", name="a-x")
    team_a = SimpleNamespace(id="dep-ba9876543210", tenant_id="team-a", name="x")
    assert legacy_app_name(team) == legacy_app_name(team_a) == "team-a-x"  # the collision this fixes
    assert (app_name(team), app_name(team_a)) == ("dep-0123456789ab", "dep-ba9876543210")
    assert SLUG.fullmatch("a-x") and SLUG.fullmatch("team-a")  # both names are valid slugs: the attack is possible


def test_colliding_tenant_and_endpoint_names_deploy_and_delete_independently(two_tenants):
    p, callers = two_tenants
    mine = dep_svc.deploy_model(p, callers["team"], DeploymentSpec(tenant="team", name="a-x", model_id="model-team"))
    theirs = dep_svc.deploy_model(p, callers["team-a"],
                                  DeploymentSpec(tenant="team-a", name="x", model_id="model-team-a"))
    assert p.runner.apps == {mine.id: "/team/a-x", theirs.id: "/team-a/x"}  # two applications, two routes

    dep_svc.delete_deployment(p, callers["team"], mine.id)
    assert p.runner.apps == {theirs.id: "/team-a/x"}  # team-a's endpoint still serves
    assert dep_svc.get_deployment(p, callers["team-a"], theirs.id).status == DeploymentState.RUNNING

    again = dep_svc.deploy_model(p, callers["team"], DeploymentSpec(tenant="team", name="a-x", model_id="model-team"))
    assert again.id == mine.id and p.runner.apps == {mine.id: "/team/a-x", theirs.id: "/team-a/x"}
    dep_svc.delete_deployment(p, callers["team-a"], theirs.id)
    assert p.runner.apps == {mine.id: "/team/a-x"}


def test_restoring_after_a_cluster_restart_finds_each_tenants_application(two_tenants):
    p, callers = two_tenants
    mine = dep_svc.deploy_model(p, callers["team"], DeploymentSpec(tenant="team", name="a-x", model_id="model-team"))
    theirs = dep_svc.deploy_model(p, callers["team-a"],
                                  DeploymentSpec(tenant="team-a", name="x", model_id="model-team-a"))
    del p.runner.apps[theirs.id]  # only team-a's application is gone
    assert dep_svc.reconcile_deployments(p) == [theirs.id]
    assert set(p.runner.apps) == {mine.id, theirs.id}
