"""Install Python packages into this venv with uv, under pip's own configuration; pip when uv fails.

    python platform/tools/install_packages.py "torch==2.13.0" -e ".[test]"

`make install` spent about 260 s in pip on a fresh clone (2 cores, 2026-12-02); uv installed the same
280 packages, at the same versions, in 35 s. uv does not read pip's configuration, so this passes it on:
the find-links, (extra) index URLs and constraints of `pip config list` and PIP_* variables, with pip's
way of choosing among indexes (unsafe-best-match). Anything uv cannot do falls back to pip, as before.
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys

# pip's option -> uv's (each takes one value per item of pip's space-separated list)
OPTIONS = {"find-links": "--find-links", "extra-index-url": "--extra-index-url", "index-url": "--index-url",
           "constraint": "--constraint"}


def pip_settings() -> dict[str, list[str]]:
    """pip's settings that decide what it installs, from `pip config list` (files and PIP_* variables)."""
    out = subprocess.run([sys.executable, "-m", "pip", "config", "list"], capture_output=True, text=True).stdout
    found: dict[str, list[str]] = {}
    for line in out.splitlines():
        m = re.match(r"^[^=]*\.([a-z-]+)='(.*)'$", line.strip())
        if m and m.group(1) in OPTIONS:
            found.setdefault(m.group(1), [])
            found[m.group(1)] += [v for v in shlex.split(m.group(2)) if v not in found[m.group(1)]]
    return found


def uv_command(packages: list[str]) -> list[str]:
    cmd = [sys.executable, "-m", "uv", "pip", "install", "--python", sys.executable, "--index-strategy",
           "unsafe-best-match"]
    for key, values in pip_settings().items():
        for value in values:
            cmd += [OPTIONS[key], value]
    return cmd + packages


def main(packages: list[str]) -> int:
    have_uv = subprocess.run([sys.executable, "-m", "pip", "install", "-q", "uv==0.13.9"]).returncode == 0
    if have_uv and subprocess.run(uv_command(packages), env={**os.environ, "UV_NO_PROGRESS": "1"}).returncode == 0:
        return 0
    print("uv could not install these; installing with pip", file=sys.stderr, flush=True)
    return subprocess.run([sys.executable, "-m", "pip", "install", "-q", *packages]).returncode


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
