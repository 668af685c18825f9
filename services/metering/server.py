"""The metering process: the ledger store, the servicer, and the lifecycle that ties them.

Two services on one engine: the ledger (``MeteringService``) and the Responses API's stored
responses (``ResponseStoreService``), whose retention purge runs on a periodic loop.

Start: bind, then ``on_ready`` migrates the database (which proves it answers) and starts the
purge loop, then SERVING. Stop: NOT_SERVING, in-flight calls finish within the grace period, the
purge loop stops, then the engine is disposed.
"""

from __future__ import annotations

from datetime import UTC, datetime

from gateway.metering.v1 import metering_pb2, metering_pb2_grpc, response_store_pb2, response_store_pb2_grpc
from gateway_common.config import GatewayConfig
from gateway_common.grpc_server import GrpcServer, ServiceApp, ServiceRegistration
from gateway_common.periodic import Periodic
from gateway_common.redaction import Redactor
from services.metering.response_servicer import ResponseStoreServicer
from services.metering.response_store import purge_expired
from services.metering.servicer import MeteringServicer
from services.metering.storage.responses import SqlResponseStore
from services.metering.storage.sql import SqlLedgerStore, create_engine
from services.metering.telemetry import TelemetryLog

RETENTION_INTERVAL_S = 3600.0
"""How often expired stored responses are purged (and once at start): retention is counted in days."""


def _utc_now() -> datetime:
    return datetime.now(UTC)


def build(config: GatewayConfig, *, listen: str | None = None) -> ServiceApp:
    """The metering service on ``listen`` (default: ``config.services.metering.listen``)."""
    engine = create_engine(config.metering.database_url)
    store = SqlLedgerStore(engine)
    responses = SqlResponseStore(engine)
    telemetry = TelemetryLog(config.telemetry.log_file) if config.telemetry.log_file else None
    registration = ServiceRegistration(
        add=metering_pb2_grpc.add_MeteringServiceServicer_to_server,
        servicer=MeteringServicer(store, telemetry=telemetry, redact=Redactor(config.prompt_log.redact_patterns)),
        name=metering_pb2.DESCRIPTOR.services_by_name["MeteringService"].full_name,
    )
    response_registration = ServiceRegistration(
        add=response_store_pb2_grpc.add_ResponseStoreServiceServicer_to_server,
        servicer=ResponseStoreServicer(responses, max_bytes=config.metering.response_max_bytes),
        name=response_store_pb2.DESCRIPTOR.services_by_name["ResponseStoreService"].full_name,
    )
    server = GrpcServer(listen or config.services.metering.listen, [registration, response_registration])
    retention_days = config.metering.response_retention_days
    retention = Periodic(
        "response-retention",
        RETENTION_INTERVAL_S,
        lambda: purge_expired(responses, retention_days, _utc_now),
        run_at_start=True,
    )

    async def ready() -> None:
        await store.open()
        # Only once the schema exists; every replica purges, which is harmless (deletes are idempotent).
        retention.start()

    async def stop() -> None:
        await retention.stop()
        # After the server stopped: no RecordEvents call can append any more.
        if telemetry is not None:
            await telemetry.aclose()
        await store.close()

    return ServiceApp("metering", server, on_ready=ready, on_stop=stop)
