"""The metering process: the ledger store, the servicer, and the lifecycle that ties them.

Start: bind, then ``on_ready`` migrates the database (which proves it answers), then SERVING.
Stop: NOT_SERVING, in-flight calls finish within the grace period, then the engine is disposed.
"""

from __future__ import annotations

from gateway.metering.v1 import metering_pb2, metering_pb2_grpc
from gateway_common.config import GatewayConfig
from gateway_common.grpc_server import GrpcServer, ServiceApp, ServiceRegistration
from gateway_common.redaction import Redactor
from services.metering.servicer import MeteringServicer
from services.metering.storage.sql import SqlLedgerStore, create_engine
from services.metering.telemetry import TelemetryLog


def build(config: GatewayConfig, *, listen: str | None = None) -> ServiceApp:
    """The metering service on ``listen`` (default: ``config.services.metering.listen``)."""
    store = SqlLedgerStore(create_engine(config.metering.database_url))
    telemetry = TelemetryLog(config.telemetry.log_file) if config.telemetry.log_file else None
    registration = ServiceRegistration(
        add=metering_pb2_grpc.add_MeteringServiceServicer_to_server,
        servicer=MeteringServicer(store, telemetry=telemetry, redact=Redactor(config.prompt_log.redact_patterns)),
        name=metering_pb2.DESCRIPTOR.services_by_name["MeteringService"].full_name,
    )
    server = GrpcServer(listen or config.services.metering.listen, [registration])

    async def stop() -> None:
        # After the server stopped: no RecordEvents call can append any more.
        if telemetry is not None:
            await telemetry.aclose()
        await store.close()

    return ServiceApp("metering", server, on_ready=store.open, on_stop=stop)
