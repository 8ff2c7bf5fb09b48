"""The Dockerfile builds the image the chart runs (no image can be built in the tests, so the file is
read): a multi-stage build on python:3.11-slim with torch 2.13.0 from PyTorch's CPU index; the final
user is non-root and the uid:gid the chart's podSecurityContext runs as; the operator package and kopf
are in it, Ray is the chart's rayVersion, and the chart's default image tag is the project's version;
every command the chart's containers run has its program in the image, and the entrypoint's roles
run the chart's commands; .dockerignore lets through
every COPY source and keeps the checkout's clutter out; docs/install.md shows the build command for
the chart's default repository."""

from __future__ import annotations

import fnmatch
import os
import re
import shlex
import subprocess
import tomllib

import yaml

from tests.chart._render import CHART, containers, pod_templates, render
from tests.chart._schemas import ROOT

DOCKERFILE = ROOT / "Dockerfile"


def instructions() -> list[tuple[str, str]]:
    """``(INSTRUCTION, arguments)`` of the Dockerfile, continuation lines joined, comments dropped."""
    out: list[tuple[str, str]] = []
    pending = ""
    for line in DOCKERFILE.read_text().splitlines():
        if not pending and (not line.strip() or line.lstrip().startswith("#")):
            continue
        if line.rstrip().endswith("\\"):
            pending += line.rstrip()[:-1] + " "
            continue
        words = (pending + line).strip().split(None, 1)
        pending = ""
        out.append((words[0].upper(), words[1] if len(words) > 1 else ""))
    return out


def args_of() -> dict[str, str]:
    return dict(a.split("=", 1) for k, a in instructions() if k == "ARG" and "=" in a)


def expand(text: str) -> str:
    args = args_of()
    return re.sub(r"\$\{(\w+)\}", lambda m: args.get(m.group(1), m.group(0)), text)


def final_stage() -> list[tuple[str, str]]:
    steps = instructions()
    last = max(i for i, (k, _) in enumerate(steps) if k == "FROM")
    return steps[last:]


def chart_values() -> dict:
    return yaml.safe_load((CHART / "values.yaml").read_text())


def test_the_build_is_multi_stage_on_python_311_slim():
    froms = [expand(a) for k, a in instructions() if k == "FROM"]
    assert len(froms) >= 2 and all(f.split()[0] == "python:3.11-slim" for f in froms), froms
    assert any("--from=build" in a for k, a in final_stage() if k == "COPY")  # the runtime copies the built venv


def test_torch_is_2_13_0_from_pytorchs_cpu_index():
    runs = " ".join(expand(a) for k, a in instructions() if k == "RUN")
    assert re.search(r'"?torch==2\.13\.0"? --index-url "?https://download\.pytorch\.org/whl/cpu"?', runs), runs
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert "torch==2.13.0" in project["dependencies"]  # so `pip install .` keeps the CPU wheel


def test_the_image_runs_as_the_non_root_user_the_chart_runs_as():
    users = [a for k, a in final_stage() if k == "USER"]
    assert users, "the final stage sets no USER: the image would run as root"
    uid, _, gid = users[-1].partition(":")
    ctx = chart_values()["podSecurityContext"]
    assert uid.isdigit() and int(uid) != 0, f"USER {users[-1]}: use a numeric non-root uid (runAsNonRoot checks numbers)"
    assert int(uid) == ctx["runAsUser"] and int(gid) == ctx["runAsGroup"], (users[-1], ctx)
    useradd = " ".join(expand(a) for k, a in final_stage() if k == "RUN" and "useradd" in a)
    assert f"--uid {uid}" in useradd and f"--gid {gid}" in useradd  # a named user, with a home, for that uid


def test_the_operator_ray_and_the_version_agree_with_the_chart():
    steps = instructions()
    assert any(k == "COPY" and a.split()[0] == "operators/" for k, a in steps), "the operators package is not copied"
    assert "/opt/doctune" in " ".join(a for k, a in final_stage() if k == "ENV")  # PYTHONPATH: kopf run -m operators...
    assert re.search(r"kopf==\d", " ".join(expand(a) for k, a in steps if k == "RUN"))
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    ray_pin = next(d for d in project["dependencies"] if d.startswith("ray["))
    assert ray_pin.endswith("==" + chart_values()["rayCluster"]["rayVersion"]), ray_pin
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    assert chart["appVersion"] == project["version"]  # image.tag defaults to appVersion


