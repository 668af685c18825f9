"""``python -m tests.e2e.fork_probe``: a process for the fork server's tests. It writes one line to
stdout and one to stderr, then exits with ``PROBE_EXIT`` or, with ``PROBE_SLEEP``, waits to be killed."""

from __future__ import annotations

import os
import sys
import time

print(f"probe stdout {os.environ.get('PROBE_TOKEN', '')}", flush=True)
print(f"probe stderr {os.getpid()}", file=sys.stderr, flush=True)
if os.environ.get("PROBE_SLEEP"):
    time.sleep(60)
sys.exit(int(os.environ.get("PROBE_EXIT", "0")))
