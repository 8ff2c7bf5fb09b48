"""Who is signed in to the console, kept on the server only.

The browser holds Gradio's session hash and nothing else: the API key, the tenant and the role live
in :class:`Sessions`, keyed by that hash, and go when the tab closes (``Blocks.unload``) or the
session has been idle for ``idle_s``."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field

from doctune.client import DoctuneClient
from doctune.errors import DoctuneError


@dataclass
class SignedIn:
    """One signed-in browser session: its API client and what ``GET /v1/whoami`` said of the key."""

    client: DoctuneClient
    tenant: str | None
    role: str  # admin | member | viewer
    key_id: str
    last_seen: float = field(default_factory=time.monotonic)

    @property
    def is_admin(self) -> bool:
        return self.role == "admin"

    @property
    def can_write(self) -> bool:
        return self.role in ("admin", "member")

    @property
    def who(self) -> str:
        return f"{self.tenant or 'platform'} · {self.role}"


class NotSignedIn(DoctuneError):
    def __init__(self) -> None:
        super().__init__("Sign in with your API key first (the key field at the top of the page).",
                         "unauthenticated", field="api_key")


class Sessions:
    """Session hash -> :class:`SignedIn`, thread-safe (Gradio runs handlers on worker threads)."""

    def __init__(self, api_url: str, idle_s: float = 8 * 3600) -> None:
        self.api_url = api_url
        self.idle_s = idle_s
        self._by_hash: dict[str, SignedIn] = {}
        self._lock = threading.Lock()

    def sign_in(self, session_hash: str, api_key: str) -> SignedIn:
        """Check the key against the API (``GET /v1/whoami``); a wrong or revoked key raises the
        API's error (401) and signs the session out."""
        api_key = (api_key or "").strip()
        if not api_key:
            raise DoctuneError("Paste an API key (dtk_...) to sign in.", "unauthenticated", field="api_key")
        client = DoctuneClient(self.api_url, api_key, timeout=60.0)
        try:
            me = client.request("GET", "/v1/whoami")
        except DoctuneError as e:
            self.sign_out(session_hash)
            if e.code in ("unauthenticated", "forbidden"):
                raise DoctuneError("This API key was not accepted (wrong, revoked or expired). Paste a valid key "
                                   "(dtk_...) from `doctune keys create` or your admin, then sign in again.",
                                   e.code, field="api_key") from None
            raise
        user = SignedIn(client=client, tenant=me["tenant"], role=me["role"], key_id=me["key_id"])
        with self._lock:
            self._by_hash[session_hash] = user
        return user

    def peek(self, session_hash: str | None) -> SignedIn | None:
        """The session's signed-in user, or None (no error: for text that only describes the state)."""
        with self._lock:
            return self._by_hash.get(session_hash)

    def sign_out(self, session_hash: str) -> None:
        with self._lock:
            user = self._by_hash.pop(session_hash, None)
        if user:
            user.client.http.close()

    def get(self, session_hash: str | None) -> SignedIn:
        """The session's user, or :class:`NotSignedIn`."""
        now = time.monotonic()
        with self._lock:
            self._drop_idle(now)
            user = self._by_hash.get(session_hash or "")
            if user is None:
                raise NotSignedIn()
            user.last_seen = now
            return user

    def _drop_idle(self, now: float) -> None:
        for h in [h for h, u in self._by_hash.items() if now - u.last_seen > self.idle_s]:
            self._by_hash.pop(h).client.http.close()
