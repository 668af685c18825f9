"""The stored job ↔ its protobuf message."""

from __future__ import annotations

from google.protobuf import timestamp_pb2

from gateway.chat.v1 import chat_pb2
from gateway.jobs.v1 import jobs_pb2
from services.router.jobs.model import Job, Status

_STATUS = {
    Status.QUEUED: jobs_pb2.JOB_STATUS_QUEUED,
    Status.RUNNING: jobs_pb2.JOB_STATUS_RUNNING,
    Status.SUCCEEDED: jobs_pb2.JOB_STATUS_SUCCEEDED,
    Status.FAILED: jobs_pb2.JOB_STATUS_FAILED,
    Status.CANCELLED: jobs_pb2.JOB_STATUS_CANCELLED,
}


def _time(seconds: float) -> timestamp_pb2.Timestamp:
    stamp = timestamp_pb2.Timestamp()
    stamp.FromNanoseconds(int(seconds * 1e9))
    return stamp


def job_to_proto(job: Job) -> jobs_pb2.Job:
    """The job as the API returns it."""
    message = jobs_pb2.Job(
        id=job.id,
        status=_STATUS[job.status],
        format=job.format,  # type: ignore[arg-type]
        request=chat_pb2.ChatCompletionRequest.FromString(job.request),
        create_time=_time(job.created_at),
        attempts=job.attempts,
        max_attempts=job.max_attempts,
        tenant_id=job.tenant_id,
    )
    if job.started_at is not None:
        message.start_time.CopyFrom(_time(job.started_at))
    if job.finished_at is not None:
        message.finish_time.CopyFrom(_time(job.finished_at))
    if job.error is not None and job.status != Status.SUCCEEDED:
        e = job.error
        message.error.CopyFrom(
            jobs_pb2.JobError(grpc_code=e.grpc_code, reason=e.reason, message=e.message, param=e.param)
        )
    if job.status == Status.SUCCEEDED and job.result is not None:
        message.result.CopyFrom(chat_pb2.ChatCompletion.FromString(job.result))
    if job.webhook_url:
        message.webhook.url = job.webhook_url
    return message
