"""The Gemini CLI as a provider: one ``gemini`` subprocess per request, logged in as the tenant.

What this relies on, read from ``google-gemini/gemini-cli`` at 0.56.0-nightly.20260806 (commit
5411f113, Aug 2026):

- Headless mode (``packages/cli/src/config/config.ts``, ``gemini.tsx``): ``-m/--model``,
  ``-p/--prompt`` ("Appended to input on stdin (if any)": the CLI runs
  ``stdin + "\\n\\n" + prompt``; stdin is read up to 8 MiB, ``utils/readStdin.ts``) and
  ``-o/--output-format text|json|stream-json``. The conversation goes on **stdin**, so neither
  its size (argv is limited to a few hundred KiB on Linux) nor its content ever reaches argv;
  ``--prompt`` only carries a fixed instruction.
- ``--output-format json`` (``packages/core/src/output/types.ts`` ``JsonOutput``, ``json-formatter.ts``):
  one object ``{"session_id", "response", "stats": SessionMetrics, "error": {"type", "message",
  "code"}}``; ``stats.models.<model>.tokens`` holds ``prompt``, ``candidates``, ``total``,
  ``cached``, ``thoughts`` (``telemetry/uiTelemetry.ts`` ``ModelMetrics``).
- ``--output-format stream-json`` (``stream-json-formatter.ts``): one JSON event per line, ``type``
  one of ``init``, ``message`` (``role``, ``content``, ``delta: true`` for assistant pieces),
  ``tool_use``, ``tool_result``, ``error`` (``severity``, ``message``) and a final ``result``
  (``status: success|error``, ``error``, ``stats``: ``input_tokens``, ``output_tokens``,
  ``total_tokens``, ``cached``, ``duration_ms``…). Errors in this mode are a ``result`` event with
  ``status: "error"`` (``cli/src/utils/errors.ts`` ``handleError``).
- Exit codes (``core/src/utils/exitCodes.ts``): 0 success, 41 fatal authentication error, 42 fatal
  input error, 52 fatal config error, 130 cancelled; anything else (1, a signal) is a crash.
- The login (``core/src/code_assist/oauth2.ts``, ``config/storage.ts``, ``utils/paths.ts``): the CLI
  reads google-auth-library ``Credentials`` JSON (``access_token``, ``refresh_token``,
  ``expiry_date`` in epoch milliseconds, ``scope``, ``token_type``, ``id_token``) from
  ``<home>/.gemini/oauth_creds.json``, where home is ``GEMINI_CLI_HOME`` or else ``HOME``, unless
  ``GEMINI_FORCE_ENCRYPTED_FILE_STORAGE=true`` (never passed). ``GOOGLE_GENAI_USE_GCA=true``
  selects "Login with Google" (``oauth-personal``) without any settings file
  (``core/src/core/contentGenerator.ts``); ``settings.json`` ``security.auth.selectedType`` says the
  same for versions that read only the settings.

:func:`inject_oauth_credentials` is the one place that knows this layout: replace it (or pass
another ``inject`` to :class:`GeminiCliAdapter`) for a CLI version that expects something else.

Each run gets a private temporary directory (mode 0700, removed afterwards): a home holding only
the tenant's token set and, beside it, an empty workspace as the working directory (the CLI's file
tools stay inside their workspace, so they cannot read the login). Its environment is PATH, the
locale and what the injection returns (none of this process's secrets). It runs in its own session
(``start_new_session``), so that a timeout or a cancelled call kills the CLI and everything it
started (it relaunches itself as a child node process) with one ``killpg``. A semaphore bounds how
many run at once.

Whose tokens: the tenant's own login, chosen for the call by the providers service's credential
selection (:data:`services.providers.tenant_credentials.current_credential`, refreshed before it
expires with the gateway's Google OAuth client, the one ``/ui/gemini`` logged the tenant in with),
or :data:`oauth_tokens_var` set by a caller, else the ``oauth_creds.json`` named by the provider's
``oauth_creds_file_env`` variable (the global, operator-owned login).
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import re
import shutil
import signal
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import asynccontextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc

from gateway.auth.v1 import credentials_pb2
from gateway.chat.v1 import chat_pb2
from gateway_common.config import GeminiCliProviderConfig
from gateway_common.errors import GatewayError, Reason
from gateway_common.redaction import Redactor
from gateway_common.tokens import prompt_token_ceiling, text_ceiling
from services.providers.http import bad_response, not_configured, stream_broken, unimplemented, upstream_timeout
from services.providers.tenant_credentials import current_credential

log = logging.getLogger(__name__)

OAuthTokens = credentials_pb2.OAuthTokens

oauth_tokens_var: ContextVar[credentials_pb2.OAuthTokens | None] = ContextVar("gemini_cli_oauth_tokens", default=None)
"""The tenant's Google token set for the current call (set by the credential selection); None for
the global login from the environment."""

Inject = Callable[[Path, credentials_pb2.OAuthTokens], dict[str, str]]
"""``inject(home, tokens) -> env``: writes the login under ``home`` the way the CLI reads it."""

INSTRUCTION = "Reply to the conversation above as the assistant: answer its last user message."
"""The fixed ``--prompt``: the CLI appends it to the conversation read from stdin."""

EXIT_AUTH, EXIT_INPUT, EXIT_CONFIG, EXIT_CANCELLED = 41, 42, 52, 130

_MAX_STDOUT = 32 * 1024 * 1024
_MAX_STDERR = 64 * 1024
_MAX_MESSAGE = 300
_STDERR_GRACE_S = 2.0
# Google access tokens ("ya29.…") and refresh tokens ("1//…"), wherever a CLI error prints them.
_REDACT = Redactor((r"ya29\.[\w\-.]+", r"\b1//[\w\-]+"))
# Only these of the provider process's own variables reach the CLI.
_PASSED_ENV = ("PATH", "LANG", "LC_ALL", "LC_CTYPE", "TZ", "TMPDIR", "SYSTEMROOT")


def inject_oauth_credentials(home: Path, tokens: credentials_pb2.OAuthTokens) -> dict[str, str]:
    """Write ``tokens`` as ``<home>/.gemini/oauth_creds.json`` and return the env selecting that login.

    The file is google-auth-library's ``Credentials`` JSON, which is what the CLI caches after its
    own browser login; ``GOOGLE_GENAI_USE_GCA=true`` and ``security.auth.selectedType`` both pick
    the ``oauth-personal`` login. Files are 0600 inside 0700 directories.
    """
    gemini_dir = home / ".gemini"
    gemini_dir.mkdir(mode=0o700, exist_ok=True)
    creds: dict[str, Any] = {
        "access_token": tokens.access_token,
        "token_type": tokens.token_type or "Bearer",
    }
    if tokens.refresh_token:
        creds["refresh_token"] = tokens.refresh_token
    if tokens.scopes:
        creds["scope"] = " ".join(tokens.scopes)
    if tokens.id_token:
        creds["id_token"] = tokens.id_token
    if tokens.HasField("expires_at"):
        creds["expiry_date"] = tokens.expires_at.ToMilliseconds()
    _write_private(gemini_dir / "oauth_creds.json", json.dumps(creds))
    _write_private(gemini_dir / "settings.json", json.dumps({"security": {"auth": {"selectedType": "oauth-personal"}}}))
    return {"HOME": str(home), "GEMINI_CLI_HOME": str(home), "GOOGLE_GENAI_USE_GCA": "true"}


def _make_dirs(*paths: Path) -> None:
    for path in paths:
        path.mkdir(mode=0o700)


def _write_private(path: Path, text: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(text)


def tokens_from_creds_file(text: str) -> credentials_pb2.OAuthTokens:
    """The token set of an ``oauth_creds.json`` as the CLI writes it (the global login)."""
    data = json.loads(text)
    tokens = credentials_pb2.OAuthTokens(
        access_token=str(data.get("access_token") or ""),
        refresh_token=str(data.get("refresh_token") or ""),
        token_type=str(data.get("token_type") or ""),
        id_token=str(data.get("id_token") or ""),
        scopes=str(data.get("scope") or "").split(),
    )
    if isinstance(data.get("expiry_date"), int | float):
        tokens.expires_at.FromMilliseconds(int(data["expiry_date"]))
    return tokens


# ---------------------------------------------------------------------------------------------
# The prompt
# ---------------------------------------------------------------------------------------------

_ROLE_LABELS = {
    chat_pb2.ROLE_SYSTEM: "System",
    chat_pb2.ROLE_DEVELOPER: "System",
    chat_pb2.ROLE_USER: "User",
    chat_pb2.ROLE_ASSISTANT: "Assistant",
    chat_pb2.ROLE_TOOL: "Tool",
}


def _message_text(provider: str, message: chat_pb2.Message) -> str:
    if message.HasField("text"):
        return message.text
    pieces: list[str] = []
    for part in message.parts:
        if part.WhichOneof("part") != "text":
            raise unimplemented(provider, "content other than text (images, audio, files)")
        pieces.append(part.text)
    return "\n".join(pieces)


def render_prompt(provider: str, request: chat_pb2.ChatCompletionRequest) -> str:
    """The conversation as the text the CLI reads on stdin: system first, then every turn labelled.

    A lone user message is sent as it is. Tools are refused: the CLI runs its own, not the client's.
    """
    if request.tools:
        raise unimplemented(provider, "client tools (the Gemini CLI runs only its own)")
    messages = list(request.messages)
    if len(messages) == 1 and messages[0].role == chat_pb2.ROLE_USER:
        return _message_text(provider, messages[0])
    system = [m for m in messages if m.role in (chat_pb2.ROLE_SYSTEM, chat_pb2.ROLE_DEVELOPER)]
    turns = [m for m in messages if m not in system]
    blocks = [f"System:\n{_message_text(provider, m)}" for m in system]
    blocks += [f"{_ROLE_LABELS.get(m.role, 'User')}:\n{_message_text(provider, m)}" for m in turns]
    return "\n\n".join(blocks)


# ---------------------------------------------------------------------------------------------
# What the CLI prints
# ---------------------------------------------------------------------------------------------


def usage_from_session_stats(stats: Any) -> chat_pb2.Usage | None:
    """Usage from ``--output-format json``'s ``stats`` (summed over ``stats.models``); None without it."""
    models = stats.get("models") if isinstance(stats, dict) else None
    if not isinstance(models, dict) or not models:
        return None
    prompt = completion = cached = thoughts = 0
    for metrics in models.values():
        tokens = metrics.get("tokens") if isinstance(metrics, dict) else None
        if not isinstance(tokens, dict):
            return None
        prompt += int(tokens.get("prompt") or 0)
        thoughts += int(tokens.get("thoughts") or 0)
        # Gemini bills thinking as output, as OpenAI counts reasoning inside completion_tokens.
        completion += int(tokens.get("candidates") or 0) + int(tokens.get("thoughts") or 0)
        cached += int(tokens.get("cached") or 0)
    usage = chat_pb2.Usage(prompt_tokens=prompt, completion_tokens=completion, total_tokens=prompt + completion)
    if cached:
        usage.prompt_tokens_details.cached_tokens = cached
    if thoughts:
        usage.completion_tokens_details.reasoning_tokens = thoughts
    return usage


