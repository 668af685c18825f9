"""Secrets taken out of text before it is stored: API keys, bearer tokens, configured patterns.

Used on prompt logs by the router (before its spool file) and by metering (before the ledger), so a
secret a user pasted into a prompt is on no disk. A match becomes ``[REDACTED]``; nothing else changes.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

REDACTED = "[REDACTED]"

BUILT_IN_PATTERNS = (
    # OpenAI-style keys (sk-..., sk-proj-...), Anthropic's (sk-ant-...) included.
    r"\bsk-[A-Za-z0-9_\-]{8,}",
    # A bearer credential as it appears in a pasted header or curl line.
    r"(?i)\bbearer\s+[A-Za-z0-9._~+/\-]+=*",
)


class Redactor:
    """Replaces every match of the built-in and the given patterns with ``[REDACTED]``."""

    def __init__(self, patterns: Iterable[str] = ()) -> None:
        self._patterns = [re.compile(p) for p in (*BUILT_IN_PATTERNS, *patterns)]

    def __call__(self, text: str) -> str:
        """``text`` with every secret replaced."""
        for pattern in self._patterns:
            text = pattern.sub(REDACTED, text)
        return text
