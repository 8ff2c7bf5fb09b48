"""Run one sweep on the Ray cluster this driver was submitted to.

    python -m ray_jobs.sweep --sweep-id sweep-...   (what the platform submits for POST /v1/sweeps)
"""

from __future__ import annotations

import argparse
import sys


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m ray_jobs.sweep", description=__doc__.splitlines()[0])
    ap.add_argument("--sweep-id", required=True, help="a sweep recorded by the platform")
    args = ap.parse_args(argv)

    from doctune.drivers.sweep import run_from_entrypoint

    return run_from_entrypoint(args.sweep_id)


if __name__ == "__main__":
    sys.exit(main())
