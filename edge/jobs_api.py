"""Async jobs over HTTP: ``POST /v1/jobs``, ``GET /v1/jobs``, ``GET /v1/jobs/{id}``, ``POST /v1/jobs/{id}/cancel``.

Bespoke routes rather than the generic transcoder: a job's request is parsed at the edge, like
every ingress, by its own format's parser into the one canonical request, and a succeeded job's
result renders in the shape that format's synchronous call returns. :data:`INGRESS_PARSERS` is the
seam: the key the request carries (``messages`` for Chat Completions, ``input`` for Responses)
chooses the format and its parser; the renderers are in ``gateway_common.openai_wire.jobs``.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import grpc
from fastapi import APIRouter, Request
from fastapi.responses import Response

from edge.body import read_json
from edge.errors import error_body
from edge.openai_api import call_metadata, error_response, rpc_error_response
from edge.state import EdgeState
from gateway.chat.v1 import chat_pb2
from gateway.jobs.v1 import jobs_pb2, jobs_pb2_grpc
from gateway_common import openai_wire
from gateway_common.errors import GatewayError, Reason
from gateway_common.openai_wire.jobs import job_to_json
from gateway_common.openai_wire.responses_requests import parse_responses_request

router = APIRouter()

Parse = Callable[[Any], chat_pb2.ChatCompletionRequest]


def _parse_chat(body: Any) -> chat_pb2.ChatCompletionRequest:
    request, stream = openai_wire.parse_chat_request(body)
    if stream:
        raise _invalid("A job's result is not streamed: leave stream unset or false.", "request.stream")
    return request


def _parse_responses(body: Any) -> chat_pb2.ChatCompletionRequest:
    request, stream = parse_responses_request(body)
    if stream:
        raise _invalid("A job's result is not streamed: leave stream unset or false.", "request.stream")
    return request


INGRESS_PARSERS: dict[str, tuple[int, Parse]] = {
    "messages": (jobs_pb2.INGRESS_FORMAT_CHAT_COMPLETIONS, _parse_chat),
    "input": (jobs_pb2.INGRESS_FORMAT_RESPONSES, _parse_responses),
}
"""The key a job's request carries → its ingress format and that format's parser."""

_SUBMIT_KEYS = frozenset({"request", "webhook"})
_STATUS_CODES = {code.value[0]: code for code in grpc.StatusCode}


def _invalid(message: str, param: str) -> GatewayError:
    return GatewayError(grpc.StatusCode.INVALID_ARGUMENT, Reason.INVALID_REQUEST, message, {"param": param})


def _within_request(error: GatewayError) -> GatewayError:
    """The parser names parameters of the request itself; here it sits under ``request``."""
    param = error.metadata.get("param")
    if param and not param.startswith("request"):
        error.metadata = {**error.metadata, "param": f"request.{param}"}
    return error


def parse_submit(body: Any) -> jobs_pb2.SubmitJobRequest:
    """``{"request": {...}, "webhook": {"url": ...}?}`` as the SubmitJob request; 400 naming the param."""
    if not isinstance(body, dict):
        raise _invalid("The body must be a JSON object.", "body")
    unknown = sorted(set(body) - _SUBMIT_KEYS)
    if unknown:
        raise _invalid(f"Unrecognized request argument supplied: {unknown[0]}", unknown[0])
    raw = body.get("request")
    if not isinstance(raw, dict):
        raise _invalid("request must be an object: a chat completions or responses request.", "request")
    found = [key for key in INGRESS_PARSERS if key in raw]
    if len(found) != 1:
        raise _invalid("request must have either messages (chat completions) or input (responses).", "request")
    ingress, parse = INGRESS_PARSERS[found[0]]
    try:
        submit = jobs_pb2.SubmitJobRequest(request=parse(raw), format=ingress)  # type: ignore[arg-type]
    except GatewayError as error:
        raise _within_request(error) from None
    webhook = body.get("webhook")
    if webhook is not None:
        if not isinstance(webhook, dict) or set(webhook) - {"url"}:
            raise _invalid("webhook must be an object with url.", "webhook")
        url = webhook.get("url")
        if not isinstance(url, str) or not url:
            raise _invalid("webhook.url must be a non-empty string.", "webhook.url")
        submit.webhook.url = url
    return submit


def _render_error(error: jobs_pb2.JobError) -> dict[str, Any]:
    code = _STATUS_CODES.get(error.grpc_code, grpc.StatusCode.UNKNOWN)
    reason = Reason(error.reason) if error.reason in Reason.__members__ else Reason.INTERNAL
    return error_body(GatewayError(code, reason, error.message, {"param": error.param} if error.param else {}))


def _job_response(job: jobs_pb2.Job, status_code: int = 200) -> Response:
    body = json.dumps(job_to_json(job, _render_error), ensure_ascii=False, separators=(",", ":")).encode()
    return Response(body, status_code=status_code, media_type="application/json")


def _stub(request: Request) -> jobs_pb2_grpc.JobServiceAsyncStub:
    state: EdgeState = request.app.state.edge
    # A stub over the router's long-lived channel: cheap, no connection of its own.
    return jobs_pb2_grpc.JobServiceStub(state.channels["router"])


@router.post("/v1/jobs")
async def submit_job(request: Request) -> Response:
    """Queue a chat completions (or responses) request; answers at once with the queued job."""
    state: EdgeState = request.app.state.edge
    try:
        submit = parse_submit(await read_json(request, state.config.edge.max_body_bytes))
    except GatewayError as error:
        return error_response(error)
    try:
        response = await _stub(request).SubmitJob(submit, metadata=call_metadata(request))
    except grpc.aio.AioRpcError as exc:
        return rpc_error_response(exc)
    return _job_response(response.job)


@router.get("/v1/jobs")
async def list_jobs(request: Request, limit: str | None = None, after: str | None = None) -> Response:
    """The caller's jobs, newest first (``limit`` 1–100, default 20; ``after`` a job id)."""
    try:
        count = int(limit) if limit is not None else 0
    except ValueError:
        return error_response(_invalid("limit must be an integer between 1 and 100.", "limit"))
    if limit is not None and not 1 <= count <= 100:
        return error_response(_invalid("limit must be an integer between 1 and 100.", "limit"))
    try:
        response = await _stub(request).ListJobs(
            jobs_pb2.ListJobsRequest(limit=count, after=after or ""), metadata=call_metadata(request)
        )
    except grpc.aio.AioRpcError as exc:
        return rpc_error_response(exc)
    data = [job_to_json(job, _render_error) for job in response.jobs]
    body = {
        "object": "list",
        "data": data,
        "first_id": data[0]["id"] if data else None,
        "last_id": data[-1]["id"] if data else None,
        "has_more": response.has_more,
    }
    return Response(json.dumps(body, ensure_ascii=False, separators=(",", ":")).encode(), media_type="application/json")


@router.get("/v1/jobs/{job_id}")
async def get_job(request: Request, job_id: str) -> Response:
    """One of the caller's jobs: status, timestamps, attempts, and the result or error once it ended."""
    try:
        response = await _stub(request).GetJob(jobs_pb2.GetJobRequest(job_id=job_id), metadata=call_metadata(request))
    except grpc.aio.AioRpcError as exc:
        return rpc_error_response(exc)
    return _job_response(response.job)


@router.post("/v1/jobs/{job_id}/cancel")
async def cancel_job(request: Request, job_id: str) -> Response:
    """Cancel one of the caller's jobs (a finished job comes back as it ended)."""
    try:
        response = await _stub(request).CancelJob(
            jobs_pb2.CancelJobRequest(job_id=job_id), metadata=call_metadata(request)
        )
    except grpc.aio.AioRpcError as exc:
        return rpc_error_response(exc)
    return _job_response(response.job)
