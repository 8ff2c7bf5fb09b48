"""Shared fixtures: database URLs (SQLite always, PostgreSQL when
DOCTUNE_TEST_DATABASE_URL is set) and environment hygiene for every test."""

from __future__ import annotations

import os
import sys
import uuid

import pytest

os.environ.setdefault("DS_ACCELERATOR", "cpu")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# the folder `make install` built DeepSpeed's CPU ops into (and the local stack's default)
os.environ.setdefault("TORCH_EXTENSIONS_DIR", os.path.join(sys.prefix, "torch_extensions"))
# ...built by the venv's ninja, which every Ray process of the stack finds first on its PATH: a test's
# own process (the tuning matrix) must use that one too, or the two ninjas' build logs (format 5 vs 7)
# each make the other rebuild the op from scratch (see the Makefile)
if os.environ.get("PATH", "").split(os.pathsep)[0] != os.path.dirname(sys.executable):
    os.environ["PATH"] = os.pathsep.join([os.path.dirname(sys.executable), os.environ.get("PATH", "")])
# Every doctune client of Ray uses token auth, and Ray reads the mode once per process: a unit
# test that builds a Serve application first would otherwise fix it at 'disabled' for the session.
os.environ.setdefault("RAY_AUTH_MODE", "token")


def pytest_generate_tests(metafunc):
    """Every test on a fresh database (``database_url``) runs on SQLite; a module or test marked
    ``both_databases`` (the store, its migrations, concurrent writers, transactions, paging and
    isolation queries) also runs on PostgreSQL when DOCTUNE_TEST_DATABASE_URL is set. The API's
    routes, the CLI and the console run on SQLite only: they reach the database through the same
    store code, whose behaviour on both is what the marked tests check (running every API test
    twice cost the CI's unit session about a third of its time)."""
    if "database_url" not in metafunc.fixturenames:
        return
    params = ["sqlite"]
    if os.environ.get("DOCTUNE_TEST_DATABASE_URL") and metafunc.definition.get_closest_marker("both_databases"):
        params.append("postgresql")
    metafunc.parametrize("database_url", params, indirect=True)


@pytest.fixture
def database_url(request, tmp_path):
    """A fresh, empty database: a SQLite file, or a throwaway schema in PostgreSQL."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'doctune.db'}"
        return
    from sqlalchemy import create_engine, text

    base = os.environ["DOCTUNE_TEST_DATABASE_URL"]
    schema = f"doctune_test_{uuid.uuid4().hex[:8]}"
    admin = create_engine(base)
    with admin.begin() as c:
        c.execute(text(f'CREATE SCHEMA "{schema}"'))
    sep = "&" if "?" in base else "?"
    yield f"{base}{sep}options=-csearch_path%3D{schema}"
    with admin.begin() as c:
        c.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
    admin.dispose()


@pytest.fixture
def platform(database_url, tmp_path):
    """A Platform on a fresh, migrated database (no Ray, no object store started)."""
    from doctune.config import Settings
    from doctune.services import Platform

    p = Platform(Settings(home=str(tmp_path), database_url=database_url))
    p.db.migrate()
    yield p
    p.db.dispose()
