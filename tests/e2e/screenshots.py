"""Copy the browser test's chosen screenshots into the docs: ``python -m tests.e2e.screenshots``.

The browser test (tests/integration/test_console_browser.py) writes a screenshot of every page it
checks to tests/e2e/artifacts/ (git-ignored); docs/console.md shows the ones listed in :data:`CHOSEN`,
copied to docs/console/. Run the browser test first; a chosen screenshot that it did not take (its
page is not built yet, or the test was skipped) is reported and left out."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

from tests.e2e.console import ARTIFACTS, REPO

DOCS = REPO / "docs" / "console"

# artifact name -> what docs/console.md says it shows
CHOSEN = {
    "signed-in": "signed in as a tenant member: the tenant and the role at the top, one tab per page",
    "wrong-key": "a wrong key: a plain message, no trace",
    "sign-in-zh": "the sign-in bar in Chinese",
    "language-zh": "a signed-in page in Chinese",
    "page-datasets": "Datasets",
    "page-new_job": "New job",
    "page-jobs": "Jobs",
    "page-sweeps": "Sweeps",
    "page-models": "Models & deployments",
    "page-playground": "Playground",
    "page-admin": "Admin (platform admins only)",
    "flow-dataset-uploaded": "a dataset just uploaded: preview and detected labels",
    "flow-job-finished": "a job run from the console, with its loss curve",
    "flow-playground-zh": "the playground answering a Chinese input",
}


def copy_chosen(artifacts: Path = ARTIFACTS, docs: Path = DOCS) -> tuple[list[str], list[str]]:
    """Copy each chosen artifact that exists; returns (copied, missing) names."""
    docs.mkdir(parents=True, exist_ok=True)
    copied, missing = [], []
    for name in CHOSEN:
        src = artifacts / f"{name}.png"
        if src.is_file():
            shutil.copyfile(src, docs / src.name)
            copied.append(name)
        else:
            missing.append(name)
    return copied, missing


def main() -> int:
    copied, missing = copy_chosen()
    print(f"copied {len(copied)} screenshots to {DOCS.relative_to(REPO)}/: {', '.join(copied) or 'none'}")
    if missing:
        print(f"not taken by the last browser test run (left out): {', '.join(missing)}")
    return 0 if copied else 1


if __name__ == "__main__":
    sys.exit(main())
