"""The models ``ListModels`` offers: the configuration's, and what each configured provider serves.

Listing is only a candidate set: every entry is kept only if the planner and the caller's policy
admit it (``Orchestrator.may_use``), so discovery cannot disagree with admission. A provider's
known models come from the built-in price table (genai-prices), the one maintained list we ship.
"""

from __future__ import annotations

from genai_prices.data_snapshot import get_snapshot

from gateway.chat.v1 import chat_pb2
from gateway_common.config import GatewayConfig, HttpProviderConfig
from services.router.planner import Candidate, Planner
from services.router.price_table import DATASET_PROVIDER

Entry = tuple[str, str, str]
"""(id, provider, owned_by)."""


def provider_models(config: GatewayConfig) -> list[Entry]:
    """``provider:model`` for every current model the dataset knows of each provider the file configures.

    Azure is left out (its deployments have names their owner chose). Built-in providers the file
    does not name (openai, anthropic… with only a key) are not enumerated, since nothing says they
    are set up; their models still resolve when named.
    """
    snapshot = get_snapshot()
    result: list[Entry] = []
    for name, provider in config.providers.items():
        # Azure serves deployments its owner names, not the catalogue's ids: nothing to enumerate.
        if not isinstance(provider, HttpProviderConfig) or provider.type == "azure":
            continue
        dataset_id = DATASET_PROVIDER.get(provider.type)
        try:
            if dataset_id is not None:
                known = snapshot.find_provider(None, dataset_id, None)
            elif provider.base_url:
                known = snapshot.find_provider(None, None, provider.base_url)
            else:
                continue
        except LookupError:
            continue
        for model in known.models:
            # Ids with a ':' are prefixes (fine-tune families), not names an upstream accepts.
            if model.deprecated or ":" in model.id or model.id.endswith("-"):
                continue
            result.append((f"{name}:{model.id}", name, known.id))
    return result


def entries(config: GatewayConfig, planner: Planner) -> list[Entry]:
    """The configuration's models (default, aliases, deployments, route overrides), then the
    providers' known models."""
    return merge(planner.catalog(), provider_models(config))


def merge(*groups: list[Entry]) -> list[Entry]:
    """The entries of ``groups`` in order, each id once (the first wins)."""
    seen: dict[str, Entry] = {}
    for group in groups:
        for entry in group:
            seen.setdefault(entry[0], entry)
    return list(seen.values())


def describe(model: chat_pb2.Model, candidates: tuple[Candidate, ...]) -> chat_pb2.Model:
    """``model`` with its price: the dearest candidate's, or marked unpriced when one has none."""
    prices = [c.price.per_million() for c in candidates]
    known = [p for p in prices if p is not None]
    if len(known) < len(prices) or not known:
        model.unpriced = True
        return model
    model.input_usd_per_million = max(p[0] for p in known)
    model.output_usd_per_million = max(p[1] for p in known)
    return model
