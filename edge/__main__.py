"""``python -m edge``: serve the edge with uvicorn on the configured host and port."""

from __future__ import annotations

import sys

import uvicorn

from edge.app import create_app
from gateway_common.config import ConfigError, load_config
from gateway_common.logging import configure_logging
from gateway_common.tracing import configure_tracing


def main() -> None:
    """Load the config and serve until SIGTERM/SIGINT (uvicorn drains open connections)."""
    try:
        config = load_config()
    except ConfigError as exc:
        print(f"edge: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
    configure_logging("edge", config.log_level)
    configure_tracing("edge")
    uvicorn.run(
        create_app(config),
        host=config.edge.host,
        port=config.edge.port,
        log_config=None,
        access_log=False,
        timeout_graceful_shutdown=10,
        # What "auto" picks when both are installed, named so that a missing one fails loudly rather
        # than falling back to the pure-Python parser and loop (measured: granian cost no less CPU
        # per request, and more per streamed event, than uvicorn on these two).
        loop="uvloop",
        http="httptools",
        # uvicorn would otherwise believe X-Forwarded-For from 127.0.0.1 and rewrite the peer;
        # the edge decides which proxies to believe itself (edge.trusted_proxies, edge/client_ip.py).
        proxy_headers=False,
    )


if __name__ == "__main__":
    main()
