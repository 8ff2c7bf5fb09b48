"""``python -m doctune.store.bootstrap``: what a cluster install runs before the API starts (the
Helm chart's init container; ``doctune up`` does the same in ``LocalStack._up_db``): migrate the
database, create the bucket if it is missing, then make the admin key that the chart generated into its Secret (``DOCTUNE_ADMIN_KEY``)
a valid platform-admin key, by storing its HMAC under its id when that id is not stored yet.
Running it again (every API Pod start, every upgrade) changes nothing.
"""

from __future__ import annotations

import sys

from doctune.config import load_settings
from doctune.store.db import ApiKey, Database
from doctune.store.keys import HMAC, hmac_hash, server_secret, split_key


def ensure_admin_key(db: Database, key: str, key_secret: str = "") -> bool:
    """Store ``key`` (``dtk_<id>_<secret>``) as an admin key unless its id is stored; True if stored now."""
    key_id, secret = split_key(key)
    digest = hmac_hash(server_secret(db, key_secret), key_id, secret)
    with db.session() as s:
        if s.get(ApiKey, key_id) is not None:
            return False
        s.add(ApiKey(id=key_id, tenant_id=None, role="admin", salt="", hash=digest, hash_scheme=HMAC))
    return True


def main() -> int:
    settings = load_settings()
    if not settings.admin_key:
        print("DOCTUNE_ADMIN_KEY is not set: nothing to bootstrap the first admin key from", file=sys.stderr)
        return 2
    db = Database(settings.database_url)
    db.migrate()
    made = ensure_admin_key(db, settings.admin_key, settings.key_secret)
    db.dispose()
    from doctune.store.objects import ObjectStore

    ObjectStore(settings).ensure_bucket()
    print(f"database migrated; bucket {settings.bucket} ready; admin key " + ("stored" if made else "already stored"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
