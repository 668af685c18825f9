"""The Node SDK packs with ``npm pack`` and installs offline into a fresh project, for ESM and CJS.

No runtime dependencies: ``npm install --offline`` of the tarball works with an empty npm cache.
Both entry points load, their error classes are the same hierarchy, and a TypeScript consumer
type-checks against the package's ``types``.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

from tests.sdk.node.conftest import ROOT, node

ESM_PROBE = """
import { GatewayClient, APIError, RateLimitError, BudgetExceededError, Stream } from "@llm-gateway/sdk";
const client = new GatewayClient({ baseURL: "http://127.0.0.1:1", apiKey: "k" });
const stream = client.chatStream({ model: "m", messages: [] });
console.log(JSON.stringify({
  client: typeof client.chat, jobs: typeof client.jobs.wait, admin: typeof client.admin.credentials.rotate,
  errors: new BudgetExceededError("x") instanceof RateLimitError && new RateLimitError("x") instanceof APIError,
  stream: stream instanceof Stream && typeof stream[Symbol.asyncIterator] === "function",
}));
"""

CJS_PROBE = """
const sdk = require("@llm-gateway/sdk");
const client = new sdk.GatewayClient({ baseURL: "http://127.0.0.1:1", apiKey: "k" });
console.log(JSON.stringify({
  client: typeof client.chat, jobs: typeof client.jobs.wait, admin: typeof client.admin.credentials.rotate,
  errors: new sdk.BudgetExceededError("x") instanceof sdk.RateLimitError
    && new sdk.RateLimitError("x") instanceof sdk.APIError,
  stream: typeof client.chatStream({ model: "m", messages: [] })[Symbol.asyncIterator] === "function",
}));
"""

TS_CONSUMER = """
import { GatewayClient, RateLimitError, type UnifiedChatChunk, type UsageRow } from "@llm-gateway/sdk";

async function main(): Promise<void> {
  const client = new GatewayClient({ apiKey: "k" });
  const reply = await client.chat({ model: "mock:demo", messages: [{ role: "user", content: "Hi" }], max_tokens: 5 });
  const text: string | undefined = reply.finish_reason;
  for await (const chunk of client.chatStream({ model: "mock:demo", messages: [] })) {
    const c: UnifiedChatChunk = chunk;
    void c.delta.content;
  }
  const rows: UsageRow[] = await client.usage({ group_by: "model", start_time: new Date() });
  try {
    await client.jobs.wait("job_1", { pollInterval: 10 });
  } catch (error) {
    if (error instanceof RateLimitError) void error.retryAfter;
  }
  void text, rows;
}
void main;
"""

EXPECTED = {"client": "function", "jobs": "function", "admin": "function", "errors": True, "stream": True}


def _run(*args: str, cwd: Path, env: dict[str, str] | None = None) -> str:
    done = subprocess.run(list(args), cwd=cwd, capture_output=True, text=True, timeout=120, env=env, check=False)
    assert done.returncode == 0, f"{args}: {done.stdout}\n{done.stderr}"
    return done.stdout


def test_npm_pack_then_offline_install_imports_from_esm_and_cjs(built_sdk: Path, tmp_path: Path) -> None:
    npm = shutil.which("npm")
    assert npm is not None, "npm is not installed"
    # An empty npm cache and no registry needed: the tarball has no dependencies to fetch.
    env = {
        "PATH": f"{Path(node()).parent}:/usr/bin:/bin",
        "HOME": str(tmp_path),
        "npm_config_cache": str(tmp_path / "cache"),
    }
    packed = json.loads(_run(npm, "pack", "--json", "--pack-destination", str(tmp_path), cwd=built_sdk, env=env))
    files = {entry["path"] for entry in packed[0]["files"]}
    assert {"package.json", "README.md", "dist/esm/index.js", "dist/cjs/index.js", "dist/cjs/package.json"} <= files
    assert {"dist/esm/index.d.ts", "dist/cjs/index.d.ts"} <= files
    assert not any(path.startswith(("src/", "test/", "node_modules/")) for path in files), sorted(files)
    tarball = tmp_path / packed[0]["filename"]

    project = tmp_path / "project"
    project.mkdir()
    (project / "package.json").write_text('{"name": "probe", "version": "1.0.0", "private": true}\n')
    _run(npm, "install", "--offline", "--no-audit", "--no-fund", str(tarball), cwd=project, env=env)
    installed = json.loads((project / "node_modules" / "@llm-gateway" / "sdk" / "package.json").read_text())
    assert installed.get("dependencies", {}) == {}

    assert json.loads(_run(node(), "--input-type=module", "-e", ESM_PROBE, cwd=project, env=env)) == EXPECTED
    assert json.loads(_run(node(), "-e", CJS_PROBE, cwd=project, env=env)) == EXPECTED

    # A TypeScript consumer type-checks against the installed package's types (ESM and CJS resolution).
    # A TypeScript consumer type-checks against the installed package's types: as an ES module
    # (main.mts, the "import" condition) and as CommonJS (main.ts, the "require" condition).
    tsc = str(ROOT / "node_modules" / ".bin" / "tsc")
    common = ["--noEmit", "--strict", "--skipLibCheck", "--target", "es2022", "--lib", "es2022,dom"]
    for name, module, resolution in (("main.mts", "nodenext", "nodenext"), ("main.ts", "commonjs", "node10")):
        (project / name).write_text(TS_CONSUMER)
        _run(tsc, *common, "--module", module, "--moduleResolution", resolution, name, cwd=project, env=env)
