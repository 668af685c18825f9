"""JobService: translates gRPC calls to the job store and workers, nothing more.

Submit runs the orchestrator's own admission without the call (reserve-then-release, see
``Orchestrator.check_chat``), so a job refused at submit answers the synchronous call's error and
is never queued. Every other RPC authenticates the caller and sees only its tenant's jobs: another
tenant's job is NOT_FOUND exactly like an unknown id.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any

import grpc

from gateway.chat.v1 import chat_pb2
from gateway.jobs.v1 import jobs_pb2, jobs_pb2_grpc
from gateway_common.config import JobsConfig
from gateway_common.errors import GatewayError, Reason
from gateway_common.openai_wire.jobs import job_to_json
from services.router.jobs import webhook
from services.router.jobs.convert import job_to_proto
from services.router.jobs.model import Job, new_job_id
from services.router.jobs.store import JobStore
from services.router.jobs.webhook import Webhooks
from services.router.jobs.worker import Workers
from services.router.orchestrator import Orchestrator
from services.router.servicer import _call_context

Context = grpc.aio.ServicerContext[Any, Any]

_FORMATS = frozenset({jobs_pb2.INGRESS_FORMAT_CHAT_COMPLETIONS, jobs_pb2.INGRESS_FORMAT_RESPONSES})


def _not_found(job_id: str) -> GatewayError:
    return GatewayError(
        grpc.StatusCode.NOT_FOUND, Reason.INVALID_REQUEST, f"No job found with id {job_id!r}.", {"param": "job_id"}
    )


def _invalid(message: str, param: str) -> GatewayError:
    return GatewayError(grpc.StatusCode.INVALID_ARGUMENT, Reason.INVALID_REQUEST, message, {"param": param})


class JobServicer(jobs_pb2_grpc.JobServiceServicer):
    """The async jobs API of one router."""

    def __init__(
        self,
        orchestrator: Orchestrator,
        store: JobStore,
        workers: Workers,
        webhooks: Webhooks,
        settings: JobsConfig,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._orchestrator = orchestrator
        self._store = store
        self._workers = workers
        self._webhooks = webhooks
        self._settings = settings
        self._clock = clock

    def notify(self, job: Job) -> None:
        """Post a job that ended to its webhook, if it has one."""
        if job.webhook_url:
            body = json.dumps(job_to_json(job_to_proto(job)), separators=(",", ":")).encode()
            self._webhooks.deliver(job.webhook_url, body)

    async def SubmitJob(self, request: jobs_pb2.SubmitJobRequest, context: Context) -> jobs_pb2.SubmitJobResponse:
        """Admit the request as the synchronous call would, then queue it."""
        if request.format not in _FORMATS:
            raise _invalid("format must be CHAT_COMPLETIONS or RESPONSES.", "format")
        if not request.HasField("request"):
            raise _invalid("request is required.", "request")
        if request.webhook.url:
            webhook.check_url(request.webhook.url, self._settings.webhook_allow_private)
        call = _call_context(context)
        canonical = chat_pb2.ChatCompletionRequest()
        canonical.CopyFrom(request.request)
        # Admission may fill in a capped max_tokens: it checks a copy, the job runs the request as sent.
        checked = chat_pb2.ChatCompletionRequest()
        checked.CopyFrom(canonical)
        principal = await self._orchestrator.check_chat(checked, call)
        if not principal.key_id:
            raise GatewayError(
                grpc.StatusCode.PERMISSION_DENIED,
                Reason.PERMISSION_DENIED,
                "Async jobs need an API key: a job runs later under the key that submitted it.",
            )
        job = Job(
            id=new_job_id(),
            tenant_id=principal.tenant_id,
            key_id=principal.key_id,
            format=request.format,
            request=canonical.SerializeToString(),
            created_at=self._clock(),
            max_attempts=self._settings.max_attempts,
            webhook_url=request.webhook.url,
        )
        await self._store.create(job)
        self._workers.wake()
        return jobs_pb2.SubmitJobResponse(job=job_to_proto(job))

    async def _own(self, job_id: str, context: Context) -> Job:
        principal = await self._orchestrator.authenticate(_call_context(context))
        job = await self._store.get(job_id) if job_id else None
        if job is None or job.tenant_id != principal.tenant_id:
            raise _not_found(job_id)
        return job

    async def GetJob(self, request: jobs_pb2.GetJobRequest, context: Context) -> jobs_pb2.GetJobResponse:
        """One of the caller's jobs."""
        return jobs_pb2.GetJobResponse(job=job_to_proto(await self._own(request.job_id, context)))

    async def ListJobs(self, request: jobs_pb2.ListJobsRequest, context: Context) -> jobs_pb2.ListJobsResponse:
        """The caller's tenant's jobs, newest first."""
        if not 0 <= request.limit <= 100:
            raise _invalid("limit must be between 1 and 100.", "limit")
        principal = await self._orchestrator.authenticate(_call_context(context))
        jobs, more = await self._store.list(principal.tenant_id, request.limit or 20, request.after)
        return jobs_pb2.ListJobsResponse(jobs=[job_to_proto(j) for j in jobs], has_more=more)

    async def CancelJob(self, request: jobs_pb2.CancelJobRequest, context: Context) -> jobs_pb2.CancelJobResponse:
        """Cancel a queued or running job; a finished one comes back as it ended."""
        job = await self._own(request.job_id, context)
        cancelled = await self._store.update(job.id, lambda j: j.cancel(self._clock()))
        if cancelled is None:
            current = await self._store.get(job.id)
            return jobs_pb2.CancelJobResponse(job=job_to_proto(current or job))
        # Running here: its task is cancelled now; running in another router: its heartbeat sees it.
        self._workers.cancel_local(job.id)
        self.notify(cancelled)
        return jobs_pb2.CancelJobResponse(job=job_to_proto(cancelled))