def usage_from_stream_stats(stats: Any) -> chat_pb2.Usage | None:
    """Usage from the stream's ``result.stats`` (``input_tokens``/``output_tokens``); None without it."""
    if not isinstance(stats, dict) or "input_tokens" not in stats or "output_tokens" not in stats:
        return None
    prompt, completion = int(stats["input_tokens"] or 0), int(stats["output_tokens"] or 0)
    usage = chat_pb2.Usage(prompt_tokens=prompt, completion_tokens=completion, total_tokens=prompt + completion)
    if stats.get("cached"):
        usage.prompt_tokens_details.cached_tokens = int(stats["cached"])
    return usage


def estimated_usage(request: chat_pb2.ChatCompletionRequest, answer: str) -> chat_pb2.Usage:
    """Counted by the gateway (ceilings, as reservations count) when the CLI printed no stats."""
    prompt, completion = prompt_token_ceiling(request), text_ceiling(answer)
    return chat_pb2.Usage(
        prompt_tokens=prompt, completion_tokens=completion, total_tokens=prompt + completion, estimated=True
    )


def _json_object(text: str) -> dict[str, Any] | None:
    """The first JSON object of ``text`` starting a line; warnings before or after it are skipped."""
    decoder = json.JSONDecoder()
    start = 0 if text.startswith("{") else text.find("\n{") + 1
    while start > 0 or text.startswith("{"):
        try:
            value, _ = decoder.raw_decode(text, start)
        except ValueError:
            start = text.find("\n{", start + 1) + 1
            if start == 0:
                return None
            continue
        return value if isinstance(value, dict) else None
    return None


