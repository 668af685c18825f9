"""JSON bytes for every body and frame the edge writes, with orjson.

orjson writes compact UTF-8 JSON, the same text as ``json.dumps(value, ensure_ascii=False,
separators=(",", ":")).encode()`` for everything the renderers produce (str keys, str, int, float,
bool, None, lists and dicts), at a fraction of the cost; floats take their shortest round-trip form
(``1e-5`` rather than ``1e-05``), which parses to the same number. It refuses what is not JSON
(NaN, non-str keys) instead of writing it.
"""

from __future__ import annotations

from typing import Any

import orjson


def dumps(value: Any) -> bytes:
    """``value`` as compact UTF-8 JSON."""
    return orjson.dumps(value)
