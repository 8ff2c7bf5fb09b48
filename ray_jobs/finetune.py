"""Run one fine-tuning job on the Ray cluster this driver was submitted to.

    ray job submit --working-dir . -- python -m ray_jobs.finetune --spec job.yaml --token dtj_...
    python -m ray_jobs.finetune --job-id job-...   (what the platform's dispatcher submits)
"""

from __future__ import annotations

import argparse
import sys


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m ray_jobs.finetune", description=__doc__.splitlines()[0])
    group = ap.add_mutually_exclusive_group(required=True)
    group.add_argument("--job-id", help="a job already recorded by the platform (API/CLI submissions)")
    group.add_argument("--spec", help="a JobSpec YAML file (the `ray job submit` door; needs --token or --as-admin)")
    ap.add_argument("--token", help="a one-time submission token for this spec: `doctune jobs token job.yaml`")
    ap.add_argument("--as-admin", action="store_true", help="submit as the platform admin (DOCTUNE_ADMIN_KEY set)")
    args = ap.parse_args(argv)

    from doctune.drivers.direct import submit_spec_file
    from doctune.drivers.job import run_from_entrypoint

    return run_from_entrypoint(args.job_id) if args.job_id else submit_spec_file(args.spec, args.token, args.as_admin)


if __name__ == "__main__":
    sys.exit(main())
