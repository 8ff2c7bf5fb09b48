"""Fixtures of the unit session: one real SeaweedFS S3 server per pytest process (the session runs on
pytest-xdist: one per worker; a module asks for the ``s3`` fixture of test_cli.py, a bucket of its own on it)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from doctune.config import Settings


@pytest.fixture(scope="session")
def weed_server(tmp_path_factory):
    """A real SeaweedFS S3 server (the `weed` binary doctune ships with) on free ports, for this pytest
    process (each xdist worker has its own, in a port range of its own; each module gets a bucket of its
    own: the ``s3`` fixture of test_cli.py). A port found free may be taken (by another worker or session)
    before weed binds it: then weed exits, and the next free range is tried."""
    from doctune.local import find_free_port_base

    home = tmp_path_factory.mktemp("weed")
    worker = os.environ.get("PYTEST_XDIST_WORKER", "")  # gw0, gw1, ...: apart, so two workers never race for a range
    start = 40000 + 1000 * ((int(worker[2:]) * 3 if worker[2:].isdigit() else 0) + os.getpid() % 3)
    for _ in range(5):
        base = find_free_port_base(start=start, stop=60000)
        started = _start_weed(home, base)
        if started is not None:
            break
        start = base + 1000
    else:
        raise AssertionError(f"weed did not start: {(home / 'weed.log').read_text()[-2000:]}")
    proc, fields = started
    yield fields
    os.killpg(proc.pid, signal.SIGKILL)  # weed ignores SIGTERM for a while
    proc.wait(30)


def _start_weed(home: Path, base: int):
    """(the weed process, its S3 settings) once its bucket answers, or None when weed exited first."""
    from doctune.local import Ports
    from doctune.store.objects import ObjectStore

    weed = shutil.which("weed") or str(Path(sys.executable).parent / "weed")
    ports = Ports(base)
    ident = home / "identities.json"
    ident.write_text(json.dumps({"identities": [{"name": "t", "credentials": [{"accessKey": "cli", "secretKey": "cli-secret"}],
                                                 "actions": ["Admin", "Read", "List", "Tagging", "Write"]}]}))
    proc = subprocess.Popen(
        [weed, "server", f"-dir={home}", "-ip=127.0.0.1", "-ip.bind=127.0.0.1", f"-master.port={ports.weed_master}",
         f"-volume.port={ports.volume}", "-master.volumeSizeLimitMB=64", "-volume.max=0", "-filer",
         f"-filer.port={ports.filer}", "-s3", f"-s3.port={ports.s3}", f"-s3.config={ident}", "-s3.port.iceberg=0",
         "-s3.port.lance=0", "-master.telemetry=false"],
        stdout=open(home / "weed.log", "wb"), stderr=subprocess.STDOUT, start_new_session=True)
    fields = {"s3_endpoint": f"http://127.0.0.1:{ports.s3}", "s3_access_key": "cli", "s3_secret_key": "cli-secret",
              "bucket": "doctune"}
    store = ObjectStore(Settings(**fields))
    deadline = time.monotonic() + 60
    while True:
        try:
            store.ensure_bucket()
            if proc.poll() is not None:  # what answered was another process's server on that port
                return None
            return proc, fields
        except Exception:
            if proc.poll() is not None:
                return None
            if time.monotonic() > deadline:
                os.killpg(proc.pid, signal.SIGKILL)
                raise AssertionError(f"weed did not start: {(home / 'weed.log').read_text()[-2000:]}") from None
            time.sleep(0.5)
