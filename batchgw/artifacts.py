"""The built Lambda artifacts (`sam build`), and running code the way Lambda would run them.

Lambda puts a function's code in /var/task, its layers in /opt/python, and the runtime's own boto3 after
them. `lambda_pythonpath` gives the same order for a built function, with a directory holding only what
the python3.12 runtime ships (boto3 and its dependencies) in place of the runtime, so a dependency missing
from a function's or the layer's requirements fails here as it would in AWS.
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

from batchgw.template import TEMPLATE

BUILD = TEMPLATE.parent / ".aws-sam" / "build"
LAYER = "SharedLayer"
# what the Lambda python3.12 runtime provides besides the standard library
RUNTIME_PACKAGES = ("boto3", "botocore", "s3transfer", "jmespath", "dateutil", "urllib3", "six")


def build(*, cached: bool = True) -> Path:
    """Run `sam build` (in-process builders, Python 3.12 from this venv) unless a build exists."""
    if cached and (BUILD / "template.yaml").exists():
        return BUILD
    bin_dir = Path(sys.executable).parent
    env = {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}", "SAM_CLI_TELEMETRY": "0"}
    subprocess.run(
        [str(bin_dir / "sam"), "build", "--template-file", str(TEMPLATE), "--build-dir", str(BUILD)],
        check=True,
        cwd=TEMPLATE.parent,
        env=env,
        capture_output=True,
    )
    return BUILD


def runtime_dir(target: Path) -> Path:
    """A directory holding only the runtime's packages (links into this venv)."""
    target.mkdir(parents=True, exist_ok=True)
    for name in RUNTIME_PACKAGES:
        spec = importlib.util.find_spec(name)
        if spec is None or spec.origin is None:
            raise RuntimeError(f"{name} is not installed")
        origin = Path(spec.origin)
        source = origin.parent if origin.name == "__init__.py" else origin
        link = target / source.name
        if not link.exists():
            link.symlink_to(source)
    return target


def lambda_env(function: str, runtime: Path) -> dict[str, str]:
    """The environment for `python -S` to import a built function as Lambda would: /var/task, /opt/python,
    then the runtime's packages, and nothing from this venv."""
    path = os.pathsep.join([str(BUILD / function), str(BUILD / LAYER / "python"), str(runtime)])
    return {**os.environ, "PYTHONPATH": path}


def size_bytes(path: Path) -> int:
    """Bytes on disk under `path`, unzipped."""
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file() and not f.is_symlink())
