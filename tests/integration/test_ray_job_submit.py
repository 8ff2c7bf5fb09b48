"""The `ray job submit` door on the real stack: the README's own lines, copied from README.md and
changed only where the README says to (its `export` line names the stack's address and home), run a
tiny job to success with a token from `doctune jobs token`; a submission without a token stops
before any work with a message saying how to get one; and no Ray process finds the admin key, the
object store's secret or the database URL in its environment or its settings."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import yaml

from .conftest import REPO, ahead, tiny_job

BIN = Path(sys.executable).parent


def readme_lines() -> dict[str, str]:
    """The README's `ray job submit` block: its export, token and submit lines, verbatim."""
    section = (REPO / "README.md").read_text().split("Direct `ray job submit`", 1)[1]
    block = section.split("```bash\n", 1)[1].split("```", 1)[0]
    lines = [line for line in block.splitlines() if line.strip()]
    return {"export": next(line for line in lines if line.startswith("export RAY_ADDRESS=")),
            "token": next(line for line in lines if line.startswith("TOKEN=")),
            "submit": next(line for line in lines if line.startswith("ray job submit "))}


def user_shell(stack, tmp_path: Path, api_key: str | None = None) -> dict[str, str]:
    """A new user's shell: the venv's commands on PATH, no Ray settings of the test session's own."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RAY_ADDRESS", "RAY_AUTH"))}
    env.update({"PATH": f"{BIN}{os.pathsep}{env['PATH']}", "DOCTUNE_HOME": stack.home})
    if api_key:
        env["DOCTUNE_API_KEY"] = api_key
    return env


def the_readmes_export_line(stack) -> str:
    """The README's export line with the stack's address and home, the two things it says to change."""
    export = readme_lines()["export"]
    assert "http://127.0.0.1:28265" in export and "~/.doctune/ray/auth_token" in export, export
    return export.replace("http://127.0.0.1:28265", stack.ray_dashboard_url).replace("~/.doctune", stack.home)


def start_shell(request, name: str, script: str, files: dict[str, str], api_key: str | None = None) -> tuple:
    """Start ``script`` in a new user's shell in a folder of its own holding ``files``, now: the commands
    follow their Ray jobs to the end while other tests run; :func:`shell_ended` waits for them."""
    stack = request.getfixturevalue("stack")
    tmp_path = request.getfixturevalue("tmp_path_factory").mktemp(name)
    for file, text in files.items():
        (tmp_path / file).write_text(text)
    out = {n: tmp_path.parent / f"{tmp_path.name}.{n}" for n in ("stdout", "stderr")}  # files: no pipe fills up
    proc = subprocess.Popen(["bash", "-c", script], cwd=tmp_path, env=user_shell(stack, tmp_path, api_key),
                            stdout=open(out["stdout"], "w"), stderr=open(out["stderr"], "w"))
    return None, proc, out


def shell_ended(jobs_ahead: dict, name: str) -> subprocess.CompletedProcess:
    _, proc, out = jobs_ahead[name]
    returncode = proc.wait(timeout=1500)
    return subprocess.CompletedProcess(proc.args, returncode, *(out[n].read_text() for n in ("stdout", "stderr")))


@ahead()
def readme_submission(request):
    """The README's lines, run as they stand, but for the stack's address and home."""
    lines, stack = readme_lines(), request.getfixturevalue("stack")
    spec = tiny_job(request.getfixturevalue("bbc_dataset")["id"], max_steps=2, num_workers=1,
                    checkpoint_interval=100, eval_interval=100, name="via-readme")  # the README: "set dataset.id to one of yours"
    script = "\n".join(["set -euo pipefail", the_readmes_export_line(stack), lines["token"], lines["submit"]])
    return start_shell(request, "readme", script, {"job.yaml": yaml.safe_dump(spec)},
                       request.getfixturevalue("tenant_a"))


@ahead()
def tokenless_submission(request):
    stack = request.getfixturevalue("stack")
    spec = tiny_job(request.getfixturevalue("bbc_dataset")["id"], max_steps=2, name="no-token")
    submit = readme_lines()["submit"].replace(" --token $TOKEN", "")
    return start_shell(request, "no-token", f"{the_readmes_export_line(stack)}\n{submit}",
                       {"job.yaml": yaml.safe_dump(spec)}, request.getfixturevalue("tenant_a"))


def test_the_readmes_ray_job_submit_line_runs_a_job_to_success(client_a, jobs_ahead):
    out = shell_ended(jobs_ahead, "readme_submission")
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    assert "queued" in out.stdout and ("macro-F1 0." in out.stdout or "macro-F1 1." in out.stdout), out.stdout[-3000:]
    mine = [j for j in client_a.list_jobs() if j["spec"].get("name") == "via-readme"]
    assert len(mine) == 1 and mine[0]["status"] == "succeeded" and mine[0]["metrics"]["step"] == 2
    assert mine[0]["tenant"] == "team-a"


def test_a_submission_without_a_token_stops_before_any_work(client_a, jobs_ahead):
    out = shell_ended(jobs_ahead, "tokenless_submission")
    assert out.returncode != 0
    assert "doctune jobs token job.yaml" in out.stdout + out.stderr, out.stdout[-3000:] + out.stderr[-3000:]
    assert not [j for j in client_a.list_jobs() if j["spec"].get("name") == "no-token"]


PROBE = """
import json, os, sys
from doctune.config import load_settings
s = load_settings()
print("PROBE " + json.dumps({"env": {k: v for k, v in os.environ.items() if k.startswith(("DOCTUNE_", "AWS_"))},
      "settings": [s.admin_key, s.s3_access_key, s.s3_secret_key, s.database_url], "python": sys.prefix}))
"""


@ahead()
def probe_submission(request):
    return start_shell(request, "probe", f"{the_readmes_export_line(request.getfixturevalue('stack'))}\n"
                       "ray job submit --working-dir . -- python probe.py", {"probe.py": PROBE})


def test_ray_processes_find_no_admin_key_store_secret_or_database_url(stack, jobs_ahead):
    out = shell_ended(jobs_ahead, "probe_submission")
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    probe = json.loads(next(line for line in out.stdout.splitlines() if line.startswith("PROBE "))[6:])
    seen = json.dumps(probe["env"])
    for secret in (stack.admin_key, stack.s3_secret_key, stack.database_url):
        assert secret not in seen
    assert probe["settings"] == ["", "", "", ""]
    assert probe["python"] == sys.prefix  # the platform's Python, not the system's
