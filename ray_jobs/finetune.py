"""Run one fine-tuning job on the Ray cluster this driver was submitted to.

    ray job submit --address http://127.0.0.1:8265 -- python -m ray_jobs.finetune --spec job.yaml
    python -m ray_jobs.finetune --job-id job-...   (what the platform's dispatcher submits)
"""

from __future__ import annotations

import argparse
import sys


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m ray_jobs.finetune", description=__doc__.splitlines()[0])
    group = ap.add_mutually_exclusive_group(required=True)
    group.add_argument("--job-id", help="a job already recorded by the platform (API/CLI submissions)")
    group.add_argument("--spec", help="a JobSpec YAML file (direct `ray job submit` use; DOCTUNE_API_KEY names the tenant)")
    args = ap.parse_args(argv)

    from doctune.drivers.job import run_from_entrypoint

    return run_from_entrypoint(args.job_id, args.spec)


if __name__ == "__main__":
    sys.exit(main())
