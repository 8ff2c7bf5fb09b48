"""Caches and scratch folders are private and downloads stay in their folder: every folder
doctune writes model files or checkpoints into is under DOCTUNE_HOME with mode 0700; one
another user planted (a symlink, or a folder of theirs) is refused rather than written
into; no module of the platform names the shared temporary folder; an object key or archive
member that climbs out of its folder (``..``, an absolute name) is refused."""

from __future__ import annotations

import os
import re
import stat
from pathlib import Path

import pytest

from doctune.errors import DoctuneError
from doctune.store.paths import confined_path, make_scratch, private_dir, scratch_dir

PLATFORM = Path(__file__).resolve().parents[2] / "platform" / "doctune"


@pytest.fixture
def home(tmp_path, monkeypatch):
    monkeypatch.setenv("DOCTUNE_HOME", str(tmp_path / "home"))
    return tmp_path / "home"


def _mode(path: Path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def test_caches_and_scratch_live_under_the_home_with_mode_0700(home):
    models, restore = private_dir("cache", "models"), private_dir("cache", "restore")
    scratch = make_scratch("doctune-x-")
    assert models == home / "cache" / "models" and restore == home / "cache" / "restore"
    assert Path(scratch_dir()) == home / "tmp" and scratch.parent == home / "tmp"
    for folder in (home / "cache", models, restore, home / "tmp", scratch):
        assert _mode(folder) == 0o700, folder


def test_a_loosened_cache_folder_is_made_private_again(home):
    folder = private_dir("cache", "models")
    os.chmod(folder, 0o777)
    assert _mode(private_dir("cache", "models")) == 0o700


def test_a_planted_symlink_is_refused_not_followed(home, tmp_path):
    elsewhere = tmp_path / "attacker"
    elsewhere.mkdir()
    private_dir("cache")
    (home / "cache" / "models").symlink_to(elsewhere)
    with pytest.raises(DoctuneError) as e:
        private_dir("cache", "models")
    assert "not a folder of this user" in e.value.message and "DOCTUNE_HOME" in e.value.message
    assert list(elsewhere.iterdir()) == []


def test_no_module_names_the_shared_temporary_folder():
    """Every tempfile call names its folder (dir=...), and nothing writes to /tmp or gettempdir()
    (Ray's session folder, whose socket paths must stay short, is the one exception: local.py
    creates it 0700 and refuses one another user owns)."""
    offenders = []
    for path in PLATFORM.rglob("*.py"):
        for n, line in enumerate(path.read_text().splitlines(), 1):
            code = line.split("#")[0]
            bare_temp = re.search(r"tempfile\.(mkdtemp|mkstemp|TemporaryDirectory|NamedTemporaryFile)\((?![^)]*dir=)", code)
            if "gettempdir" in code or bare_temp or ('"/tmp' in code and path.name != "local.py"):
                offenders.append(f"{path.relative_to(PLATFORM)}:{n}: {line.strip()}")
    assert offenders == []


@pytest.mark.parametrize("key", ["../escaped.txt", "a/../../escaped.txt", "/etc/passwd", "a//b", "a/./b",
                                 "..", "a\\..\\..\\escaped.txt", ""])
def test_a_key_that_climbs_out_of_its_folder_is_refused(tmp_path, key):
    with pytest.raises(DoctuneError) as e:
        confined_path(tmp_path / "model", key)
    assert e.value.http_status == 400 and "outside" in e.value.message


def test_plain_keys_stay_inside(tmp_path):
    assert confined_path(tmp_path, "1_Pooling/config.json") == tmp_path / "1_Pooling" / "config.json"
    assert confined_path(tmp_path, "weights..bin") == tmp_path / "weights..bin"  # dots inside a name are fine
