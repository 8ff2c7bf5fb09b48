"""The other doors into the same service: the token-protected Ray head refuses clients
without its token, and `doctune up/status` behave well when run twice or when a port is
taken. (`ray job submit` of a spec file: test_ray_job_submit.py.)"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

from doctune.local import LocalStack, Ports, find_free_port_base

BIN = Path(sys.executable).parent


def test_ray_head_refuses_clients_without_the_token(stack):
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_AUTH")}
    env["RAY_AUTH_MODE"] = "token"
    env["RAY_AUTH_TOKEN"] = "wrong-token"
    out = subprocess.run([str(BIN / "ray"), "job", "list", "--address", stack.ray_dashboard_url],
                         env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode != 0


def test_up_twice_is_harmless(stack):
    lines: list[str] = []
    LocalStack(home=Path(stack.home), base=Ports(int(stack.s3_endpoint.rsplit(":", 1)[1]) - 33).base, num_cpus=2).up(echo=lines.append)
    assert all("already running" in l for l in lines if l.startswith(("s3", "ray", "api")))
    out = subprocess.run([str(BIN / "doctune"), "status"], env={**os.environ, "DOCTUNE_HOME": stack.home},
                         capture_output=True, text=True, timeout=60)
    states = {line.split()[0]: line.split()[1] for line in out.stdout.splitlines() if line.strip()}
    assert out.returncode == 0 and states == dict.fromkeys(("ray", "s3", "db", "api", "console"), "up"), out.stdout


def test_port_in_use_and_stale_pid_get_clear_messages(tmp_path):
    home = tmp_path / "home"
    (home / "run").mkdir(parents=True)
    (home / "run" / "weed.pid").write_text("999999")  # a process that no longer exists
    with socket.socket() as blocker:
        base = _bind_s3_port_of_a_free_range(blocker)
        blocker.listen()
        out = subprocess.run([str(BIN / "doctune"), "up"], capture_output=True, text=True, timeout=120,
                             env={**os.environ, "DOCTUNE_HOME": str(home), "DOCTUNE_PORT_BASE": str(base)})
    assert out.returncode == 2
    assert "removed stale pid file for weed" in out.stdout
    assert f"s3={Ports(base).s3}" in out.stderr and "DOCTUNE_PORT_BASE" in out.stderr
    assert "Traceback" not in out.stderr
    assert not (home / "run" / "weed.pid").exists()
    assert not (home / "run" / "console.pid").exists()  # the console it started first went with it


def _bind_s3_port_of_a_free_range(blocker: socket.socket) -> int:
    """Bind ``blocker`` to the S3 port of a free port range; another process (a client's ephemeral
    port) may take a port between the check and the bind, so try the next range then. From 31000:
    below 32768, where no ephemeral port lands, and below the unit session's S3 server (40000 up)."""
    start = 31000
    while True:
        base = find_free_port_base(start=start)
        try:
            blocker.bind(("127.0.0.1", Ports(base).s3))
            return base
        except OSError:
            start = base + 1000
