"""Regenerate src/crishim/api from protos/ with betterproto2.

The one documented way to regenerate (also `tox -e protos`):

    python scripts/gen_protos.py            # rewrite src/crishim/api
    python scripts/gen_protos.py --check    # exit 1 if src/crishim/api is stale

The staleness test in tests/unit imports `generate` and `diff_trees` from here.
"""

from __future__ import annotations

import argparse
import filecmp
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PROTOS = ROOT / "protos"
API = ROOT / "src" / "crishim" / "api"
# grpclib service bases and stubs, all async.
OPTIONS = "client_generation=async,server_generation=async"


def _plugin() -> str:
    exe = Path(sys.executable).parent / "protoc-gen-python_betterproto2"
    found = exe if exe.exists() else shutil.which("protoc-gen-python_betterproto2")
    if not found:
        raise SystemExit("protoc-gen-python_betterproto2 not found: pip install crishim[protos]")
    return str(found)


def generate(out: Path, protos: Path = PROTOS) -> None:
    """Write the generated package for every .proto under `protos` into `out`."""
    out.mkdir(parents=True, exist_ok=True)
    files = sorted(str(p.relative_to(protos)) for p in protos.rglob("*.proto"))
    cmd = [
        sys.executable,
        "-m",
        "grpc_tools.protoc",
        f"-I{protos}",
        f"--plugin=protoc-gen-python_betterproto2={_plugin()}",
        f"--python_betterproto2_out={out}",
        f"--python_betterproto2_opt={OPTIONS}",
        *files,
    ]
    # The compiler formats its output with the `ruff` on PATH, so the pinned
    # ruff of this environment is part of what makes the output reproducible.
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if proc.returncode:
        raise RuntimeError(f"protoc failed: {proc.stderr.strip()}")


def diff_trees(a: Path, b: Path) -> list[str]:
    """Relative paths that differ between two generated trees (missing on either side too)."""

    def files(root: Path) -> set[str]:
        return {
            str(p.relative_to(root))
            for p in root.rglob("*")
            if p.is_file() and "__pycache__" not in p.parts
        }

    fa, fb = files(a), files(b)
    changed = sorted(fa ^ fb)
    changed += sorted(f for f in fa & fb if not filecmp.cmp(a / f, b / f, shallow=False))
    return changed


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--check", action="store_true", help="only report whether the code is stale"
    )
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        fresh = Path(tmp) / "api"
        generate(fresh)
        stale = diff_trees(fresh, API)
        if args.check:
            for f in stale:
                print(f"stale: src/crishim/api/{f}")
            return 1 if stale else 0
        shutil.rmtree(API, ignore_errors=True)
        shutil.copytree(fresh, API)
        print(f"regenerated src/crishim/api ({len(stale)} files changed)")
        return 0


if __name__ == "__main__":
    sys.exit(main())