@dataclass
class _Failure:
    """What is known of a failed run, none of it secret once :meth:`message` redacted it."""

    exit_code: int | None
    error_type: str = ""
    error_code: str = ""
    detail: str = ""
    secrets: tuple[str, ...] = field(default_factory=tuple)

    def message(self) -> str:
        text = self.detail
        for secret in self.secrets:
            if secret and len(secret) >= 4:
                text = text.replace(secret, "[REDACTED]")
        text = _REDACT(" ".join(text.split()))[:_MAX_MESSAGE]
        head = f"gemini CLI exited with status {self.exit_code}" if self.exit_code is not None else "gemini CLI failed"
        kind = f" ({self.error_type})" if self.error_type else ""
        return f"{head}{kind}: {text}" if text else head + kind


_AUTH_WORDS = re.compile(r"(?i)\b(unauthenticated|invalid_grant|invalid authentication|login|401)\b")


def error_for(provider: str, failure: _Failure) -> GatewayError:
    """The GatewayError of a failed run: auth -> UNAUTHENTICATED, quota -> RESOURCE_EXHAUSTED,
    bad input -> INVALID_ARGUMENT, config -> PROVIDER_NOT_CONFIGURED, anything else (a crash) ->
    retryable UNAVAILABLE."""
    meta = {"provider": provider, "upstream_code": failure.error_code or failure.error_type or None}
    if failure.exit_code is not None:
        meta["exit_code"] = str(failure.exit_code)
    code, reason, retryable = grpc.StatusCode.UNAVAILABLE, Reason.UPSTREAM_ERROR, True
    if failure.exit_code == EXIT_AUTH or failure.error_code == "401" or _AUTH_WORDS.search(failure.error_type):
        code, retryable, meta["upstream_status"] = grpc.StatusCode.UNAUTHENTICATED, False, "401"
    elif failure.error_code == "429" or "RESOURCE_EXHAUSTED" in failure.error_code:
        code, meta["upstream_status"] = grpc.StatusCode.RESOURCE_EXHAUSTED, "429"
    elif failure.exit_code == EXIT_INPUT:
        code, reason, retryable = grpc.StatusCode.INVALID_ARGUMENT, Reason.INVALID_REQUEST, False
    elif failure.exit_code == EXIT_CONFIG:
        reason, retryable = Reason.PROVIDER_NOT_CONFIGURED, False
    metadata = {k: v for k, v in meta.items() if v}
    metadata["retryable"] = "true" if retryable else "false"
    return GatewayError(code, reason, failure.message(), metadata)


