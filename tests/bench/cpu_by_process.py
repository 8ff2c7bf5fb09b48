"""Where a run's CPU goes: sample every process every second and sum its CPU seconds by kind
(Ray Train workers, Train controllers, other Ray actors, Ray daemons, job drivers, Serve
replicas, the API, the S3 server, pytest). Used to see what the test suite spends its time on:

    python -m tests.bench.cpu_by_process OUT.json &   # then run the suite; kill -INT the sampler

A process that ends between two samples loses at most its last second."""

from __future__ import annotations

import json
import signal
import sys
import time

import psutil

KINDS = [  # (kind, substring of the command line), first match wins
    ("train worker", "RayTrainWorker"), ("train controller", "TrainController"),
    ("serve replica", "ServeReplica"), ("serve controller", "ServeController"), ("serve proxy", "ProxyActor"),
    ("job driver", "ray_jobs."), ("tuning matrix", "tuning_matrix"), ("ray actor (other)", "ray::"),
    ("ray gcs", "gcs_server"), ("raylet", "raylet"), ("ray dashboard", "dashboard"), ("ray (other)", "/ray/"),
    ("api", "uvicorn"), ("s3 server", "weed"), ("pytest", "pytest"), ("pip/compile", "pip"),
]


def kind_of(cmdline: str) -> str:
    kind = next((kind for kind, needle in KINDS if needle in cmdline), "other")
    if kind == "ray actor (other)":  # by its class: ray::PlacementGroupCleaner, ray::IDLE, ...
        return "ray::" + cmdline.split("ray::", 1)[1].split()[0].split(".")[0]
    if kind == "other":
        return "other: " + (cmdline.split()[0].rsplit("/", 1)[-1] if cmdline else "?")
    return kind


def sample(seen: dict) -> None:
    for proc in psutil.process_iter(["pid", "create_time", "cmdline", "cpu_times"]):
        info = proc.info
        if not info["cpu_times"]:
            continue
        cmd = " ".join(info["cmdline"] or [])
        seen[(info["pid"], info["create_time"])] = (kind_of(cmd), info["cpu_times"].user + info["cpu_times"].system)


def main(out: str) -> None:
    seen: dict = {}
    start = time.monotonic()
    baseline = {key: cpu for key, (_, cpu) in (sample(seen) or seen).items()}
    stop = []
    signal.signal(signal.SIGINT, lambda *_: stop.append(1))
    signal.signal(signal.SIGTERM, lambda *_: stop.append(1))
    while not stop:
        time.sleep(1.0)
        sample(seen)
    totals: dict[str, float] = {}
    for key, (kind, cpu) in seen.items():
        totals[kind] = totals.get(kind, 0.0) + cpu - baseline.get(key, 0.0)
    wall = time.monotonic() - start
    report = {"wall_s": round(wall, 1), "cpu_s": {k: round(v, 1) for k, v in sorted(totals.items(), key=lambda kv: -kv[1])},
              "processes": {k: sum(1 for kk, _ in seen.values() if kk == k) for k in totals}}
    with open(out, "w") as f:
        json.dump(report, f, indent=1)


if __name__ == "__main__":
    main(sys.argv[1])
