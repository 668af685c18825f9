"""Copy the generated stubs the SDK needs from the repository's ``gen/`` into the package.

The SDK cannot depend on the gateway's own top-level ``gateway`` package (an application that
installs the SDK has no ``gen/``), so it carries a copy under ``llm_gateway._gen`` with the
absolute ``gateway.`` imports rewritten. Run it after ``make proto``:

    python sdks/python/tools/vendor_stubs.py

``tests/sdk/python/test_vendored_stubs.py`` fails when the copy differs from ``gen/``. Because the
copies are byte-identical apart from the import lines, both register the same descriptors, and
protobuf accepts the same file twice: the SDK and the gateway's own code can live in one process.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]
GEN = ROOT / "gen" / "gateway"
TARGET = Path(__file__).resolve().parents[1] / "src" / "llm_gateway" / "_gen" / "gateway"

PACKAGES = ("auth/v1", "chat/v1", "jobs/v1", "metering/v1", "quota/v1", "router/v1")
"""The stub packages the native API's RPCs and messages live in (jobs lands with the jobs branch)."""

SUFFIXES = ("_pb2.py", "_pb2.pyi", "_pb2_grpc.py", "_pb2_grpc.pyi")

_IMPORTS = re.compile(r"^(\s*)(from|import) gateway\.", re.MULTILINE)
_DOTTED = re.compile(r"(?<![\w.])gateway\.(auth|chat|jobs|metering|quota|router|providers|ratelimit)\.v1\.")


def rewrite(text: str) -> str:
    """``text`` with its references to the top-level ``gateway`` package moved under ``llm_gateway._gen``."""
    text = _IMPORTS.sub(r"\1\2 llm_gateway._gen.gateway.", text)
    # The .pyi stubs also name types by their dotted module path (``gateway.chat.v1.chat_pb2.Message``).
    return _DOTTED.sub(lambda m: f"llm_gateway._gen.gateway.{m.group(1)}.v1.", text)


def expected() -> dict[Path, str]:
    """Every vendored file (relative to the ``_gen/gateway`` folder) and the text it must hold."""
    files: dict[Path, str] = {}
    for package in PACKAGES:
        source = GEN / package
        if not source.is_dir():
            continue
        for path in sorted(source.iterdir()):
            if path.name.endswith(SUFFIXES):
                files[path.relative_to(GEN)] = rewrite(path.read_text())
    for folder in {Path(p) for p in PACKAGES if (GEN / p).is_dir()}:
        for init in (folder.parent / "__init__.py", folder / "__init__.py"):
            files.setdefault(init, "")
    files[Path("__init__.py")] = ""
    return files


def actual() -> dict[Path, str]:
    """Every file now in the vendored folder."""
    if not TARGET.is_dir():
        return {}
    return {
        path.relative_to(TARGET): path.read_text()
        for path in sorted(TARGET.rglob("*"))
        if path.is_file() and "__pycache__" not in path.parts
    }


def main() -> int:
    """Rewrite the vendored folder so it matches ``gen/``."""
    want = expected()
    for stale in set(actual()) - set(want):
        (TARGET / stale).unlink()
    for relative, text in want.items():
        path = TARGET / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    (TARGET.parent / "__init__.py").write_text(
        '"""Generated stubs, vendored from the gateway\'s gen/ by tools/vendor_stubs.py."""\n'
    )
    print(f"vendored {len(want)} files into {TARGET}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
