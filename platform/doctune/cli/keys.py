"""`doctune keys`: API keys by id (their public prefix); a secret is printed once,
when it is issued, and never again."""

from __future__ import annotations

from typing import Optional

import typer

from doctune.cli.output import show
from doctune.cli.session import ApiKey, Limit, connect, list_items

__all__ = ["app"]

app = typer.Typer(help="API keys: list (ids only), show, create, rotate, revoke.", no_args_is_help=True)

KEY_COLUMNS = ("id", "tenant", "role", "created_at", "revoked_at")


@app.command("list")
def keys_list(limit: Limit = None, api_key: ApiKey = None) -> None:
    """Your tenant's keys, by id (the public prefix); secrets are never shown again."""
    show(list_items(connect(api_key), "/v1/keys", limit), KEY_COLUMNS)


@app.command("show")
def keys_show(key_id: str, api_key: ApiKey = None) -> None:
    """One key: its tenant, role, and when it was created and revoked."""
    show(connect(api_key).request("GET", f"/v1/keys/{key_id}"))


@app.command("create")
def keys_create(role: str = typer.Option("member", help="member or viewer"), tenant: Optional[str] = None,
                api_key: ApiKey = None) -> None:
    """Issue a new key (printed once)."""
    body = {"role": role, **({"tenant": tenant} if tenant else {})}
    show(connect(api_key).request("POST", "/v1/keys", json=body))


@app.command("rotate")
def keys_rotate(key_id: str, api_key: ApiKey = None) -> None:
    """Revoke a key and issue its replacement (printed once)."""
    show(connect(api_key).request("POST", f"/v1/keys/{key_id}/rotate"))


@app.command("revoke")
def keys_revoke(key_id: str, api_key: ApiKey = None) -> None:
    """Revoke a key now."""
    show(connect(api_key).request("DELETE", f"/v1/keys/{key_id}"))
