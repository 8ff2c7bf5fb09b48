"""The CLI's side of the REST API: which API and key a command uses, the options
every command shares, and list routes followed page by page.

The key is ``--api-key``, else ``DOCTUNE_API_KEY``; with neither, a command fails and says
so. The admin key the local stack wrote into ``$DOCTUNE_HOME/stack.json`` is used only when asked
for by the global ``--as-admin`` flag (:func:`set_as_admin`), never silently. The API is
``DOCTUNE_API_URL`` or the stack file's. Commands talk to the platform only through
:class:`~doctune.client.DoctuneClient`; tests point :func:`set_client_factory`
at an in-process API.
"""

from __future__ import annotations

import os
from enum import Enum
from typing import Annotated, Any, Callable, Optional

import typer

from doctune.client import DoctuneClient
from doctune.config import load_settings
from doctune.errors import DoctuneError

__all__ = ["ApiKey", "ClientFactory", "Limit", "TaskFilter", "connect", "list_items", "mask_key", "set_as_admin",
           "set_client_factory"]

ApiKey = Annotated[Optional[str], typer.Option("--api-key", envvar="DOCTUNE_API_KEY",
                                               help="API key (or DOCTUNE_API_KEY; `doctune --as-admin` uses the "
                                                    "local stack's admin key).")]
Limit = Annotated[Optional[int], typer.Option("--limit", min=1, help="List at most N (default: every page).")]
TaskFilter = Annotated[Optional[str], typer.Option("--task", help="Only this task (see `doctune tasks list`).")]

ClientFactory = Callable[[str, Optional[str]], DoctuneClient]
_factory: dict[str, ClientFactory] = {"make": DoctuneClient}
_as_admin = {"on": False}

PAGE_SIZE = 200  # the most a list route gives per page


def set_client_factory(factory: ClientFactory) -> ClientFactory:
    """Build clients with ``factory(api_url, api_key)`` from now on; returns the one it replaces."""
    previous, _factory["make"] = _factory["make"], factory
    return previous


def set_as_admin(on: bool) -> None:
    """``doctune --as-admin``: commands use the local stack's admin key (``stack.json``)."""
    _as_admin["on"] = on


def mask_key(key: str) -> str:
    """A key as it may be printed: its public id and the first characters of its secret only."""
    prefix, _, secret = key.rpartition("_")
    return f"{prefix}_{secret[:4]}…" if prefix and secret else "dtk_…"


def connect(api_key: str | None = None) -> DoctuneClient:
    """A client of the configured API, with the caller's key: ``api_key``, else DOCTUNE_API_KEY, else
    (only with ``--as-admin``) the local stack's admin key. No key at all is an error, not the admin's."""
    s = load_settings()
    if not s.api_url:
        raise DoctuneError("no API configured: run `doctune up` or set DOCTUNE_API_URL", "unavailable")
    if _as_admin["on"]:
        if not s.admin_key:
            raise DoctuneError(f"--as-admin: no admin key on this machine ({s.home}/stack.json has none); run it "
                               "where `doctune up` ran, or use a tenant key with --api-key", "unauthenticated",
                               field="as_admin")
        return _factory["make"](s.api_url, s.admin_key)
    key = api_key or os.environ.get("DOCTUNE_API_KEY")
    if not key:
        raise DoctuneError("no API key: pass --api-key KEY or set DOCTUNE_API_KEY to a tenant's key; to act as the "
                           "platform admin with the local stack's admin key, add --as-admin (`doctune --as-admin ...`)",
                           "unauthenticated", field="api_key")
    return _factory["make"](s.api_url, key)


def list_items(client: DoctuneClient, path: str, limit: int | None = None, **filters: Any) -> list[dict[str, Any]]:
    """Every item of a list route (``{"items", "next_cursor"}``, newest first), following
    ``next_cursor`` until the last page, or until ``limit`` items. Filters that are None
    are left out. A route that answers with one plain list (``/v1/tasks``)
    is taken whole."""
    params = {k: v.value if isinstance(v, Enum) else v for k, v in filters.items() if v is not None}
    items: list[dict[str, Any]] = []
    cursor: str | None = None
    while limit is None or len(items) < limit:
        size = PAGE_SIZE if limit is None else min(PAGE_SIZE, limit - len(items))
        page = client.request("GET", path, params={**params, "limit": size, **({"cursor": cursor} if cursor else {})})
        if isinstance(page, list):
            items += page
            break
        items += page["items"]
        if not page.get("next_cursor"):
            break
        if page["next_cursor"] == cursor:
            raise DoctuneError(f"{path} gave the same next_cursor twice ({cursor}); stopping rather than "
                               "looping; list with --limit meanwhile", "internal", field="cursor")
        cursor = page["next_cursor"]
    return items if limit is None else items[:limit]
