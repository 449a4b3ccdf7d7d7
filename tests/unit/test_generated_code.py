"""src/crishim/api must be exactly what protos/ generates (scripts/gen_protos.py)."""

from __future__ import annotations

import importlib.util
import shutil
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
API = ROOT / "src" / "crishim" / "api"


def gen_protos():
    spec = importlib.util.spec_from_file_location("gen_protos", ROOT / "scripts" / "gen_protos.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_generated_code_is_up_to_date(tmp_path) -> None:
    gen = gen_protos()
    gen.generate(tmp_path / "api")
    stale = gen.diff_trees(tmp_path / "api", API)
    assert stale == [], f"src/crishim/api is stale, run `tox -e protos`: {stale}"


def test_a_schema_change_without_regeneration_is_caught(tmp_path) -> None:
    gen = gen_protos()
    protos = tmp_path / "protos"
    shutil.copytree(ROOT / "protos", protos)
    schema = protos / "runtime" / "v1" / "api.proto"
    schema.write_text(
        schema.read_text().replace(
            "message VersionRequest {", "message VersionRequest {\n    string extra = 99;", 1
        )
    )
    gen.generate(tmp_path / "api", protos)
    assert gen.diff_trees(tmp_path / "api", API) == ["runtime/v1/__init__.py"]
