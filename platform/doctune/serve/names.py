"""Names of the Serve applications doctune runs, in one place: the deploy driver names
applications by them, and the services find them by them.

An endpoint's application is named by its deployment id (``dep-<12 hex>``), never by its
tenant and endpoint names: ``<tenant>-<name>`` was ambiguous, since both slugs may hold
``-`` (tenant ``team``'s endpoint ``a-x`` and tenant ``team-a``'s endpoint ``x`` were both
``team-a-x``, so deploying or deleting one replaced or deleted the other). A deployment
keeps its id for life: redeploying a deleted endpoint reuses its row, so its application
keeps its name. What users call stays ``/<tenant>/<name>``: ``/`` is no slug character, so
routes cannot collide.
"""

from __future__ import annotations

from typing import Any

__all__ = ["app_name", "legacy_app_name"]


def app_name(deployment: Any) -> str:
    """The Serve application of one deployment (a row with an ``id``): its deployment id."""
    return str(deployment.id)


def legacy_app_name(deployment: Any) -> str:
    """The name an endpoint's application had before applications were named by deployment id
    (``<tenant>-<name>``). Only for removing such an application once, when the deployment is
    next deployed: it holds the endpoint's route, which the new application needs."""
    return f"{deployment.tenant_id}-{deployment.name}"