def _failure(exit_code: int | None, error: Any, stderr: str, secrets: tuple[str, ...]) -> _Failure:
    if not isinstance(error, dict):
        # In json mode the CLI reports a fatal error as a JSON object on stderr.
        printed = _json_object(stderr)
        error = printed.get("error") if printed else None
    if isinstance(error, dict):
        return _Failure(
            exit_code,
            str(error.get("type") or ""),
            str(error.get("code") or ""),
            str(error.get("message") or ""),
            secrets,
        )
    return _Failure(exit_code, "", "", stderr.strip().splitlines()[-1] if stderr.strip() else "", secrets)


# ---------------------------------------------------------------------------------------------
# The process
# ---------------------------------------------------------------------------------------------


@dataclass
class _Run:
    process: asyncio.subprocess.Process
    stdout: asyncio.StreamReader
    stderr: asyncio.Task[bytes]
    secrets: tuple[str, ...]

    async def failure(self, error: Any = None) -> _Failure:
        exit_code = await self.process.wait()
        # A helper the CLI left behind may hold stderr open: what arrived by then will do.
        done, _ = await asyncio.wait({self.stderr}, timeout=_STDERR_GRACE_S)
        stderr = self.stderr.result().decode("utf-8", "replace") if done else ""
        return _failure(exit_code, error, stderr, self.secrets)


