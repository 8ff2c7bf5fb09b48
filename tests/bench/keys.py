"""What a wrong API key costs the server: the hash check of a miss with HMAC-SHA256 (keys
issued now) and with scrypt (keys from before), and a whole miss through
``KeyVerifier.verify`` on a SQLite database (the database read included).

Run: ``python tests/bench/keys.py`` (not part of `make test`; timings are measured, never asserted).
"""

from __future__ import annotations

import statistics
import tempfile
import time
from pathlib import Path

from doctune.errors import DoctuneError
from doctune.store.db import Database
from doctune.store.keys import KeyVerifier, hmac_hash, issue_key, scrypt_hash


def per_call_us(fn, n: int) -> float:
    times = []
    for _ in range(5):
        t = time.perf_counter()
        for _ in range(n):
            fn()
        times.append((time.perf_counter() - t) / n * 1e6)
    return statistics.median(times)


def main() -> None:
    secret = b"s" * 32
    hmac_us = per_call_us(lambda: hmac_hash(secret, "0123456789ab", "wrong-secret-wrong-secret-wron"), 20_000)
    scrypt_us = per_call_us(lambda: scrypt_hash("wrong-secret-wrong-secret-wron", "ab" * 16), 5)
    with tempfile.TemporaryDirectory() as home:
        db = Database(f"sqlite:///{Path(home) / 'doctune.db'}")
        db.migrate()
        key_id = issue_key(db, None, "admin").split("_")[1]
        verifier = KeyVerifier(db)

        def miss() -> None:
            try:
                verifier.verify(f"dtk_{key_id}_wrong-secret")
            except DoctuneError:
                pass

        miss_us = per_call_us(miss, 500)
        db.dispose()
    print(f"hash check of a wrong key: HMAC-SHA256 {hmac_us:.1f} us, scrypt (n=2^14) {scrypt_us / 1000:.1f} ms "
          f"({scrypt_us / hmac_us:,.0f}x)")
    print(f"a whole miss through KeyVerifier.verify (SQLite read included): {miss_us:.0f} us")


if __name__ == "__main__":
    main()
