"""The Gemini CLI provider against a fake ``gemini`` executable that answers like gemini-cli 0.56.

The fake (``fake_gemini_cli/gemini``) records each run's argv, env, stdin, login file and pids,
so these tests see exactly what the adapter handed the CLI and whether its processes are gone.
"""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import grpc
import pytest
from google.protobuf import timestamp_pb2

from gateway.auth.v1 import credentials_pb2
from gateway.chat.v1 import chat_pb2
from gateway_common.config import GatewayConfig, GeminiCliProviderConfig
from gateway_common.errors import GatewayError, Reason
from services.providers.adapters.gemini_cli import GeminiCliAdapter, _json_object, oauth_tokens_var, render_prompt
from services.providers.registry import build_registry

FAKE_CLI = Path(__file__).parent / "fake_gemini_cli" / "gemini"
ACCESS = "ya29.a0-access-token-of-tenant-one"
REFRESH = "1//0refresh-token-of-tenant-one"


def tokens(access: str = ACCESS, *, expires_in_s: int = 3600) -> credentials_pb2.OAuthTokens:
    expiry = timestamp_pb2.Timestamp()
    expiry.GetCurrentTime()
    expiry.seconds += expires_in_s
    return credentials_pb2.OAuthTokens(
        access_token=access,
        refresh_token=REFRESH if expires_in_s > 0 else "",
        expires_at=expiry,
        scopes=["https://www.googleapis.com/auth/cloud-platform"],
        token_type="Bearer",
    )


def request(*texts: str, system: str | None = None) -> chat_pb2.ChatCompletionRequest:
    out = chat_pb2.ChatCompletionRequest(model="gemini-2.5-pro")
    if system is not None:
        out.messages.add(role=chat_pb2.ROLE_SYSTEM, text=system)
    for i, text in enumerate(texts):
        out.messages.add(role=chat_pb2.ROLE_USER if i % 2 == 0 else chat_pb2.ROLE_ASSISTANT, text=text)
    return out


class Cli:
    """An adapter on the fake CLI, and the runs the fake recorded."""

    def __init__(self, tmp_path: Path, **config: Any) -> None:
        self.record = tmp_path / "runs.jsonl"
        env = config.pop("env", {})
        self.config = GeminiCliProviderConfig(
            executable=str(FAKE_CLI), env={"FAKE_GEMINI_RECORD": str(self.record), **env}, **config
        )
        self.parent_env = {"PATH": os.environ["PATH"], "OPENAI_API_KEY": "sk-parent-secret-must-not-leak"}
        self.adapter = GeminiCliAdapter("gemini-cli", self.config, self.parent_env)

    def runs(self) -> list[dict[str, Any]]:
        if not self.record.exists():
            return []
        return [json.loads(line) for line in self.record.read_text().splitlines() if line]

    async def until_runs(self, count: int, within_s: float = 10.0) -> list[dict[str, Any]]:
        async with asyncio.timeout(within_s):
            while len(runs := self.runs()) < count:
                await asyncio.sleep(0.02)
        return runs


def gone(pid: int) -> bool:
    """Whether ``pid`` no longer runs (a zombie waiting for its reaper counts as gone)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return True
    return stat.rsplit(")", 1)[1].split()[0] == "Z"


def removed(path: str) -> bool:
    """Whether the run's private directory (the parent of its workspace and of its home) is gone."""
    return not Path(path).parent.exists()


async def until(condition: Callable[[], bool], within_s: float = 10.0) -> None:
    async with asyncio.timeout(within_s):
        while not condition():
            await asyncio.sleep(0.02)


