"""Wire types of the Gemini API (``generativelanguage.googleapis.com/v1beta``), as far as the gateway
uses them: ``models/{model}:generateContent``, ``:streamGenerateContent?alt=sse`` (every event is a
whole ``GenerateContentResponse``), ``:batchEmbedContents`` and ``GET models``.

TypedDicts rather than models, for the same reason as ``schemas/anthropic.py``: request bodies are
built as plain dicts, responses are read defensively. Field names are the API's JSON (camelCase).
"""

from __future__ import annotations

from typing import Any, Literal, NotRequired, TypedDict

# --- request -----------------------------------------------------------------------------------


class Blob(TypedDict):
    """Inline bytes (``inlineData``): base64 data and its MIME type."""

    mimeType: str
    data: str


class FileData(TypedDict):
    """Media by URI (``fileData``): a Files API URI or a URL the API may fetch."""

    mimeType: NotRequired[str]
    fileUri: str


class FunctionCall(TypedDict):
    """A call the model made; ``args`` is the arguments object."""

    name: str
    args: dict[str, Any]


class FunctionResponse(TypedDict):
    """A function's result; ``response`` must be a JSON object."""

    name: str
    response: dict[str, Any]


class Part(TypedDict, total=False):
    """One part of a content; exactly one of the data fields is set."""

    text: str
    thought: bool
    thoughtSignature: str
    inlineData: Blob
    fileData: FileData
    functionCall: FunctionCall
    functionResponse: FunctionResponse


class Content(TypedDict):
    """A turn: role ``user`` or ``model`` and its parts (the system instruction has no role)."""

    role: NotRequired[Literal["user", "model"]]
    parts: list[Part]


class FunctionDeclaration(TypedDict):
    """A function the model may call; ``parametersJsonSchema`` takes plain JSON Schema."""

    name: str
    description: NotRequired[str]
    parametersJsonSchema: NotRequired[dict[str, Any]]


class Tool(TypedDict):
    """A tool entry; the gateway sends all functions in one entry."""

    functionDeclarations: list[FunctionDeclaration]


class FunctionCallingConfig(TypedDict):
    """AUTO (model decides), ANY (must call; optionally one of ``allowedFunctionNames``), NONE."""

    mode: Literal["AUTO", "ANY", "NONE"]
    allowedFunctionNames: NotRequired[list[str]]


class ToolConfig(TypedDict):
    """The tool configuration of a request."""

    functionCallingConfig: FunctionCallingConfig


class GenerationConfig(TypedDict, total=False):
    """Sampling and output options."""

    temperature: float
    topP: float
    topK: int
    maxOutputTokens: int
    stopSequences: list[str]
    candidateCount: int
    seed: int
    presencePenalty: float
    frequencyPenalty: float
    responseMimeType: str
    responseJsonSchema: dict[str, Any]
    responseLogprobs: bool
    logprobs: int


class GenerateContentRequest(TypedDict):
    """The request body; fields the gateway does not model are merged into the sent dict."""

    contents: list[Content]
    systemInstruction: NotRequired[Content]
    tools: NotRequired[list[Tool]]
    toolConfig: NotRequired[ToolConfig]
    generationConfig: NotRequired[GenerationConfig]


# --- response ----------------------------------------------------------------------------------

FinishReason = Literal[
    "FINISH_REASON_UNSPECIFIED",
    "STOP",
    "MAX_TOKENS",
    "SAFETY",
    "RECITATION",
    "LANGUAGE",
    "OTHER",
    "BLOCKLIST",
    "PROHIBITED_CONTENT",
    "SPII",
    "MALFORMED_FUNCTION_CALL",
    "IMAGE_SAFETY",
    "UNEXPECTED_TOOL_CALL",
]


class UsageMetadata(TypedDict, total=False):
    """Token counts. ``promptTokenCount`` includes cached content; thoughts are separate from
    candidates; ``totalTokenCount`` is the sum of all. Repeated on every stream event."""

    promptTokenCount: int
    cachedContentTokenCount: int
    candidatesTokenCount: int
    toolUsePromptTokenCount: int
    thoughtsTokenCount: int
    totalTokenCount: int


class Candidate(TypedDict, total=False):
    """One generated answer."""

    index: int
    content: Content
    finishReason: FinishReason
    logprobsResult: dict[str, Any]


class PromptFeedback(TypedDict, total=False):
    """Set when the prompt itself was blocked; the response then has no candidates."""

    blockReason: str
    safetyRatings: list[dict[str, Any]]


class GenerateContentResponse(TypedDict, total=False):
    """The answer of generateContent, and each event of streamGenerateContent."""

    candidates: list[Candidate]
    promptFeedback: PromptFeedback
    usageMetadata: UsageMetadata
    modelVersion: str
    responseId: str


class EmbedContentRequest(TypedDict):
    """One input of batchEmbedContents; ``model`` repeats the URL's ``models/{model}``."""

    model: str
    content: Content
    outputDimensionality: NotRequired[int]


class BatchEmbedContentsRequest(TypedDict):
    """The batchEmbedContents body: one request per input, answered in order."""

    requests: list[EmbedContentRequest]
