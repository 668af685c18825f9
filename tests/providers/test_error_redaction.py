"""An upstream's error body reaches the client without secrets: not in the message, and not in the
``code``, ``type`` or ``param`` either (the edge passes the upstream's code on verbatim)."""

from __future__ import annotations

import json

import grpc
import pytest

from edge.errors import error_body
from gateway.chat.v1 import chat_pb2
from gateway.providers.v1 import providers_pb2
from gateway_common.errors import GatewayError
from services.providers.http import upstream_error
from tests.providers.conformance import KEY, KEY_ENV, PROVIDER
from tests.providers.harness import provider_service
from tests.providers.replay import ReplayServer, load

LEAKED = "sk-proj-Zx81LkQ2mN7vB4cT9rW3yU6pA0sD5fG"
REQUEST = chat_pb2.ChatCompletionRequest(messages=[chat_pb2.Message(role=chat_pb2.ROLE_USER, text="hi")])


def _recorded_401_leaking(code: str, kind: str, param: str) -> bytes:
    """OpenAI's recorded 401 body, with key material put where a misbehaving upstream puts it."""
    body = json.loads(load("openai/error.401.invalid_api_key.json").body)
    body["error"].update(code=code, type=kind, param=param)
    return json.dumps(body).encode()


async def test_secrets_in_code_type_and_param_are_redacted_through_the_service(replay: ReplayServer) -> None:
    recording = load("openai/error.401.invalid_api_key.json")
    replay.reply(
        recording.with_body(
            _recorded_401_leaking(
                code=f"invalid_api_key:{LEAKED}",
                kind=f"invalid_request_error ({KEY})",
                param=f"headers.authorization=Bearer {KEY}",
            )
        )
    )
    entry = {PROVIDER: {"type": "openai_compatible", "base_url": replay.url, "api_key_env": KEY_ENV}}
    async with provider_service(entry, {KEY_ENV: KEY}) as stub:
        target = providers_pb2.Target(provider=PROVIDER, model="gpt-4o-mini")
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            await stub.Chat(providers_pb2.ChatRequest(target=target, completion=REQUEST))
    error = GatewayError.from_rpc_error(raised.value)
    assert error.code == grpc.StatusCode.UNAUTHENTICATED
    everything = json.dumps([error.message, error.metadata, error_body(error)])
    assert LEAKED not in everything
    assert KEY not in everything
    assert "sk-proj" not in everything
    # What is not secret survives, so the client still learns what went wrong.
    assert error.metadata["upstream_code"] == "invalid_api_key:[REDACTED]"
    assert error.metadata["upstream_type"] == "invalid_request_error ([REDACTED])"
    assert error.metadata["upstream_param"] == "headers.authorization=Bearer [REDACTED]"
    assert error_body(error)["error"]["code"] == "invalid_api_key:[REDACTED]"


@pytest.mark.parametrize(
    "body",
    [
        # OpenAI style, the key glued to an identifier.
        {"error": {"message": "bad key", "type": "invalid_request_error", "param": None, "code": f"key_{LEAKED}"}},
        # vLLM-style flat error.
        {"object": "error", "message": "bad key", "type": "BadRequestError", "code": LEAKED},
        # Google style: the status stands in for the code.
        {"error": {"code": 400, "message": "bad key", "status": f"INVALID_ARGUMENT {LEAKED}"}},
    ],
)
def test_every_body_style_has_its_code_redacted(body: dict[str, object]) -> None:
    error = upstream_error("up", 400, {}, json.dumps(body).encode())
    assert LEAKED not in json.dumps([error.message, error.metadata, error_body(error)])
    assert "[REDACTED]" in error.metadata["upstream_code"]


def test_the_configured_secret_is_redacted_from_the_code_whatever_its_shape() -> None:
    secret = "plain-secret-without-a-known-prefix"
    body = {"error": {"message": "m", "type": "t", "param": secret, "code": f"rejected {secret}"}}
    error = upstream_error("up", 401, {}, json.dumps(body).encode(), secrets=iter([secret]))
    assert error.metadata["upstream_code"] == "rejected [REDACTED]"
    assert error.metadata["upstream_param"] == "[REDACTED]"