async def test_chat_runs_the_cli_with_the_login_injected_and_parses_response_and_usage(tmp_path: Path) -> None:
    cli = Cli(tmp_path)
    completion = await cli.adapter.chat("gemini-2.5-pro", request("Hello from the gateway!"), tokens())

    assert completion.choices[0].message.text == "Hello from fake gemini: Hello from the gateway!"
    assert completion.choices[0].finish_reason == chat_pb2.FINISH_REASON_STOP
    assert completion.provider == "gemini-cli" and completion.model == "gemini-2.5-pro"
    # The fake counts stdin words + --prompt words as prompt tokens, its answer words as candidates.
    (run,) = cli.runs()
    instruction_words = len(run["argv"][run["argv"].index("--prompt") + 1].split())
    assert completion.usage.prompt_tokens == 4 + instruction_words
    assert completion.usage.completion_tokens == 8
    assert completion.usage.total_tokens == 12 + instruction_words
    assert not completion.usage.estimated

    # argv: the model and format, a fixed instruction; the conversation went on stdin.
    assert run["argv"][1:5] == ["--model", "gemini-2.5-pro", "--output-format", "json"]
    assert run["stdin"] == "Hello from the gateway!"
    # The documented injection: oauth_creds.json (0600) in a private home (0700), Login with Google.
    assert run["creds"]["access_token"] == ACCESS and run["creds"]["refresh_token"] == REFRESH
    assert isinstance(run["creds"]["expiry_date"], int) and run["creds"]["expiry_date"] > 1_700_000_000_000
    assert run["creds"]["scope"] == "https://www.googleapis.com/auth/cloud-platform"
    assert run["creds_mode"] == "0o600" and run["home_mode"] == "0o700"
    assert run["env"]["GOOGLE_GENAI_USE_GCA"] == "true"
    home = Path(run["env"]["HOME"])
    assert run["env"]["GEMINI_CLI_HOME"] == str(home)
    # The working directory (the CLI's workspace, all its file tools may reach) is not the home.
    assert Path(run["cwd"]).parent == home.parent and Path(run["cwd"]) != home
    assert not Path(run["cwd"]).is_relative_to(home) and not home.is_relative_to(run["cwd"])
    # No token in argv or env, and none of the provider process's own secrets.
    flat = json.dumps([run["argv"], run["env"]])
    assert ACCESS not in flat and REFRESH not in flat
    assert "OPENAI_API_KEY" not in run["env"]
    # The private home is removed after the call.
    assert removed(run["cwd"])


async def test_stream_yields_each_delta_as_the_cli_prints_it_then_finish_and_usage(tmp_path: Path) -> None:
    cli = Cli(tmp_path, env={"FAKE_GEMINI_DELAY_S": "0.1"})
    chunks = cli.adapter.stream_chat("gemini-2.5-pro-slow", request("stream me"), tokens())
    first = await anext(chunks)
    # The first delta arrived while the CLI is still printing the rest.
    (run,) = cli.runs()
    assert not gone(run["pid"])
    assert first.choices[0].delta.role == chat_pb2.ROLE_ASSISTANT
    rest = [chunk async for chunk in chunks]

    text = first.choices[0].delta.content + "".join(c.choices[0].delta.content for c in rest if c.choices)
    assert text == "Hello from fake gemini: stream me"
    assert rest[-2].choices[0].finish_reason == chat_pb2.FINISH_REASON_STOP
    usage = rest[-1].usage
    assert usage.completion_tokens == 6 and usage.prompt_tokens > 2 and not usage.estimated
    assert run["argv"][1:5] == ["--model", "gemini-2.5-pro-slow", "--output-format", "stream-json"]


async def test_without_stats_usage_is_counted_and_marked_estimated(tmp_path: Path) -> None:
    cli = Cli(tmp_path)
    completion = await cli.adapter.chat("gemini-nostats", request("count me"), tokens())
    assert completion.usage.estimated and completion.usage.completion_tokens >= len(completion.choices[0].message.text)
    chunks = [c async for c in cli.adapter.stream_chat("gemini-nostats", request("count me"), tokens())]
    assert chunks[-1].usage.estimated and chunks[-1].usage.prompt_tokens > 0


async def test_a_cli_without_stream_json_streams_one_chunk(tmp_path: Path) -> None:
    cli = Cli(tmp_path, stream_json=False)
    chunks = [c async for c in cli.adapter.stream_chat("gemini-2.5-flash", request("one chunk"), tokens())]
    assert [c.choices[0].delta.content for c in chunks if c.choices] == ["Hello from fake gemini: one chunk", ""]
    assert chunks[-1].usage.total_tokens > 0
    assert cli.runs()[0]["argv"][4] == "json"


async def test_system_and_turns_are_rendered_on_stdin_and_a_huge_prompt_never_touches_argv(tmp_path: Path) -> None:
    cli = Cli(tmp_path)
    big = "word " * 300_000  # 1.5 MB: far beyond what one argv string may hold on Linux (128 KiB)
    await cli.adapter.chat("gemini-2.5-pro", request("first", "answer", big, system="Be brief."), tokens())
    (run,) = cli.runs()
    assert run["stdin"].startswith("System:\nBe brief.\n\nUser:\nfirst\n\nAssistant:\nanswer\n\nUser:\nword word")
    assert len(run["stdin"]) > 1_500_000
    assert max(len(arg) for arg in run["argv"]) < 200


