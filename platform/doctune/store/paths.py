"""Local folders doctune writes: caches and scratch space, private to the user running it.

Every process that writes model files, checkpoints or uploads to local disk (training
workers, Serve replicas, the API server) writes them under ``$DOCTUNE_HOME`` (default
``~/.doctune``) in folders of mode 0700, never in a predictable path of the shared temporary
folder, where another user of the machine could plant a symlink or a poisoned model, or
read what was written:

* ``private_dir("cache", "models")``: tenants' base models copied from the object store;
* ``private_dir("cache", "restore")``: checkpoints being restored by a job's workers;
* ``scratch_dir()``: short-lived copies (exports, downloads, uploads), each in a fresh
  ``mkdtemp`` folder that its user deletes.

:func:`confined_path` keeps a file named by an object key inside the folder it is
downloaded into.
"""

from __future__ import annotations

import os
import stat
import tempfile
from pathlib import Path, PurePosixPath

from doctune.config import doctune_home
from doctune.errors import DoctuneError

__all__ = ["confined_path", "ensure_private_dir", "make_scratch", "private_dir", "scratch_dir"]


def ensure_private_dir(path: Path) -> Path:
    """Create ``path`` (mode 0700) or make an existing one 0700; refuse a symlink or a folder
    another user owns (someone planted it)."""
    try:
        os.mkdir(path, 0o700)
    except FileExistsError:
        pass
    info = os.lstat(path)
    if stat.S_ISLNK(info.st_mode) or not stat.S_ISDIR(info.st_mode) or info.st_uid != os.getuid():
        raise DoctuneError(
            f"{path} is not a folder of this user (a symlink, a file, or owned by uid {info.st_uid}); doctune keeps "
            "its caches private, so remove it or point DOCTUNE_HOME somewhere else", "unavailable")
    if stat.S_IMODE(info.st_mode) != 0o700:
        os.chmod(path, 0o700)
    return path


def private_dir(*parts: str, home: str | Path | None = None) -> Path:
    """``$DOCTUNE_HOME/<parts...>``, every level below the home of mode 0700 and this user's."""
    path = Path(home).expanduser() if home else doctune_home()
    if not path.exists():
        path.mkdir(mode=0o700, parents=True, exist_ok=True)
    for part in parts:
        path = ensure_private_dir(path / part)
    return path


def scratch_dir() -> str:
    """The folder for short-lived files (``tempfile``'s ``dir=``): ``$DOCTUNE_HOME/tmp``."""
    return str(private_dir("tmp"))


def make_scratch(prefix: str) -> Path:
    """A fresh, empty folder of mode 0700 under :func:`scratch_dir`; its caller deletes it."""
    return Path(tempfile.mkdtemp(prefix=prefix, dir=scratch_dir()))


def confined_path(root: Path, relative: str, *, what: str = "object key") -> Path:
    """``root / relative`` for a name from elsewhere (an object key's tail, an archive member):
    refuses an absolute name, a ``..`` or empty segment, or a backslash, so nothing is
    written outside ``root``."""
    parts = PurePosixPath(relative).parts
    bad = (not parts or relative.startswith("/") or "\\" in relative or "\0" in relative
           or any(p in ("", ".", "..") for p in relative.split("/")))
    dest = root.joinpath(*parts) if parts else root
    if bad or not dest.resolve().is_relative_to(root.resolve()):
        raise DoctuneError(f"{what} {relative!r} would be written outside {root.name}/ (an absolute path or '..'); "
                           "it was refused and nothing was written for it", "invalid_request", field="path")
    return dest

