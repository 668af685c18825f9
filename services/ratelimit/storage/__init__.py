"""Counter backends behind one protocol: in-process memory (one replica) and Redis (any number)."""

from services.ratelimit.storage.base import BackendUnavailable, LimitStore

__all__ = ["BackendUnavailable", "LimitStore"]
