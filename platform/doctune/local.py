"""The embedded local stack: `doctune up`, `doctune down`, `doctune status`.

Starts, on 127.0.0.1 only, the real components a cluster would have:
a SeaweedFS ``weed`` S3 server, a Ray head with token auth on, the SQLite
metadata store (migrated), the API server and the Gradio console
(``python -m doctune.console``, a client of the API). Everything lives under
``$DOCTUNE_HOME`` (default ``~/.doctune``): data, logs, pid files, the Ray
token and ``stack.json``. Ports come from ``DOCTUNE_PORT_BASE`` (default 28000)
so two stacks (say, yours and the test suite's) can run side by side.
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from doctune.config import Settings, doctune_home, load_settings, save_settings
from doctune.errors import DoctuneError

PORT_OFFSETS = {
    "serve": 0,
    "ray_client": 1,
    "dashboard_agent_listen": 2,
    "dashboard_agent_grpc": 3,
    "metrics_export": 4,
    "runtime_env_agent": 5,
    "s3": 33,
    "volume": 80,
    "api": 100,
    "console": 101,
    "dashboard": 265,
    "weed_master": 333,
    "gcs": 379,
    "filer": 888,
}
# weed also listens on <port> + 10000 for gRPC
WEED_GRPC = ("s3", "volume", "weed_master", "filer")


@dataclass
class Ports:
    base: int

    def __getattr__(self, name: str) -> int:
        if name in PORT_OFFSETS:
            return self.base + PORT_OFFSETS[name]
        raise AttributeError(name)

    def all(self) -> dict[str, int]:
        out = {n: self.base + o for n, o in PORT_OFFSETS.items()}
        out.update({f"{n}_grpc": self.base + PORT_OFFSETS[n] + 10000 for n in WEED_GRPC})
        return out


def port_base() -> int:
    return int(os.environ.get("DOCTUNE_PORT_BASE", "28000"))


def port_in_use(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return True
    return False


def find_free_port_base(start: int = 30000, stop: int = 50000, step: int = 1000) -> int:
    """A base whose every derived port is free (used by the test suite)."""
    for base in range(start, stop, step):
        if not any(port_in_use(p) for p in Ports(base).all().values()):
            return base
    raise DoctuneError("no free port range found for a local stack", "unavailable")


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a zombie child counts as dead
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split()[2] != "Z"
    except OSError:
        return True


def _read_pid(path: Path) -> int | None:
    try:
        return int(path.read_text().strip())
    except (OSError, ValueError):
        return None


def wait_until(check: Callable[[], bool], deadline_s: float, what: str, log: Path | None = None) -> None:
    end = time.monotonic() + deadline_s
    while time.monotonic() < end:
        try:
            if check():
                return
        except Exception:
            pass
        time.sleep(0.3)
    tail = ""
    if log and log.exists():
        tail = "\n--- last lines of " + str(log) + " ---\n" + "\n".join(log.read_text(errors="replace").splitlines()[-15:])
    raise DoctuneError(f"{what} did not become ready within {deadline_s:.0f}s{tail}", "unavailable")


class LocalStack:
    def __init__(self, home: Path | None = None, base: int | None = None, num_cpus: int | None = None) -> None:
        self.home = (home or doctune_home()).resolve()
        self.ports = Ports(base or port_base())
        self.num_cpus = num_cpus or int(os.environ.get("DOCTUNE_RAY_CPUS", "4"))
        self.run_dir = self.home / "run"
        self.log_dir = self.home / "logs"
        # Ray's socket paths must stay short: keep its temp dir in /tmp, named after our home
        # (created 0700 by _up_ray, which refuses one that is a symlink or another user's).
        self.ray_tmp = Path("/tmp") / f"doctune-ray-{hashlib.sha1(str(self.home).encode()).hexdigest()[:10]}"

    @classmethod
    def of(cls, s: Settings, num_cpus: int | None = None) -> "LocalStack":
        """The stack that ``s`` (its stack.json) describes, with its port range."""
        base = int(s.ray_dashboard_url.rsplit(":", 1)[1].split("/")[0]) - PORT_OFFSETS["dashboard"]
        return cls(home=Path(s.home), base=base, num_cpus=num_cpus)

    # ---------------------------------------------------------------- helpers
    def settings(self) -> Settings:
        return load_settings(self.home)

    def _env(self, s: Settings) -> dict[str, str]:
        env = dict(os.environ)
        env.update(s.to_env())
        env.update(s.ray_env())
        env.update(
            {
                "DS_ACCELERATOR": os.environ.get("DS_ACCELERATOR", "cpu"),
                # DeepSpeed's CPU ops (shm comm, CPU Adam) compile once (~1-2 min) into this
                # folder of the virtual environment (`make install` builds them there), shared by
                # every stack rather than rebuilt per home.
                "TORCH_EXTENSIONS_DIR": os.environ.get("TORCH_EXTENSIONS_DIR", str(Path(sys.prefix) / "torch_extensions")),
                "HF_HUB_OFFLINE": "1",
                "TOKENIZERS_PARALLELISM": "false",
                "RAY_USAGE_STATS_ENABLED": "0",
                "GRADIO_ANALYTICS_ENABLED": "False",
                "PYTHONUNBUFFERED": "1",
                # Ray maps 127.0.0.1 to the host's routable address unless this is off;
                # with it off every Ray process binds to loopback only.
                "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0",
                # Ray starts workers at niceness 15, below its own daemons and our API. On
                # the local stack training *is* the workload: run it at normal priority
                # (measured in docs/benchmarks.md). Override by exporting the variable.
                "RAY_worker_niceness": os.environ.get("RAY_worker_niceness", "0"),
                # Ray Train's preemption watcher (one more actor process per run) watches for spot
                # nodes being reclaimed; the embedded stack is one machine with none
                "RAY_TRAIN_ENABLE_PREEMPTION_WATCHER": os.environ.get("RAY_TRAIN_ENABLE_PREEMPTION_WATCHER", "0"),
                # Serve's controller kills a proxy not ready within 5 s (three tries): on one busy
                # machine, where training holds every core, a proxy's start (a Python process
                # importing Serve) takes longer, and the deploy then failed with "ProxyActor
                # killed by ray.kill" (seen in CI). A cluster's nodes keep Serve's defaults.
                "RAY_SERVE_PROXY_READY_CHECK_TIMEOUT_S": os.environ.get("RAY_SERVE_PROXY_READY_CHECK_TIMEOUT_S", "60"),
                "RAY_SERVE_PROXY_HEALTH_CHECK_TIMEOUT_S": os.environ.get("RAY_SERVE_PROXY_HEALTH_CHECK_TIMEOUT_S", "60"),
            }
        )
        return env

    def _ray_env(self, s: Settings) -> dict[str, str]:
        """The Ray head's environment, which every Ray process inherits: no credential (each job
        gets its own from the runner), and the platform's Python first on PATH, so that a `ray job
        submit` entrypoint's `python` is the one that has doctune and ray_jobs."""
        from doctune.config import CREDENTIAL_VARS

        env = {k: v for k, v in self._env(s).items() if k not in CREDENTIAL_VARS}
        env.update(s.ray_process_env())
        env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
        return env

    def _spawn(self, name: str, cmd: list[str], env: dict[str, str]) -> int:
        self.log_dir.mkdir(parents=True, exist_ok=True)
        log = open(self.log_dir / f"{name}.log", "ab")
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True, cwd=self.home)
        (self.run_dir / f"{name}.pid").write_text(str(proc.pid))
        return proc.pid

    def _check_ports(self, names: list[str]) -> None:
        busy = [f"{n}={p}" for n, p in self.ports.all().items() if n.removesuffix("_grpc") in names and port_in_use(p)]
        if busy:
            raise DoctuneError(
                f"port(s) already in use by another program: {', '.join(busy)}. Stop that program, "
                f"or pick another range with DOCTUNE_PORT_BASE (now {self.ports.base}), e.g. DOCTUNE_PORT_BASE=31000",
                "conflict",
            )

    def _alive(self, name: str) -> bool:
        pid = _read_pid(self.run_dir / f"{name}.pid")
        return pid is not None and _pid_alive(pid)

    def _clear_stale(self, name: str) -> bool:
        pf = self.run_dir / f"{name}.pid"
        if pf.exists() and not self._alive(name):
            pf.unlink()
            return True
        return False

    # ---------------------------------------------------------------- up
    def up(self, echo: Callable[[str], None] = print) -> Settings:
        for d in (self.home, self.run_dir, self.log_dir, self.home / "s3", self.home / "ray"):
            d.mkdir(parents=True, exist_ok=True)
        os.chmod(self.home, 0o700)
        s = self.settings()
        s.bucket = s.bucket or "doctune"
        s.s3_access_key = s.s3_access_key or "dt" + secrets.token_hex(8)
        s.s3_secret_key = s.s3_secret_key or secrets.token_urlsafe(30)
        s.key_secret = s.key_secret or secrets.token_hex(32)  # keys the API keys' HMACs (doctune.store.keys)
        s.s3_endpoint = f"http://127.0.0.1:{self.ports.s3}"
        s.weed_master = f"127.0.0.1:{self.ports.weed_master}"  # where tenant S3 keys are added
        s.ray_dashboard_url = f"http://127.0.0.1:{self.ports.dashboard}"
        s.ray_gcs_address = f"127.0.0.1:{self.ports.gcs}"
        s.api_url = f"http://127.0.0.1:{self.ports.api}"
        s.serve_port = self.ports.serve
        s.serve_url = f"http://127.0.0.1:{self.ports.serve}"
        token = self.home / "ray" / "auth_token"
        if not token.exists():
            token.write_text(secrets.token_hex(32))
            os.chmod(token, 0o600)
        s.ray_token_path = str(token)
        save_settings(s)

        for name in ("weed", "api", "console"):
            if self._clear_stale(name):
                echo(f"removed stale pid file for {name} (process no longer running)")
        console_started = self._start_console(s)  # it loads Gradio while the rest starts
        try:
            self._up_weed(s, echo)
            self._up_ray(s, echo)
            self._up_db(s, echo)
            self._up_api(s, echo)
        except BaseException:  # a port in use, a server that never came up: no console left behind
            if console_started:
                self._stop("console")
            raise
        self._console_ready(s, console_started, echo)
        return s

    def _stop(self, name: str) -> None:
        pid = _read_pid(self.run_dir / f"{name}.pid")
        if pid and _pid_alive(pid):
            _terminate([pid], grace_s=5, group=True)
        (self.run_dir / f"{name}.pid").unlink(missing_ok=True)

    def _up_weed(self, s: Settings, echo) -> None:
        from doctune.store.objects import ObjectStore

        store = ObjectStore(s)
        if self._alive("weed"):
            echo(f"s3      already running at {s.s3_endpoint}")
            return
        self._check_ports(list(WEED_GRPC))
        ident = self.home / "s3" / "identities.json"
        ident.write_text(
            json.dumps(
                {
                    "identities": [
                        {
                            "name": "doctune",
                            "credentials": [{"accessKey": s.s3_access_key, "secretKey": s.s3_secret_key}],
                            "actions": ["Admin", "Read", "List", "Tagging", "Write"],
                        }
                    ]
                }
            )
        )
        os.chmod(ident, 0o600)
        weed = shutil.which("weed") or str(Path(sys.executable).parent / "weed")
        p = self.ports
        self._spawn(
            "weed",
            [
                weed, "server", f"-dir={self.home / 's3'}", "-ip=127.0.0.1", "-ip.bind=127.0.0.1",
                f"-master.port={p.weed_master}", f"-volume.port={p.volume}", "-master.volumeSizeLimitMB=256",
                # volumes of 256 MB, as many as the disk holds (the default cap of 8 is 2 GB in all)
                "-volume.max=0",
                "-filer", f"-filer.port={p.filer}", "-s3", f"-s3.port={p.s3}", f"-s3.config={ident}",
                # fixed-port side servers would collide between two stacks; we use neither
                "-s3.port.iceberg=0", "-s3.port.lance=0", "-master.telemetry=false",
            ],
            self._env(s),
        )

        def ready() -> bool:
            store.client.list_buckets()
            store.ensure_bucket()
            return True

        wait_until(ready, 60, "the S3 server (weed)", self.log_dir / "weed.log")
        echo(f"s3      started at {s.s3_endpoint} (bucket {s.bucket}, data in {self.home / 's3'})")

    def ray_up(self, s: Settings) -> bool:
        import httpx

        try:
            r = httpx.get(f"{s.ray_dashboard_url}/api/version", headers={"Authorization": f"Bearer {s.ray_token()}"}, timeout=3)
            return r.status_code == 200
        except httpx.HTTPError:
            return False

    def _up_ray(self, s: Settings, echo) -> None:
        if self.ray_up(s):
            echo(f"ray     already running at {s.ray_dashboard_url}")
            return
        self._kill_ray()  # leftovers of a crashed head would hold its ports
        self._check_ports(["gcs", "dashboard", "ray_client", "dashboard_agent_listen", "dashboard_agent_grpc", "metrics_export", "runtime_env_agent"])
        p = self.ports
        ray = str(Path(sys.executable).parent / "ray")
        cmd = [
            ray, "start", "--head", "--node-ip-address=127.0.0.1", f"--port={p.gcs}",
            "--dashboard-host=127.0.0.1", f"--dashboard-port={p.dashboard}", "--include-dashboard=true",
            f"--ray-client-server-port={p.ray_client}", f"--dashboard-agent-listen-port={p.dashboard_agent_listen}",
            f"--dashboard-agent-grpc-port={p.dashboard_agent_grpc}", f"--metrics-export-port={p.metrics_export}",
            f"--runtime-env-agent-port={p.runtime_env_agent}", f"--num-cpus={self.num_cpus}", "--num-gpus=0",
            f"--temp-dir={self.ray_tmp}", "--disable-usage-stats",
        ]
        self.log_dir.mkdir(parents=True, exist_ok=True)
        # a predictable name in the shared /tmp: ours alone (0700), never one another user planted
        from doctune.store.paths import ensure_private_dir

        ensure_private_dir(self.ray_tmp)
        with open(self.log_dir / "ray-start.log", "ab") as log:
            rc = subprocess.call(cmd, stdout=log, stderr=subprocess.STDOUT, env=self._ray_env(s), cwd=self.home)
        if rc != 0:
            raise DoctuneError(f"`ray start` failed (exit {rc}); see {self.log_dir / 'ray-start.log'}", "unavailable")
        wait_until(lambda: self.ray_up(s), 90, "the Ray dashboard", self.log_dir / "ray-start.log")
        echo(f"ray     started: dashboard {s.ray_dashboard_url}, GCS {s.ray_gcs_address}, {self.num_cpus} logical CPUs, "
             f"token auth on; Prometheus metrics at {metrics_url(s)}")

    def _up_db(self, s: Settings, echo) -> None:
        from doctune.services import Platform
        from doctune.services.tenants import create_admin_key

        p = Platform(s)
        p.db.migrate()
        if not s.admin_key:
            s.admin_key = create_admin_key(p)
            save_settings(s)
        p.db.dispose()
        echo(f"db      migrated: {s.database_url}")

    def api_up(self, s: Settings) -> bool:
        import httpx

        try:
            return httpx.get(f"{s.api_url}/healthz", timeout=3).status_code == 200
        except httpx.HTTPError:
            return False

    def _up_api(self, s: Settings, echo) -> None:
        if self._alive("api") and self.api_up(s):
            echo(f"api     already running at {s.api_url}")
            return
        self._check_ports(["api"])
        self._spawn(
            "api",
            [sys.executable, "-m", "uvicorn", "doctune.api.app:create_app", "--factory",
             "--host", "127.0.0.1", "--port", str(self.ports.api), "--log-level", "warning"],
            self._env(s),
        )
        wait_until(lambda: self.api_up(s), 60, "the API server", self.log_dir / "api.log")
        echo(f"api     started at {s.api_url}")

    def console_up(self, s: Settings) -> bool:
        import httpx

        try:
            return httpx.get(console_url(s), timeout=3).status_code == 200
        except httpx.HTTPError:
            return False

    def _start_console(self, s: Settings) -> bool:
        """Spawn the console (it needs nothing else to start: it calls the API only when a user acts);
        False when it is already running."""
        if self._alive("console"):
            return False
        from doctune.config import CREDENTIAL_VARS

        self._check_ports(["console"])
        env = {k: v for k, v in self._env(s).items() if k not in CREDENTIAL_VARS}  # it acts with its users' keys only
        self._spawn("console", [sys.executable, "-m", "doctune.console", "--api-url", s.api_url,
                                "--port", str(self.ports.console)], env)
        return True

    def _console_ready(self, s: Settings, started: bool, echo) -> None:
        if not started:
            echo(f"console already running at {console_url(s)}")
            return
        wait_until(lambda: self.console_up(s), 90, "the console", self.log_dir / "console.log")
        echo(f"console started at {console_url(s)}")

    # ---------------------------------------------------------------- down
    def _ray_pids(self) -> list[int]:
        import psutil

        # Our head's processes name its temp dir or its GCS port; their children
        # (dashboard modules, workers) may name neither, so take whole trees.
        markers = (str(self.ray_tmp), f":{self.ports.gcs}\0")  # args are joined with NUL below
        roots = []
        for proc in psutil.process_iter(["pid", "cmdline"]):
            try:
                cmd = "\0".join(proc.info["cmdline"] or []) + "\0"
                if "ray" in cmd and any(m in cmd for m in markers):
                    roots.append(proc)
            except (psutil.Error, TypeError):
                continue
        out = {p.pid for p in roots}
        for p in roots:
            try:
                out.update(c.pid for c in p.children(recursive=True))
            except psutil.Error:
                continue
        out.discard(os.getpid())
        return sorted(out)

    def _kill_ray(self) -> None:
        _terminate(self._ray_pids(), grace_s=8)
        # workers of this head that did not carry the marker die with their raylet
        if self.ray_tmp.exists():
            shutil.rmtree(self.ray_tmp, ignore_errors=True)

    def down(self, echo: Callable[[str], None] = print) -> None:
        for name in ("console", "api", "weed"):
            pid = _read_pid(self.run_dir / f"{name}.pid")
            was_running = bool(pid and _pid_alive(pid))
            self._stop(name)
            if was_running:
                echo(f"{name:7} stopped")
        if self._ray_pids():
            self._kill_ray()
            echo("ray     stopped")

    # ---------------------------------------------------------------- faults (the fault tests use these)
    def kill(self, name: str) -> None:
        """Kill the ``api`` or ``weed`` process group at once (SIGKILL), as a crash or an OOM kill
        would: no shutdown hook runs. `doctune up` (or :meth:`restart`) starts it again."""
        pid = _read_pid(self.run_dir / f"{name}.pid")
        if pid is None:
            return
        try:
            os.killpg(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        wait_until(lambda: not _pid_alive(pid), 30, f"{name} to exit")
        try:
            os.waitpid(pid, os.WNOHANG)  # reap it when this process started it
        except ChildProcessError:
            pass

    def stop(self, name: str) -> None:
        """Stop the ``api`` or ``weed`` process group as `doctune down` does (SIGTERM, then SIGKILL)."""
        pid = _read_pid(self.run_dir / f"{name}.pid")
        if pid and _pid_alive(pid):
            _terminate([pid], grace_s=10, group=True)

    def restart(self, name: str, echo: Callable[[str], None] = lambda _: None) -> None:
        """Start ``api``, ``weed`` or ``ray`` again with the stack's settings (ray: its head is
        stopped first, which ends every driver, worker and Serve replica on it)."""
        s = self.settings()
        if name == "ray":
            self._kill_ray()
            wait_until(lambda: not self.ray_up(s), 30, "the old Ray head to stop")
            self._up_ray(s, echo)
        else:
            self._clear_stale(name)
            if name == "console":
                self._console_ready(s, self._start_console(s), echo)
                return
            {"api": self._up_api, "weed": self._up_weed}[name](s, echo)

    # ---------------------------------------------------------------- status
    def status(self) -> dict[str, dict[str, str]]:
        s = self.settings()
        out: dict[str, dict[str, str]] = {}

        def probe(name: str, where: str, fn: Callable[[], bool]) -> None:
            try:
                ok = bool(fn())
            except Exception:
                ok = False
            out[name] = {"state": "up" if ok else "down", "where": where}

        if not (self.home / "stack.json").exists():
            return {n: {"state": "down", "where": "-"} for n in ("ray", "s3", "db", "api", "console")}
        from doctune.store.objects import ObjectStore

        probe("ray", f"{s.ray_dashboard_url} (Prometheus metrics: {metrics_url(s)})", lambda: self.ray_up(s))
        probe("s3", s.s3_endpoint, lambda: self._alive("weed") and ObjectStore(s).client.list_buckets() is not None)

        def db_ok() -> bool:
            from sqlalchemy import text

            from doctune.store.db import Database

            d = Database(s.database_url)
            with d.engine.connect() as c:
                c.execute(text("select 1 from tenants limit 1"))
            d.dispose()
            return True

        probe("db", s.database_url, db_ok)
        probe("api", s.api_url, lambda: self.api_up(s))
        probe("console", console_url(s), lambda: self.console_up(s))
        return out


def metrics_url(s: Settings) -> str:
    """Where the head's Ray metrics agent serves Prometheus metrics (``--metrics-export-port``),
    the endpoints' ``ray_doctune_endpoint_*`` included: derived from the stack's dashboard port,
    so it is right whatever DOCTUNE_PORT_BASE says now."""
    try:
        base = int(s.ray_dashboard_url.rsplit(":", 1)[1].split("/")[0]) - PORT_OFFSETS["dashboard"]
    except (IndexError, ValueError):
        return "-"
    return f"http://127.0.0.1:{Ports(base).metrics_export}/metrics"


def console_url(s: Settings) -> str:
    """The stack's console (``python -m doctune.console``), beside its API: the port follows the
    API's (the same ``DOCTUNE_PORT_BASE``)."""
    try:
        api_port = int(s.api_url.rsplit(":", 1)[1].split("/")[0])
    except (AttributeError, IndexError, ValueError):
        return "-"
    return f"http://127.0.0.1:{api_port - PORT_OFFSETS['api'] + PORT_OFFSETS['console']}/"


def _terminate(pids: list[int], grace_s: float, group: bool = False) -> None:
    def send(pid: int, sig: int) -> None:
        try:
            if group:
                os.killpg(pid, sig)
            else:
                os.kill(pid, sig)
        except (ProcessLookupError, PermissionError):
            pass

    for pid in pids:
        send(pid, signal.SIGTERM)
    end = time.monotonic() + grace_s
    while time.monotonic() < end and any(_pid_alive(p) for p in pids):
        time.sleep(0.2)
    for pid in pids:  # weed ignores SIGTERM for a while; stop it firmly
        if _pid_alive(pid):
            send(pid, signal.SIGKILL)
    for pid in pids:
        try:
            os.waitpid(pid, os.WNOHANG)
        except ChildProcessError:
            pass
