"""Cost of a request from its token counts and the deployment's price."""

from __future__ import annotations

import math

from services.router.planner import Candidate


def cost_micro_usd(candidate: Candidate, prompt_tokens: int, completion_tokens: int) -> int:
    """Cost in micro-USD, rounded up. A price in USD per million tokens is micro-USD per token."""
    exact = prompt_tokens * candidate.input_usd_per_million + completion_tokens * candidate.output_usd_per_million
    return math.ceil(exact - 1e-9) if exact > 0 else 0
