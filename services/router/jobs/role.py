"""The jobs role of a router process: its store, workers, webhooks and servicer, started and stopped together.

The queue is Redis when the router has ``redis_url`` (every replica shares it, so a killed
replica's jobs are taken over by the others), else the SQLite file ``router.jobs.path``.
"""

from __future__ import annotations

import time

from redis.asyncio import Redis

from gateway.auth.v1 import auth_pb2_grpc
from gateway.jobs.v1 import jobs_pb2, jobs_pb2_grpc
from gateway_common.config import GatewayConfig
from gateway_common.grpc_server import ServiceRegistration
from gateway_common.periodic import Periodic
from services.router.conversations import Conversations
from services.router.jobs.runner import OrchestratorRunner
from services.router.jobs.servicer import JobServicer
from services.router.jobs.store import JobStore
from services.router.jobs.store_redis import RedisJobStore
from services.router.jobs.store_sqlite import SqliteJobStore
from services.router.jobs.webhook import Webhooks
from services.router.jobs.worker import Workers
from services.router.orchestrator import Orchestrator
from services.router.spool_adoption import spool_path

SERVICE_NAME = jobs_pb2.DESCRIPTOR.services_by_name["JobService"].full_name


class JobsRole:
    """Async jobs inside one router."""

    def __init__(
        self,
        config: GatewayConfig,
        orchestrator: Orchestrator,
        auth: auth_pb2_grpc.AuthServiceAsyncStub,
        redis: Redis | None,
        conversations: Conversations | None = None,
    ) -> None:
        settings = config.router.jobs
        self.store: JobStore = (
            RedisJobStore(redis, retention_s=settings.retention_s)
            if redis is not None
            else SqliteJobStore(spool_path(settings.path))
        )
        self._webhooks = Webhooks(settings)
        self.workers = Workers(self.store, OrchestratorRunner(orchestrator, auth, conversations), settings)
        self.servicer = JobServicer(orchestrator, self.store, self.workers, self._webhooks, settings)
        self.workers.set_notify(self.servicer.notify)
        self._purge = Periodic("jobs-purge", 3600.0, lambda: self._purge_old(settings.retention_s), run_at_start=True)

    async def _purge_old(self, retention_s: float) -> None:
        await self.store.purge(time.time() - retention_s)

    @property
    def registration(self) -> ServiceRegistration:
        """How the router's gRPC server serves JobService."""
        return ServiceRegistration(jobs_pb2_grpc.add_JobServiceServicer_to_server, self.servicer, SERVICE_NAME)

    async def start(self) -> None:
        """Open the queue and start the workers."""
        await self.store.open()
        self.workers.start()
        self._purge.start()

    async def stop(self) -> None:
        """Stop the workers (a running job is re-queued), let webhooks finish briefly, close the queue."""
        await self._purge.stop()
        await self.workers.stop()
        await self._webhooks.close()
        await self.store.close()