async def test_the_credential_seam_and_the_global_login_file(tmp_path: Path) -> None:
    cli = Cli(tmp_path)
    token = oauth_tokens_var.set(tokens("ya29.from-the-selection-seam"))
    try:
        await cli.adapter.chat("gemini-2.5-pro", request("hi"))
    finally:
        oauth_tokens_var.reset(token)
    assert cli.runs()[0]["creds"]["access_token"] == "ya29.from-the-selection-seam"

    with pytest.raises(GatewayError) as missing:
        await cli.adapter.chat("gemini-2.5-pro", request("hi"))
    assert missing.value.reason == Reason.PROVIDER_NOT_CONFIGURED
    assert (
        "/ui/gemini" in str(missing.value)
        and missing.value.metadata["missing_variable"] == "GEMINI_CLI_OAUTH_CREDS_FILE"
    )

    creds = tmp_path / "oauth_creds.json"
    creds.write_text(json.dumps({"access_token": "ya29.global", "refresh_token": "1//g", "expiry_date": 4102444800000}))
    adapter = GeminiCliAdapter("gemini-cli", cli.config, {**cli.parent_env, "GEMINI_CLI_OAUTH_CREDS_FILE": str(creds)})
    await adapter.chat("gemini-2.5-pro", request("hi"))
    assert cli.runs()[-1]["creds"] == {
        "access_token": "ya29.global",
        "token_type": "Bearer",
        "refresh_token": "1//g",
        "expiry_date": 4102444800000,
    }


@pytest.mark.parametrize("stream", [False, True])
async def test_an_expired_login_is_unauthenticated_and_no_token_is_echoed(tmp_path: Path, stream: bool) -> None:
    cli = Cli(tmp_path)
    expired = tokens(expires_in_s=-60)
    with pytest.raises(GatewayError) as caught:
        if stream:
            async for _ in cli.adapter.stream_chat("gemini-2.5-pro", request("hi"), expired):
                pass
        else:
            await cli.adapter.chat("gemini-2.5-pro", request("hi"), expired)
    error = caught.value
    assert error.code == grpc.StatusCode.UNAUTHENTICATED
    assert error.metadata["retryable"] == "false" and error.metadata["provider"] == "gemini-cli"
    assert "invalid_grant" in str(error) and ACCESS not in str(error)
    # The CLI's own error type, from its JSON (stderr in json mode, the result event when streaming).
    assert error.metadata["upstream_code"] == "FatalAuthenticationError"


async def test_a_crash_is_unavailable_retryable_and_stderr_secrets_are_redacted(tmp_path: Path) -> None:
    cli = Cli(tmp_path)
    with pytest.raises(GatewayError) as caught:
        await cli.adapter.chat("gemini-crash", request("hi"), tokens())
    error = caught.value
    assert error.code == grpc.StatusCode.UNAVAILABLE and error.metadata["retryable"] == "true"
    assert error.metadata["exit_code"] == "1"
    assert "boom" in str(error) and ACCESS not in str(error) and "ya29" not in str(error)


async def test_a_missing_executable_is_provider_not_configured(tmp_path: Path) -> None:
    adapter = GeminiCliAdapter(
        "gemini-cli", GeminiCliProviderConfig(executable=str(tmp_path / "no-gemini")), {"PATH": os.environ["PATH"]}
    )
    with pytest.raises(GatewayError) as caught:
        await adapter.chat("gemini-2.5-pro", request("hi"), tokens())
    assert caught.value.code == grpc.StatusCode.UNAVAILABLE
    assert caught.value.reason == Reason.PROVIDER_NOT_CONFIGURED


async def test_client_tools_are_refused_before_any_process_starts(tmp_path: Path) -> None:
    cli = Cli(tmp_path)
    asked = request("hi")
    asked.tools.add(type="function", function=chat_pb2.FunctionDefinition(name="lookup"))
    with pytest.raises(GatewayError) as caught:
        await cli.adapter.chat("gemini-2.5-pro", asked, tokens())
    assert caught.value.code == grpc.StatusCode.UNIMPLEMENTED and cli.runs() == []