def _kill_group(process: asyncio.subprocess.Process) -> None:
    # The CLI relaunches itself as a child node process, which may start tools of its own: killing
    # the session's process group ends them all, not just the direct child.
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


async def _read_bounded(stream: asyncio.StreamReader, limit: int) -> bytes:
    data = await stream.read(limit)
    # Whatever exceeds the limit is drained and dropped, so the CLI never blocks on a full pipe.
    while await stream.read(65536):
        pass
    return data


def _selected_login() -> credentials_pb2.OAuthTokens | None:
    """The token set of the tenant credential the providers service selected for this call."""
    credential = current_credential.get()
    if credential is None:
        return None
    if credential.kind != credentials_pb2.CREDENTIAL_KIND_OAUTH:
        # The CLI is logged in with Google OAuth only; an API key credential cannot log it in.
        raise GatewayError(
            grpc.StatusCode.FAILED_PRECONDITION,
            Reason.PROVIDER_NOT_CONFIGURED,
            "The Gemini CLI needs a Google login: store an OAuth credential (at /ui/gemini), not an API key.",
            {"retryable": "false"},
        )
    tokens = credentials_pb2.OAuthTokens(
        access_token=credential.secret, refresh_token=credential.refresh_token, token_type="Bearer"
    )
    if credential.expires_at_s is not None:
        tokens.expires_at.FromNanoseconds(int(credential.expires_at_s * 1e9))
    return tokens