def test_every_program_the_charts_containers_run_is_in_the_image():
    """The API, bootstrap, console and operator commands name python modules or scripts that the
    image installs; the Ray Pods run KubeRay's `ray start` with probes that call wget."""
    docs = render(CHART / "ci" / "gpu-rayjob-values.yaml")
    ours = [c for d in docs for _, t in pod_templates(d) for c in containers(t)
            if c["image"].startswith(chart_values()["image"]["repository"] + ":")]
    assert {c["name"] for c in ours} >= {"api", "bootstrap", "console", "operator"}
    dockerfile = DOCKERFILE.read_text()
    for c in ours:
        command = c.get("command") or []
        if not command:
            continue  # KubeRay fills in `ray start`
        if command[0] == "python":
            module = command[command.index("-m") + 1]
            top = module.split(".")[0]
            assert top in ("doctune", "uvicorn") or f"{top}/" in dockerfile, (c["name"], module)
        else:
            assert command[0] in ("kopf", "ray"), (c["name"], command)
    apt = " ".join(a for k, a in final_stage() if k == "RUN" and "apt-get install" in a)
    assert "wget" in apt.split() and "g++" in apt.split()  # KubeRay's probes; DeepSpeed's CPU ops


def test_dockerignore_lets_every_copy_source_through_and_keeps_clutter_out():
    patterns = [p.strip() for p in (ROOT / ".dockerignore").read_text().splitlines() if p.strip() and not p.startswith("#")]

    def ignored(path: str) -> bool:
        verdict = False
        for p in patterns:
            neg, pat = p.startswith("!"), p.lstrip("!").rstrip("/")
            if fnmatch.fnmatch(path, pat) or path.startswith(pat + "/"):  # (fnmatch's * also matches /)
                verdict = not neg
        return verdict

    sources = [src for k, a in instructions() if k == "COPY" and "--from" not in a
               for src in [w for w in shlex.split(a) if not w.startswith("--")][:-1]]
    assert sources
    for src in sources:
        assert (ROOT / src).exists(), f"COPY {src}: no such path"
        assert not ignored(src.rstrip("/")), f".dockerignore drops {src}, which the Dockerfile copies"
    for clutter in (".git", ".venv", "tests", ".doctune-test", "platform/doctune/__pycache__"):
        assert ignored(clutter), f".dockerignore lets {clutter} into the build context"


def test_install_md_shows_how_to_build_the_charts_default_image():
    text = (ROOT / "docs" / "install.md").read_text()
    assert "## Building the image" in text
    repo = chart_values()["image"]["repository"]
    tag = yaml.safe_load((CHART / "Chart.yaml").read_text())["appVersion"]
    assert f"docker build -t {repo}:{tag} ." in text
    assert repo in DOCKERFILE.read_text()  # the Dockerfile's header says the same


def test_the_entrypoints_roles_run_what_the_charts_containers_run(tmp_path):
    """Each role of docker/entrypoint.sh, run with stand-ins for python, kopf and ray that print their
    argv, starts the same program with the same leading arguments as the chart's container."""
    for program in ("python", "kopf", "ray"):
        stub = tmp_path / program
        stub.write_text(f'#!/bin/sh\nprintf "%s\\n" {program} "$@"\n')
        stub.chmod(0o755)
    env = {**os.environ, "PATH": f"{tmp_path}:{os.environ['PATH']}", "PORT": "8080"}

    def run(*argv: str) -> list[str]:  # (env is read at each call)
        out = subprocess.run(["sh", str(ROOT / "docker" / "entrypoint.sh"), *argv], env=env, capture_output=True,
                             text=True, timeout=30, check=True)
        return out.stdout.splitlines()

    docs = render(None)
    chart = {c["name"]: c["command"] for d in docs for _, t in pod_templates(d) for c in containers(t) if c.get("command")}
    assert run("api") == chart["api"]  # python -m uvicorn ... --port 8080 --proxy-headers
    assert run("bootstrap") == chart["bootstrap"]
    assert run("operator") == chart["operator"]
    assert run("console")[:3] == chart["console"][:3]  # python -m doctune.console (the chart adds --api-url)
    env["RAY_ADDRESS"] = "head:6379"
    assert run("ray-worker", "--num-cpus=1") == ["ray", "start", "--block", "--address=head:6379", "--num-cpus=1"]
    assert run("echo", "hello") == ["hello"]  # anything else runs as given