async def test_a_run_past_the_timeout_is_killed_and_deadline_exceeded(tmp_path: Path) -> None:
    # Long enough for the fake to start and record itself on a busy machine before it is killed.
    cli = Cli(tmp_path, timeout_s=3.0)
    call = asyncio.create_task(cli.adapter.chat("gemini-hang", request("hi"), tokens()))
    (run,) = await cli.until_runs(1)
    assert not gone(run["pid"])
    with pytest.raises(GatewayError) as caught:
        await call
    assert caught.value.code == grpc.StatusCode.DEADLINE_EXCEEDED
    assert "3s" in str(caught.value)
    await until(lambda: gone(run["pid"]), within_s=3)  # it would hang for an hour
    assert removed(run["cwd"])


async def test_cancelling_a_stream_kills_the_whole_process_group(tmp_path: Path) -> None:
    cli = Cli(tmp_path, env={"FAKE_GEMINI_DELAY_S": "2.0"})
    first_chunk = asyncio.Event()

    async def consume() -> None:
        async for _ in cli.adapter.stream_chat("gemini-2.5-pro-slow", request("cancel me"), tokens()):
            first_chunk.set()

    task = asyncio.create_task(consume())
    async with asyncio.timeout(10):
        await first_chunk.wait()
    (run,) = cli.runs()
    # The CLI runs in a session of its own, and its child (as node's relaunch would be) in the same group.
    assert run["pgid"] == run["pid"] and not gone(run["child_pid"])
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    # Well within the 10 s the rest of the answer would take (and the child's 120 s of sleep).
    await until(lambda: gone(run["pid"]) and gone(run["child_pid"]), within_s=3)
    assert removed(run["cwd"])


async def test_closing_the_stream_iterator_kills_the_process_too(tmp_path: Path) -> None:
    cli = Cli(tmp_path, env={"FAKE_GEMINI_DELAY_S": "2.0"})
    chunks = cli.adapter.stream_chat("gemini-2.5-pro-slow", request("close me"), tokens())
    await anext(chunks)
    (run,) = cli.runs()
    await chunks.aclose()  # type: ignore[attr-defined]
    await until(lambda: gone(run["pid"]) and gone(run["child_pid"]), within_s=3)


async def test_concurrency_is_bounded_by_max_concurrency(tmp_path: Path) -> None:
    cli = Cli(tmp_path, max_concurrency=2)
    tasks = [asyncio.create_task(cli.adapter.chat("gemini-hang", request(f"n{i}"), tokens())) for i in range(3)]
    try:
        runs = await cli.until_runs(2)
        # The third waits for a slot: bounded wait, then it must still not have started.
        await asyncio.sleep(0.5)
        assert len(cli.runs()) == 2
        started = {r["stdin"] for r in runs}
        waiting = next(t for i, t in enumerate(tasks) if f"n{i}" not in started)
        running = [t for t in tasks if t is not waiting]
        running[0].cancel()
        runs = await cli.until_runs(3)
        assert runs[2]["stdin"] not in started
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    for run in cli.runs():
        await until(lambda run=run: gone(run["pid"]))  # type: ignore[misc]


def test_registry_builds_a_gemini_cli_provider_and_gemini_ids_route_to_it() -> None:
    config = GatewayConfig.model_validate({"providers": {"gemini-cli": {"type": "gemini-cli", "executable": "gemini"}}})
    registry = build_registry(config, {})
    assert isinstance(registry.get("gemini-cli"), GeminiCliAdapter)
    assert config.routing.prefixes["gemini-"] == "gemini-cli"
    # A file spelling out its own prefix table keeps it.
    own = GatewayConfig.model_validate(
        {"providers": {"gemini-cli": {"type": "gemini-cli"}}, "routing": {"prefixes": {"gemini-": "gemini"}}}
    )
    assert own.routing.prefixes == {"gemini-": "gemini"}
    # Without a CLI provider, gemini- stays with the Gemini API.
    assert GatewayConfig.model_validate({}).routing.prefixes["gemini-"] == "gemini"


def test_a_lone_user_message_is_sent_as_it_is() -> None:
    assert render_prompt("gemini-cli", request("just this")) == "just this"


def test_the_json_answer_is_found_among_warning_lines() -> None:
    assert _json_object('Loaded cached credentials.\n{"response": "hi"}\nwarning: after') == {"response": "hi"}
    assert _json_object('{"response": "plain"}') == {"response": "plain"}
    assert _json_object("not json at all\n{broken") is None
