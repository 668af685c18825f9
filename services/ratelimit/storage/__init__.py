"""Counter backends behind one protocol: in-process memory (one replica) and Redis (any number)."""

from services.ratelimit.storage.base import BackendUnavailable, CountersLost, LimitStore, RestoredCounter

__all__ = ["BackendUnavailable", "CountersLost", "LimitStore", "RestoredCounter"]
