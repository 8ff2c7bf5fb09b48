"""Where doctune's components are, for every process that needs them.

`doctune up` writes ``$DOCTUNE_HOME/stack.json`` (mode 0600) describing the
embedded stack it started; every other process — the CLI, the API server, a Ray
job driver, a Serve replica — calls :func:`load_settings`, which reads that file
and lets ``DOCTUNE_*`` environment variables override each entry. In a cluster
(Helm) there is no stack file and the environment says everything.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, fields
from pathlib import Path


def doctune_home() -> Path:
    return Path(os.environ.get("DOCTUNE_HOME", Path.home() / ".doctune")).expanduser().resolve()


@dataclass
class Settings:
    home: str = ""
    database_url: str = ""
    s3_endpoint: str = ""
    s3_access_key: str = ""
    s3_secret_key: str = ""
    s3_region: str = "us-east-1"
    bucket: str = "doctune"
    ray_dashboard_url: str = ""
    ray_gcs_address: str = ""
    ray_token_path: str = ""
    api_url: str = ""
    serve_url: str = ""
    serve_port: int = 0
    admin_key: str = ""
    runner: str = "shared"  # how jobs reach the cluster: "shared" = the Ray Jobs API of one Ray head
    max_upload_bytes: int = 200 * 1024 * 1024
    # the API's reconciler (doctune.services.reconcile): how often it compares every unfinished job,
    # sweep and deployment with the cluster, and how long a claim or a deploy may go unrecorded first
    reconcile_interval_s: float = 15.0
    reconcile_grace_s: float = 60.0

    def ray_env(self) -> dict[str, str]:
        """Environment a Ray client needs to talk to our token-protected head."""
        env = {"RAY_AUTH_MODE": "token"}
        if self.ray_token_path:
            env["RAY_AUTH_TOKEN_PATH"] = self.ray_token_path
        return env

    def ray_token(self) -> str:
        if os.environ.get("RAY_AUTH_TOKEN"):
            return os.environ["RAY_AUTH_TOKEN"]
        if self.ray_token_path and Path(self.ray_token_path).exists():
            return Path(self.ray_token_path).read_text().strip()
        return ""

    def to_env(self) -> dict[str, str]:
        """The same settings as DOCTUNE_* variables, for processes we launch."""
        out = {"DOCTUNE_HOME": self.home}
        for f in fields(self):
            if f.name == "home":
                continue
            value = getattr(self, f.name)
            if value not in ("", 0, None):
                out[f"DOCTUNE_{f.name.upper()}"] = str(value)
        return out


def stack_file(home: Path | None = None) -> Path:
    return (home or doctune_home()) / "stack.json"


def load_settings(home: Path | None = None) -> Settings:
    home = home or doctune_home()
    data: dict = {}
    sf = stack_file(home)
    if sf.exists():
        try:
            data = json.loads(sf.read_text())
        except json.JSONDecodeError:
            data = {}
    s = Settings(home=str(home))
    for f in fields(s):
        if f.name == "home":
            continue
        if f.name in data:
            setattr(s, f.name, type(getattr(s, f.name))(data[f.name]))
        env = os.environ.get(f"DOCTUNE_{f.name.upper()}")
        if env:
            setattr(s, f.name, type(getattr(s, f.name))(env))
    if not s.database_url:
        s.database_url = f"sqlite:///{home / 'doctune.db'}"
    return s


def save_settings(s: Settings) -> Path:
    home = Path(s.home)
    home.mkdir(parents=True, exist_ok=True)
    sf = stack_file(home)
    data = {k: v for k, v in asdict(s).items() if k != "home"}
    tmp = sf.with_suffix(".tmp")
    tmp.write_text(json.dumps(data, indent=2))
    os.chmod(tmp, 0o600)
    tmp.replace(sf)
    return sf
