"""``sdks/python`` installs offline into a fresh venv and works from there against the suite.

The venv is made without pip (``--without-pip``: ensurepip takes most of a minute on a busy
machine) and the repository's pip installs into it (``pip --python``) with ``--no-index
--no-build-isolation``: nothing is downloaded, and the build backend (setuptools) comes from what
is installed. The SDK's dependencies (httpx, grpcio, …) are made visible to the venv through a
``.pth`` file naming the repository venv's site-packages: offline, they cannot come from anywhere
else. The SDK itself is imported from the venv (asserted), never from the checkout.
"""

from __future__ import annotations

import json
import shutil
import site
import subprocess
import sys
from pathlib import Path

import pytest

from tests.e2e.conftest import Gateway
from tests.sdk.python.conftest import SDK_SRC

pytestmark = pytest.mark.e2e

SCRIPT = """
import json, pathlib, sys
import grpc
import llm_gateway
settings = json.loads(sys.argv[1])
package = pathlib.Path(llm_gateway.__file__).resolve()
assert str(package).startswith(settings["venv"]), package
assert (package.parent / "py.typed").is_file()
assert (package.parent / "_gen" / "gateway" / "router" / "v1" / "router_pb2.pyi").is_file()
out = {}
with llm_gateway.Client(settings["key"], base_url=settings["url"]) as client:
    out["http"] = client.chat("mock:demo", [{"role": "user", "content": "Hi"}]).text
ca = pathlib.Path(settings["ca"]).read_bytes()
credentials = grpc.ssl_channel_credentials(root_certificates=ca)
with llm_gateway.Client(settings["key"], transport="grpc", grpc_target=settings["target"],
                        grpc_credentials=credentials) as client:
    stream = client.chat_stream("mock:demo", [{"role": "user", "content": "Hi"}])
    out["grpc"] = "".join(c.delta.content or "" for c in stream)
print(json.dumps(out))
"""


def test_fresh_venv_install_and_call(tmp_path: Path, gateway: Gateway) -> None:
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=60)
    python = venv / "bin" / "python"
    purelib = subprocess.run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        check=True,
        capture_output=True,
        text=True,
        timeout=30,
    ).stdout.strip()
    (Path(purelib) / "gateway-deps.pth").write_text("\n".join(site.getsitepackages()) + "\n")
    # A copy, so the build's own files (build/, *.egg-info) never land in the checkout.
    source = tmp_path / "sdk"
    shutil.copytree(SDK_SRC.parent, source, ignore=shutil.ignore_patterns("__pycache__", "build", "*.egg-info"))
    install = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "--python",
            str(python),
            "install",
            "--no-index",
            "--no-build-isolation",
            "--disable-pip-version-check",
            f"{source}[grpc]",
        ],
        capture_output=True,
        text=True,
        timeout=100,
    )
    assert install.returncode == 0, install.stdout + install.stderr
    assert "Successfully installed llm-gateway-sdk-0.1.0" in install.stdout
    settings = {
        "venv": str(venv.resolve()),
        "key": gateway.key,
        "url": gateway.url,
        "target": f"{gateway.suite.host}:{gateway.suite.ports['router']}",
        "ca": str(gateway.suite.tls_dir / "ca.crt"),
    }
    # Run outside the checkout with a clean PYTHONPATH: only the venv's copy can be imported.
    run = subprocess.run(
        [str(python), "-c", SCRIPT, json.dumps(settings)],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
        env={"PATH": "/usr/bin:/bin"},
    )
    assert run.returncode == 0, run.stdout + run.stderr
    assert json.loads(run.stdout) == {"http": "Mock reply to: Hi", "grpc": "Mock reply to: Hi"}
