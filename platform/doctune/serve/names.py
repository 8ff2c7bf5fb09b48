"""Names of the Serve applications doctune runs, in one place: the deploy driver names
applications by them, and the services find them by them."""

from __future__ import annotations

from typing import Any

__all__ = ["app_name"]


def app_name(deployment: Any) -> str:
    """The Serve application of one deployment (a row with ``tenant_id`` and ``name``)."""
    return f"{deployment.tenant_id}-{deployment.name}"
