"""No input, however malformed, makes the API answer 500, and every answer matches the OpenAPI
document: schemathesis generates requests for every operation in the app's own document (valid
and invalid bodies, odd parameters), sent with a tenant's key and without one; for valid
requests it also checks each response's status code and body against the declared schemas."""

from __future__ import annotations

import os

import pytest
import schemathesis
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error, response_schema_conformance, status_code_conformance
from hypothesis import HealthCheck, given, settings
from hypothesis.errors import Unsatisfiable

from doctune.api.app import create_app
from doctune.config import Settings
from doctune.services import tenants
from doctune.services import Platform
from doctune.spec import TenantSpec
from doctune.store.db import Dataset, Deployment, Job, Model, Sweep
from tests.unit.test_cli import s3  # noqa: F401

CONFORMANCE = [not_a_server_error, status_code_conformance, response_schema_conformance]
# examples per operation and mode: 5 in CI's `make test` (10 cost its unit session 94 s of the 2 cores),
# 30 in `make test-full` (DOCTUNE_FUZZ_EXAMPLES)
EXAMPLES = int(os.environ.get("DOCTUNE_FUZZ_EXAMPLES", "5"))


@pytest.fixture(scope="module")
def world(tmp_path_factory, s3):  # noqa: F811  (a real S3 server: base-model routes read the tenant's prefix)
    home = tmp_path_factory.mktemp("fuzz")
    p = Platform(Settings(home=str(home), database_url=f"sqlite:///{home / 'doctune.db'}", **s3))
    p.db.migrate()
    app = create_app(p)
    admin = tenants.authenticate(p, tenants.create_admin_key(p))
    _, key = tenants.create_tenant(p, admin, TenantSpec(name="fuzz"))
    _add_one_of_everything(p)  # so that lists answer with items whose shape is checked too
    schema = schemathesis.openapi.from_asgi("/openapi.json", app)
    ops = [r.ok() for r in schema.get_all_operations()]
    return ops, key


def _add_one_of_everything(p: Platform) -> None:
    with p.db.session() as s:
        s.add(Dataset(id="ds-f", tenant_id="fuzz", name="d", task="classification", uri=f"s3://{p.settings.bucket}/tenants/fuzz/datasets/ds-f",
                      info={"labels": ["x", "y"]}))
        s.add(Sweep(id="sweep-f", tenant_id="fuzz", task="classification", status="running",
                    spec={"tenant": "fuzz", "job": {"task": "classification"}, "search_space": {}}))
    with p.db.session() as s:
        s.add(Job(id="job-f", tenant_id="fuzz", task="classification", spec={"tenant": "fuzz"}, status="succeeded",
                  sweep_id="sweep-f", metrics={"test": {"macro_f1": 0.9, "n": 10}, "baseline": {"test": {"macro_f1": 0.5}}}))
    with p.db.session() as s:
        s.add(Model(id="model-f", tenant_id="fuzz", job_id="job-f", task="classification", uri=f"s3://{p.settings.bucket}/tenants/fuzz/models/model-f"))
    with p.db.session() as s:
        s.add(Deployment(id="dep-f", tenant_id="fuzz", name="f", model_id="model-f", spec={}, route="/fuzz/f", status="running"))


def test_schema_covers_every_route(world):
    ops, _ = world
    assert len(ops) >= 15


@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE], ids=lambda m: m.value)
def test_no_server_errors(world, mode):
    ops, key = world
    exercised = 0
    for op in ops:

        @settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck), database=None)
        @given(case=op.as_strategy(generation_mode=mode))
        def run(case):
            for headers in ({"Authorization": f"Bearer {key}"}, {}):
                # timeout: a slow answer on a busy machine is not what this test is about (speed is benchmarked)
                if mode is GenerationMode.POSITIVE:  # a valid request's answer must match the document
                    response = case.call_and_validate(headers=headers, checks=CONFORMANCE, timeout=120)
                else:
                    response = case.call(headers=headers, timeout=120)
                assert response.status_code < 500, (case.method, case.path, case.body, response.status_code, response.text[:500])
                if response.status_code >= 400:
                    assert "error" in response.json(), response.text[:500]

        try:
            run()
            exercised += 1
        except Unsatisfiable:  # an operation with nothing to get wrong (no parameters, no body)
            assert mode is GenerationMode.NEGATIVE
    assert exercised >= (len(ops) if mode is GenerationMode.POSITIVE else 5)
