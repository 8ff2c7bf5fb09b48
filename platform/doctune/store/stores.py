"""The two stores one process talks to, opened lazily from its settings.

Every process that reads or writes platform state holds one :class:`Stores`: the
services' :class:`~doctune.services.Platform` extends it, and the code that runs on
the cluster without the service layer (a Serve replica, a training worker) uses it
as it is.
"""

from __future__ import annotations

from functools import cached_property

from doctune.config import Settings, load_settings
from doctune.store.db import Database
from doctune.store.keys import KeyVerifier
from doctune.store.objects import ObjectStore

__all__ = ["Stores"]


class Stores:
    def __init__(self, settings: Settings | None = None) -> None:
        self.settings = settings or load_settings()

    @cached_property
    def db(self) -> Database:
        return Database(self.settings.database_url)

    @cached_property
    def key_verifier(self) -> KeyVerifier:
        """This process's API-key check (with its cache of verified keys)."""
        return KeyVerifier(self.db, self.settings.key_secret)

    @cached_property
    def objects(self) -> ObjectStore:
        return ObjectStore(self.settings)
