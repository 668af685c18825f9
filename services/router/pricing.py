"""Cost of a request from its token counts and the deployment's price."""

from __future__ import annotations

from services.router.planner import Candidate


def cost_micro_usd(candidate: Candidate, prompt_tokens: int, completion_tokens: int, cached_tokens: int = 0) -> int:
    """Cost in micro-USD, rounded up, at the candidate's price (config override, else the dataset).

    An unpriced candidate costs 0: callers that must not let that pass check ``candidate.price.priced``.
    """
    return candidate.price.cost_micro_usd(prompt_tokens, completion_tokens, cached_tokens)
