"""An async job as JSON (``GET /v1/jobs/{id}`` and the completion webhook's body).

A succeeded job's ``result`` is its canonical answer rendered in the shape the synchronous call
of its ingress format would have returned: one renderer per format in :data:`RESULT_RENDERERS`
(Chat Completions' ``chat.completion``, the Responses API's ``response``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from gateway.chat.v1 import chat_pb2
from gateway.jobs.v1 import jobs_pb2
from gateway_common.openai_wire.responses import completion_to_openai
from gateway_common.openai_wire.responses_render import response_object

Json = dict[str, Any]


def _response(request: chat_pb2.ChatCompletionRequest, completion: chat_pb2.ChatCompletion) -> Json:
    # The router set the completion's id to the response id, and its created time to the turn's.
    return response_object(request, completion.id, completion=completion)


RESULT_RENDERERS: dict[int, Callable[[chat_pb2.ChatCompletionRequest, chat_pb2.ChatCompletion], Json]] = {
    jobs_pb2.INGRESS_FORMAT_CHAT_COMPLETIONS: lambda _request, completion: completion_to_openai(completion),
    jobs_pb2.INGRESS_FORMAT_RESPONSES: _response,
}
"""Ingress format → how its synchronous call renders the canonical answer."""

STATUS_NAMES: dict[int, str] = {
    jobs_pb2.JOB_STATUS_QUEUED: "queued",
    jobs_pb2.JOB_STATUS_RUNNING: "running",
    jobs_pb2.JOB_STATUS_SUCCEEDED: "succeeded",
    jobs_pb2.JOB_STATUS_FAILED: "failed",
    jobs_pb2.JOB_STATUS_CANCELLED: "cancelled",
}
"""The status enum as the API names it."""

FORMAT_NAMES: dict[int, str] = {
    jobs_pb2.INGRESS_FORMAT_CHAT_COMPLETIONS: "chat.completions",
    jobs_pb2.INGRESS_FORMAT_RESPONSES: "responses",
}
"""The ingress format as the API names it."""


def plain_error(error: jobs_pb2.JobError) -> Json:
    """An OpenAI-shaped error object from the stored error alone (no HTTP mapping at hand)."""
    return {
        "error": {"message": error.message, "type": None, "param": error.param or None, "code": error.reason.lower()}
    }


def job_to_json(job: jobs_pb2.Job, render_error: Callable[[jobs_pb2.JobError], Json] = plain_error) -> Json:
    """The job as the API shows it; ``render_error`` gives a failed job's ``error`` its OpenAI body."""

    body: Json = {
        "id": job.id,
        "object": "job",
        "status": STATUS_NAMES.get(job.status, "queued"),
        "format": FORMAT_NAMES.get(job.format, "chat.completions"),
        "model": job.request.model,
        "created_at": job.create_time.seconds,
        "started_at": job.start_time.seconds if job.HasField("start_time") else None,
        "finished_at": job.finish_time.seconds if job.HasField("finish_time") else None,
        "attempts": job.attempts,
        "max_attempts": job.max_attempts,
        "error": None,
        "result": None,
    }
    if job.HasField("error"):
        body["error"] = render_error(job.error)["error"]
    if job.status == jobs_pb2.JOB_STATUS_SUCCEEDED and job.HasField("result"):
        render = RESULT_RENDERERS.get(job.format, RESULT_RENDERERS[jobs_pb2.INGRESS_FORMAT_CHAT_COMPLETIONS])
        body["result"] = render(job.request, job.result)
    if job.webhook.url:
        body["webhook"] = {"url": job.webhook.url}
    return body
