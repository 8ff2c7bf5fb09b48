"""The chart's init container (python -m doctune.store.bootstrap) makes the admin key that the
chart generated a working admin key, once: the API then accepts it as the platform admin."""

from __future__ import annotations

from doctune.store.bootstrap import ensure_admin_key
from doctune.store.db import Database
from doctune.store.keys import KeyVerifier


def test_the_generated_admin_key_is_stored_once_and_verifies_as_admin(tmp_path):
    db = Database(f"sqlite:///{tmp_path / 'd.db'}")
    db.migrate()
    key = "dtk_a1b2c3d4e5f6_Zx9chartMadeSecretOf32Characters"
    assert ensure_admin_key(db, key) is True
    assert ensure_admin_key(db, key) is False  # a second Pod start changes nothing
    principal = KeyVerifier(db).verify(key)
    assert principal.is_admin and principal.tenant_id is None
