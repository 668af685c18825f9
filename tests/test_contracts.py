"""The committed stubs are what `make proto` writes, and import without path tricks."""

from __future__ import annotations

import filecmp
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _generate(out: Path) -> None:
    protos = sorted(str(p.relative_to(ROOT)) for p in (ROOT / "protos").rglob("*.proto"))
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    subprocess.run(
        [
            sys.executable,
            "-m",
            "grpc_tools.protoc",
            "-I",
            "protos",
            "-I",
            "third_party/googleapis",
            f"--python_out={out}",
            f"--grpc_python_out={out}",
            f"--mypy_out={out}",
            f"--mypy_grpc_out={out}",
            *protos,
        ],
        cwd=ROOT,
        env=env,
        check=True,
        capture_output=True,
    )


def _files(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*") if p.is_file() and "__pycache__" not in p.parts}


def test_committed_stubs_are_fresh(tmp_path: Path) -> None:
    _generate(tmp_path)
    committed = ROOT / "gen"
    assert _files(tmp_path) == _files(committed), "run `make proto`: the set of generated files changed"
    stale = [
        name for name in sorted(_files(tmp_path)) if not filecmp.cmp(tmp_path / name, committed / name, shallow=False)
    ]
    assert stale == [], f"run `make proto`: these stubs are stale: {stale}"


def test_stubs_import_from_anywhere(tmp_path: Path) -> None:
    code = (
        "from gateway.router.v1 import router_pb2, router_pb2_grpc\n"
        "from gateway.chat.v1 import chat_pb2\n"
        "assert router_pb2.DESCRIPTOR.services_by_name['RouterService']\n"
        "assert chat_pb2.ChatCompletionRequest(model='m').model == 'm'\n"
    )
    subprocess.run([sys.executable, "-c", code], cwd=tmp_path, check=True, env={**os.environ, "PYTHONPATH": ""})
