"""Continuing a stream that broke after part of the answer reached the client.

The client already holds the partial answer, so a new attempt must not start over: it is asked to
continue the partial assistant message, and its chunks are spliced onto what was sent (same id,
no second role, usage covering every attempt). Upstreams that take an assistant prefill (Anthropic
treats a final assistant turn as the start of its answer; vLLM with ``continue_final_message``)
get the partial text as that prefill; others get it as an assistant turn followed by an explicit
instruction to go on from its last character.

Tool calls are held back by the router until each is whole, so one cut mid-arguments never reached
the client and is restarted cleanly by the next attempt. Some answers cannot be continued
honestly: several choices (``n > 1``), token log probabilities (the continuation's would not be
the original's), text followed by tool calls already sent. Those end with an in-band error
instead, never with a truncated answer that looks complete.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from gateway.chat.v1 import chat_pb2

CONTINUE_INSTRUCTION = (
    "Your previous answer was cut off. Continue it from exactly where it stopped: output only the "
    "rest of the answer, starting with the next character, without repeating anything or commenting."
)
"""The instruction sent to an upstream that cannot take an assistant prefill."""

# Provider types whose API continues a final assistant message by itself.
PREFILL_TYPES = frozenset({"anthropic"})

CONTINUE_FINAL_MESSAGE = {"continue_final_message": True, "add_generation_prompt": False}
"""vLLM's request parameters that make it extend the final assistant message instead of answering it."""


def why_not_continuable(request: chat_pb2.ChatCompletionRequest, *, enabled: bool) -> str | None:
    """Why a broken stream of ``request`` cannot be continued, or None when it can."""
    if not enabled:
        return "continuation of broken streams is disabled"
    if request.HasField("n") and request.n > 1:
        return "the request asked for several choices (n > 1)"
    extra = request.extra.fields if request.HasField("extra") else {}
    if ("logprobs" in extra and extra["logprobs"].bool_value) or "top_logprobs" in extra:
        return "the request asked for log probabilities"
    return None


@dataclass
class Splice:
    """What the client has received so far, and how a continuation's chunks are made to follow it."""

    text: str = ""
    """The content of choice 0 the client has received."""
    tool_calls: int = 0
    """Tool-call deltas the client has received (an answer under way with tools is not continued)."""
    role_sent: bool = False
    chunk_id: str = ""
    created: int = 0
    model: str = ""
    continuations: int = 0
    """How many times the answer was continued."""
    continued_from: list[str] = field(default_factory=list)
    """Where each continuation started: ``<deployment>@<characters already sent>``."""
    carried_prompt_tokens: int = 0
    carried_completion_tokens: int = 0
    """Usage of the attempts that broke off, counted by the gateway (they sent no usage)."""

    @property
    def started(self) -> bool:
        """Whether anything carrying content reached the client."""
        return bool(self.text) or self.tool_calls > 0

    def pass_on(self, chunk: chat_pb2.ChatCompletionChunk) -> chat_pb2.ChatCompletionChunk:
        """``chunk`` as the client should see it: one stream, one id, one role, usage of every attempt."""
        if self.continuations:
            chunk.id, chunk.created = self.chunk_id, self.created
            if self.model:
                chunk.model = self.model
            if chunk.HasField("usage"):
                chunk.usage.prompt_tokens += self.carried_prompt_tokens
                chunk.usage.completion_tokens += self.carried_completion_tokens
                chunk.usage.total_tokens = chunk.usage.prompt_tokens + chunk.usage.completion_tokens
        elif not self.chunk_id:
            self.chunk_id, self.created, self.model = chunk.id, chunk.created, chunk.model
        for choice in chunk.choices:
            delta = choice.delta
            if delta.role:
                if self.role_sent:
                    delta.role = chat_pb2.ROLE_UNSPECIFIED
                self.role_sent = True
            if choice.index == 0:
                self.text += delta.content
            self.tool_calls += len(delta.tool_calls)
        return chunk

    def continue_request(
        self,
        request: chat_pb2.ChatCompletionRequest,
        *,
        prefill: bool,
        continue_final_message: bool = False,
        broken: str,
        prompt_tokens: int,
        completion_tokens: int,
    ) -> chat_pb2.ChatCompletionRequest:
        """The request for the next attempt: ``request`` asked to continue what the client has.

        ``prefill``: the upstream extends a final assistant message by itself (Anthropic);
        ``continue_final_message``: it does when asked with vLLM's parameters, sent in ``extra``
        (the OpenAI-style body carries ``extra`` as is). Otherwise an explicit instruction follows.
        ``broken`` names the attempt that broke (``<deployment>``); its usage (the prompt estimate
        and the completion counted so far) is carried into the answer's total.
        """
        self.continuations += 1
        self.continued_from.append(f"{broken}@{len(self.text)}")
        self.carried_prompt_tokens += prompt_tokens
        self.carried_completion_tokens += completion_tokens
        follow = chat_pb2.ChatCompletionRequest()
        follow.CopyFrom(request)
        follow.messages.add(role=chat_pb2.ROLE_ASSISTANT, text=self.text)
        if continue_final_message:
            follow.extra.update(CONTINUE_FINAL_MESSAGE)
        elif not prefill:
            follow.messages.add(role=chat_pb2.ROLE_USER, text=CONTINUE_INSTRUCTION)
        return follow


def only_tool_calls(chunk: chat_pb2.ChatCompletionChunk) -> bool:
    """Whether ``chunk`` carries tool-call deltas and nothing that ends or follows the calls."""
    if chunk.HasField("usage") or not chunk.choices:
        return False
    return all(
        c.delta.tool_calls and not c.delta.content and c.finish_reason == chat_pb2.FINISH_REASON_UNSPECIFIED
        for c in chunk.choices
    )


def carries_content(chunk: chat_pb2.ChatCompletionChunk) -> bool:
    """Whether ``chunk`` closes the fallback window: content, a refusal, a tool call, a finish or usage.

    A chunk with only the assistant role (or nothing) does not: an upstream that sends it and then
    stalls is failed over like one that sent nothing.
    """
    if chunk.HasField("usage"):
        return True
    for choice in chunk.choices:
        delta = choice.delta
        if delta.content or delta.refusal or delta.tool_calls:
            return True
        if choice.finish_reason != chat_pb2.FINISH_REASON_UNSPECIFIED:
            return True
    return False
