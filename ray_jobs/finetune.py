"""Run one fine-tuning job on the Ray cluster this driver was submitted to.

    ray job submit --address http://127.0.0.1:8265 -- python -m ray_jobs.finetune --spec job.yaml
    python -m ray_jobs.finetune --job-id job-...   (what the platform's dispatcher submits)
"""

from __future__ import annotations

import argparse
import json
import sys

from doctune.errors import DoctuneError


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m ray_jobs.finetune", description=__doc__.splitlines()[0])
    group = ap.add_mutually_exclusive_group(required=True)
    group.add_argument("--job-id", help="a job already recorded by the platform (API/CLI submissions)")
    group.add_argument("--spec", help="a JobSpec YAML file (direct `ray job submit` use; DOCTUNE_API_KEY names the tenant)")
    args = ap.parse_args(argv)

    from doctune.spec import load_job_spec
    from doctune.train.run import run_job, submit_spec_directly

    try:
        job_id = args.job_id or submit_spec_directly(load_job_spec(args.spec))
        print(f"doctune job {job_id}", flush=True)
        result = run_job(job_id)
    except DoctuneError as exc:
        print(f"error [{exc.code}]: {exc.message}", file=sys.stderr)
        return 2
    if "paused_at" in result:
        print(f"paused at step {result['paused_at']}; checkpoint {result['checkpoint']}")
        return 0
    if result.get("requeued"):
        print(f"attempt failed; re-queued as attempt {result['attempt']}")
        return 0
    test, base = result["test"], result["baseline"]["test"]
    primary = result.get("primary_metric", "macro_f1")
    print(json.dumps({"job_id": job_id, "step": result["step"], "metric": primary, "test": test[primary],
                      "baseline_test": base.get(primary)}))
    print(f"{'macro-F1' if primary == 'macro_f1' else primary} {test[primary]:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
