"""No input, however malformed, makes the API answer 500: schemathesis generates
requests for every operation in the app's own OpenAPI document (valid and
invalid bodies, odd parameters), sent with a tenant's key and without one."""

from __future__ import annotations

import pytest
import schemathesis
from schemathesis import GenerationMode
from hypothesis import HealthCheck, given, settings
from hypothesis.errors import Unsatisfiable

from doctune.api.app import create_app
from doctune.config import Settings
from doctune.services import tenants
from doctune.services import Platform
from doctune.spec import TenantSpec


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    home = tmp_path_factory.mktemp("fuzz")
    p = Platform(Settings(home=str(home), database_url=f"sqlite:///{home / 'doctune.db'}"))
    app = create_app(p)
    admin = tenants.authenticate(p, tenants.create_admin_key(p))
    _, key = tenants.create_tenant(p, admin, TenantSpec(name="fuzz"))
    schema = schemathesis.openapi.from_asgi("/openapi.json", app)
    ops = [r.ok() for r in schema.get_all_operations()]
    return ops, key


def test_schema_covers_every_route(world):
    ops, _ = world
    assert len(ops) >= 15


@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE], ids=lambda m: m.value)
def test_no_server_errors(world, mode):
    ops, key = world
    exercised = 0
    for op in ops:

        @settings(max_examples=30, deadline=None, suppress_health_check=list(HealthCheck), database=None)
        @given(case=op.as_strategy(generation_mode=mode))
        def run(case):
            for headers in ({"Authorization": f"Bearer {key}"}, {}):
                response = case.call(headers=headers)
                assert response.status_code < 500, (case.method, case.path, case.body, response.status_code, response.text[:500])
                if response.status_code >= 400:
                    assert "error" in response.json(), response.text[:500]

        try:
            run()
            exercised += 1
        except Unsatisfiable:  # an operation with nothing to get wrong (no parameters, no body)
            assert mode is GenerationMode.NEGATIVE
    assert exercised >= (len(ops) if mode is GenerationMode.POSITIVE else 5)
