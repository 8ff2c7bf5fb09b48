"""Run one sweep on the Ray cluster this driver was submitted to.

    python -m ray_jobs.sweep --sweep-id sweep-...   (what the platform submits for POST /v1/sweeps)
"""

from __future__ import annotations

import argparse
import json
import sys

from doctune.errors import DoctuneError


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m ray_jobs.sweep", description=__doc__.splitlines()[0])
    ap.add_argument("--sweep-id", required=True, help="a sweep recorded by the platform")
    args = ap.parse_args(argv)

    from doctune.train.sweep import run_sweep

    try:
        result = run_sweep(args.sweep_id)
    except DoctuneError as exc:
        print(f"error [{exc.code}]: {exc.message}", file=sys.stderr)
        return 2
    best = result["winner"]
    print(json.dumps({"sweep_id": args.sweep_id, "winner": best and best["job_id"], "dev": best and best["dev"],
                      "trials": len(result["trials"])}))
    return 0 if best else 1


if __name__ == "__main__":
    sys.exit(main())
