"""Secrets taken out of text before it is stored: API keys, bearer tokens, configured patterns.

Used on prompt logs by the router (before its spool file) and by metering (before the ledger), so a
secret a user pasted into a prompt is on no disk. A match becomes ``[REDACTED]``; nothing else changes.
:class:`RedactingLogFilter` applies the same patterns to log records, as a last line of defence for
services that handle upstream secrets (the auth service's credential store installs it).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable

REDACTED = "[REDACTED]"

BUILT_IN_PATTERNS = (
    # OpenAI-style keys (sk-..., sk-proj-...), Anthropic's (sk-ant-...) included.
    r"\bsk-[A-Za-z0-9_\-]{8,}",
    # A bearer credential as it appears in a pasted header or curl line.
    r"(?i)\bbearer\s+[A-Za-z0-9._~+/\-]+=*",
    # Google OAuth access tokens, Google refresh tokens and Google API keys.
    r"\bya29\.[A-Za-z0-9_\-]+",
    r"\b1//[A-Za-z0-9_\-]{20,}",
    r"\bAIza[0-9A-Za-z_\-]{35}",
    # A secret named as such in a pasted JSON document, form or query string.
    r"(?i)\b(?:api[_-]?key|access[_-]?token|refresh[_-]?token|id[_-]?token|client[_-]?secret)"
    r"[\"']?\s*[:=]\s*[\"']?[^\s\"',}&]{4,}",
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


class RedactingLogFilter(logging.Filter):
    """Rewrites a record's message (arguments merged in) with every secret replaced."""

    def __init__(self, redactor: Redactor | None = None) -> None:
        super().__init__()
        self._redact = redactor or Redactor()

    def filter(self, record: logging.LogRecord) -> bool:
        """Always keeps the record; only its text changes."""
        try:
            message = record.getMessage()
        except (TypeError, ValueError):
            # A record whose arguments do not fit its format: logging reports that itself.
            return True
        redacted = self._redact(message)
        if redacted != message:
            record.msg, record.args = redacted, None
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = self._redact(record.exc_text)
        return True


def install_log_redaction(logger: logging.Logger | None = None) -> None:
    """Add a :class:`RedactingLogFilter` to every handler of ``logger`` (the root logger), once.

    On handlers, not on the logger: a logger's own filters never see records its children propagate.
    """
    target = logging.getLogger() if logger is None else logger
    for handler in target.handlers:
        if not any(isinstance(f, RedactingLogFilter) for f in handler.filters):
            handler.addFilter(RedactingLogFilter())