class GeminiCliAdapter:
    """A ``gemini-cli`` provider: runs the configured ``gemini`` executable per request."""

    accepts_tenant_credentials = True
    """The providers service's credential selection chooses the tenant's own login for each call."""

    def __init__(
        self,
        name: str,
        config: GeminiCliProviderConfig,
        env: Mapping[str, str],
        *,
        inject: Inject = inject_oauth_credentials,
        read_file: Callable[[str], Awaitable[str]] | None = None,
    ) -> None:
        self.name = name
        self._config = config
        self._env = dict(env)
        self._inject = inject
        self._slots = asyncio.Semaphore(config.max_concurrency)
        self._read_file = read_file or (lambda path: asyncio.to_thread(Path(path).read_text, encoding="utf-8"))

    async def _tokens(self, tokens: credentials_pb2.OAuthTokens | None) -> credentials_pb2.OAuthTokens:
        chosen = tokens or oauth_tokens_var.get() or _selected_login()
        if chosen is not None and chosen.access_token:
            return chosen
        variable = self._config.oauth_creds_file_env
        path = self._env.get(variable)
        if not path:
            # No operator login to fall back on: the caller's tenant has to log in, which is the
            # caller's to fix (a 4xx), not the deployment's.
            raise GatewayError(
                grpc.StatusCode.FAILED_PRECONDITION,
                Reason.PROVIDER_NOT_CONFIGURED,
                f"No Google login for provider '{self.name}': log in at /ui/gemini to store one for your tenant.",
                {"provider": self.name, "retryable": "false", "missing_variable": variable},
            )
        try:
            return tokens_from_creds_file(await self._read_file(path))
        except (OSError, ValueError) as exc:
            raise GatewayError(
                grpc.StatusCode.UNAVAILABLE,
                Reason.PROVIDER_NOT_CONFIGURED,
                f"provider '{self.name}': the login file named by {variable} cannot be read ({type(exc).__name__})",
                {"provider": self.name, "retryable": "false", "missing_variable": variable},
            ) from None

    def _argv(self, model: str, output_format: str) -> list[str]:
        return [
            self._config.executable,
            "--model",
            model,
            "--output-format",
            output_format,
            *self._config.extra_args,
            "--prompt",
            INSTRUCTION,
        ]

    @asynccontextmanager
    async def _run(
        self,
        model: str,
        request: chat_pb2.ChatCompletionRequest,
        tokens: credentials_pb2.OAuthTokens | None,
        output_format: str,
    ) -> AsyncIterator[_Run]:
        """A started CLI run with the conversation on its stdin; on leaving, the whole process group
        is killed (a no-op after a clean exit) and the private home removed."""
        prompt = render_prompt(self.name, request)
        login = await self._tokens(tokens)
        secrets = tuple(s for s in (login.access_token, login.refresh_token, login.id_token) if s)
        async with self._slots:
            # mkdtemp makes the directory 0700, readable by this user only.
            run_dir = Path(await asyncio.to_thread(tempfile.mkdtemp, prefix="gateway-gemini-cli-"))
            home, workspace = run_dir / "home", run_dir / "workspace"
            try:
                # The CLI's file tools reach only its workspace (the working directory): the login
                # lives beside it, not in it, so no prompt can make the CLI read the token file.
                await asyncio.to_thread(_make_dirs, home, workspace)
                env = {k: v for k in _PASSED_ENV if (v := self._env.get(k) or os.environ.get(k))}
                env.update(self._config.env)
                env.update({"NO_COLOR": "1", "TERM": "dumb"})
                env.update(await asyncio.to_thread(self._inject, home, login))
                try:
                    process = await asyncio.create_subprocess_exec(
                        *self._argv(model, output_format),
                        stdin=asyncio.subprocess.PIPE,
                        stdout=asyncio.subprocess.PIPE,
                        stderr=asyncio.subprocess.PIPE,
                        env=env,
                        cwd=workspace,
                        start_new_session=True,
                        limit=_MAX_STDOUT,
                    )
                except OSError as exc:
                    raise not_configured(
                        self.name, f"providers.{self.name}.executable", f"gemini executable ({exc.strerror})"
                    ) from None
                assert process.stdin is not None and process.stdout is not None and process.stderr is not None
                stderr = asyncio.create_task(_read_bounded(process.stderr, _MAX_STDERR))
                writer = asyncio.create_task(self._feed(process.stdin, prompt))
                try:
                    yield _Run(process, process.stdout, stderr, secrets)
                finally:
                    _kill_group(process)
                    writer.cancel()
                    stderr.cancel()
                    # Reap the child even if this task is being cancelled: the kill above is already done.
                    await asyncio.shield(asyncio.gather(process.wait(), stderr, writer, return_exceptions=True))
            finally:
                await asyncio.shield(asyncio.to_thread(shutil.rmtree, run_dir, True))

    @staticmethod
    async def _feed(stdin: asyncio.StreamWriter, prompt: str) -> None:
        try:
            stdin.write(prompt.encode("utf-8"))
            await stdin.drain()
            stdin.close()
            await stdin.wait_closed()
        except (BrokenPipeError, ConnectionResetError):
            pass  # the CLI exited without reading: its exit status says why

    def _timeout(self) -> asyncio.Timeout:
        return asyncio.timeout(self._config.timeout_s)

    def _timed_out(self) -> GatewayError:
        return upstream_timeout(self.name, f"gemini CLI took longer than {self._config.timeout_s:g}s and was killed")

    async def chat(
        self,
        model: str,
        request: chat_pb2.ChatCompletionRequest,
        tokens: credentials_pb2.OAuthTokens | None = None,
    ) -> chat_pb2.ChatCompletion:
        """Run ``gemini --output-format json`` and return its ``response``; usage from its stats."""
        try:
            async with self._timeout(), self._run(model, request, tokens, "json") as run:
                out = (await run.stdout.read()).decode("utf-8", "replace")
                exit_code = await run.process.wait()
                body = _json_object(out)
                if exit_code != 0 or body is None or body.get("error"):
                    failure = await run.failure(body.get("error") if body else None)
                    if exit_code == 0 and body is None:
                        raise bad_response(self.name, "gemini CLI printed no JSON object")
                    raise error_for(self.name, failure)
        except TimeoutError:
            raise self._timed_out() from None
        answer = str(body.get("response") or "")
        completion = chat_pb2.ChatCompletion(
            id=f"chatcmpl-gemini-cli-{body.get('session_id') or uuid.uuid4().hex}",
            created=int(time.time()),
            model=model,
            provider=self.name,
        )
        completion.usage.CopyFrom(usage_from_session_stats(body.get("stats")) or estimated_usage(request, answer))
        choice = completion.choices.add(index=0, finish_reason=chat_pb2.FINISH_REASON_STOP)
        choice.message.role = chat_pb2.ROLE_ASSISTANT
        choice.message.text = answer
        return completion

    async def stream_chat(
        self,
        model: str,
        request: chat_pb2.ChatCompletionRequest,
        tokens: credentials_pb2.OAuthTokens | None = None,
    ) -> AsyncIterator[chat_pb2.ChatCompletionChunk]:
        """Yield the assistant's ``stream-json`` deltas as they are printed, then the finish reason and
        usage; a CLI without ``stream-json`` (``stream_json: false``) gives one chunk."""
        base = chat_pb2.ChatCompletionChunk(
            id=f"chatcmpl-gemini-cli-{uuid.uuid4().hex}", created=int(time.time()), model=model, provider=self.name
        )

        def chunk(
            delta: chat_pb2.Delta, finish: chat_pb2.FinishReason.ValueType = chat_pb2.FINISH_REASON_UNSPECIFIED
        ) -> chat_pb2.ChatCompletionChunk:
            out = chat_pb2.ChatCompletionChunk()
            out.CopyFrom(base)
            out.choices.add(index=0, delta=delta, finish_reason=finish)
            return out

        def closing(usage: chat_pb2.Usage) -> list[chat_pb2.ChatCompletionChunk]:
            final = chat_pb2.ChatCompletionChunk()
            final.CopyFrom(base)
            final.usage.CopyFrom(usage)
            return [chunk(chat_pb2.Delta(), chat_pb2.FINISH_REASON_STOP), final]

        if not self._config.stream_json:
            completion = await self.chat(model, request, tokens)
            yield chunk(chat_pb2.Delta(role=chat_pb2.ROLE_ASSISTANT, content=completion.choices[0].message.text))
            for out in closing(completion.usage):
                yield out
            return
        answer: list[str] = []
        result: dict[str, Any] | None = None
        try:
            async with self._timeout(), self._run(model, request, tokens, "stream-json") as run:
                while line := await run.stdout.readline():
                    event = _event(line)
                    if event is None:
                        continue
                    kind = event.get("type")
                    if kind == "message" and event.get("role") == "assistant" and event.get("content"):
                        delta = chat_pb2.Delta(content=str(event["content"]))
                        if not answer:
                            delta.role = chat_pb2.ROLE_ASSISTANT
                        answer.append(delta.content)
                        yield chunk(delta)
                    elif kind == "error" and event.get("severity") == "warning":
                        log.warning("gemini CLI warning: %s", _REDACT(str(event.get("message") or ""))[:_MAX_MESSAGE])
                    elif kind == "result":
                        result = event
                exit_code = await run.process.wait()
                if (result is not None and result.get("status") == "error") or exit_code != 0:
                    raise error_for(self.name, await run.failure(result.get("error") if result else None))
                if result is None:
                    raise stream_broken(self.name, "gemini CLI ended its stream without a result event")
        except TimeoutError:
            raise self._timed_out() from None
        assert result is not None  # a run without a result event raised above
        if not answer:
            yield chunk(chat_pb2.Delta(role=chat_pb2.ROLE_ASSISTANT, content=""))
        usage = usage_from_stream_stats(result.get("stats")) or estimated_usage(request, "".join(answer))
        for out in closing(usage):
            yield out

    async def embed(self, model: str, request: chat_pb2.EmbeddingRequest) -> chat_pb2.EmbeddingResponse:
        """The CLI has no embeddings: UNIMPLEMENTED."""
        raise unimplemented(self.name, "embeddings")

    async def list_models(self) -> list[chat_pb2.Model]:
        """The configured ``models``, as ``provider:model``."""
        return [chat_pb2.Model(id=f"{self.name}:{m}", owned_by="google") for m in self._config.models]

    async def aclose(self) -> None:
        """Nothing pooled: every run's process is gone when its call returns."""


def _event(line: bytes) -> dict[str, Any] | None:
    try:
        value = json.loads(line)
    except ValueError:
        return None  # a stray line of text (a warning) is not an event
    return value if isinstance(value, dict) else None
