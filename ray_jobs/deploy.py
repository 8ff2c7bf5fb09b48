"""Deploy (or update) one doctune deployment as a Ray Serve application.

    python -m ray_jobs.deploy --deployment-id dep-...            (submitted by the platform)
    python -m ray_jobs.deploy --deployment-id dep-... --delete   (undeploy: its Serve application goes)
"""

from __future__ import annotations

import argparse
import sys


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m ray_jobs.deploy", description=__doc__.splitlines()[0])
    ap.add_argument("--deployment-id", required=True)
    ap.add_argument("--delete", action="store_true", help="Delete the deployment's Serve application.")
    args = ap.parse_args(argv)

    from doctune.drivers.deploy import deploy, undeploy

    return (undeploy if args.delete else deploy)(args.deployment_id)


if __name__ == "__main__":
    sys.exit(main())
