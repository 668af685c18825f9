"""What each deployment costs: the config's price when it sets one, else the `genai-prices` dataset.

The dataset ships inside the package (its bundled snapshot); the router never asks it to update
itself, so pricing needs no network. A deployment the dataset does not know and the config does not
price is *unpriced*: it costs $0 in the ledger and in budgets, which callers and tenants are told
(``Price.priced`` is False, ``/v1/models`` marks it, and a tenant may refuse it).
"""

from __future__ import annotations

import logging
import math
from collections import OrderedDict
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from functools import cached_property

from genai_prices import Usage
from genai_prices.data_snapshot import get_snapshot
from genai_prices.types import ModelPrice

from gateway_common.config import GatewayConfig, ProviderConfig, effective_providers

log = logging.getLogger(__name__)

_MILLION = Decimal(1_000_000)

# The dataset's provider ids for our provider types; openai_compatible is found by its base URL
# (the dataset knows Groq's, Together's…) or, failing that, by the model name alone.
DATASET_PROVIDER = {"openai": "openai", "azure": "azure", "anthropic": "anthropic", "gemini": "google"}


@dataclass(frozen=True, eq=False)
class Price:
    """The price of one deployment. ``priced`` is False when nothing knows what it costs."""

    priced: bool
    source: str
    """Where the price comes from: "config", "dataset", "free" (the mock) or "unpriced"."""
    input_usd_per_million: Decimal | None = None
    """The config's input price; None to take the dataset's."""
    output_usd_per_million: Decimal | None = None
    """The config's output price; None to take the dataset's."""
    dataset: ModelPrice | None = None
    """The dataset's price of the upstream model, when it knows it."""
    dataset_model: str = ""
    """The dataset's id of the upstream model (for logs and listings)."""

    def cost_usd(self, prompt_tokens: int, completion_tokens: int, cached_tokens: int = 0) -> Decimal:
        """The cost of a call in USD. ``cached_tokens`` (part of the prompt) are priced as cache
        reads where the dataset has such a price; the rest of the prompt as input."""
        if not self.priced:
            return Decimal(0)
        cached_tokens = min(cached_tokens, prompt_tokens)
        input_part = output_part = Decimal(0)
        if self.dataset is not None and (self.input_usd_per_million is None or self.output_usd_per_million is None):
            linear = self._linear
            if linear is not None and not cached_tokens:
                # The same arithmetic the dataset does for flat prices, without its ~0.1 ms per call
                # (a stream prices itself on every chunk).
                input_part = linear[0] * prompt_tokens / _MILLION
                output_part = linear[1] * completion_tokens / _MILLION
            else:
                usage = Usage(
                    input_tokens=prompt_tokens, output_tokens=completion_tokens, cache_read_tokens=cached_tokens
                )
                calculated = self.dataset.calc_price(usage)
                input_part, output_part = calculated["input_price"], calculated["output_price"]
        if self.input_usd_per_million is not None:
            input_part = self.input_usd_per_million * prompt_tokens / _MILLION
        if self.output_usd_per_million is not None:
            output_part = self.output_usd_per_million * completion_tokens / _MILLION
        return input_part + output_part

    @cached_property
    def _linear(self) -> tuple[Decimal, Decimal] | None:
        """The dataset's (input, output) per million when both are flat (no tiers), else None."""
        if self.dataset is None:
            return None
        input_price, output_price = self.dataset.input_mtok, self.dataset.output_mtok
        if isinstance(input_price, Decimal | None) and isinstance(output_price, Decimal | None):
            return input_price or Decimal(0), output_price or Decimal(0)
        return None

    def cost_micro_usd(self, prompt_tokens: int, completion_tokens: int, cached_tokens: int = 0) -> int:
        """The cost in micro-USD, rounded up (a ceiling, like every reservation)."""
        exact = self.cost_usd(prompt_tokens, completion_tokens, cached_tokens) * _MILLION
        return math.ceil(exact) if exact > 0 else 0

    def per_million(self) -> tuple[float, float] | None:
        """The (input, output) USD per million tokens at the base tier; None when unpriced."""
        if not self.priced:
            return None
        base_in, base_out = Decimal(0), Decimal(0)
        if self.dataset is not None:
            base_in, base_out = _base(self.dataset.input_mtok), _base(self.dataset.output_mtok)
        in_price = self.input_usd_per_million if self.input_usd_per_million is not None else base_in
        out_price = self.output_usd_per_million if self.output_usd_per_million is not None else base_out
        return float(in_price), float(out_price)


FREE = Price(priced=True, source="free")
UNPRICED = Price(priced=False, source="unpriced")


def _base(value: object) -> Decimal:
    if value is None:
        return Decimal(0)
    if isinstance(value, Decimal):
        return value
    base = getattr(value, "base", None)
    return base if isinstance(base, Decimal) else Decimal(0)


def dataset_price(provider: ProviderConfig, model: str, when: datetime | None = None) -> tuple[ModelPrice, str] | None:
    """The dataset's price of ``model`` served by ``provider`` (and its id there); None when unknown."""
    snapshot = get_snapshot()
    provider_id = DATASET_PROVIDER.get(provider.type)
    attempts: list[tuple[str | None, str | None]] = []
    if provider_id is not None:
        attempts.append((provider_id, None))
    elif provider.type == "openai_compatible":
        base_url = getattr(provider, "base_url", None)
        if base_url:
            attempts.append((None, base_url))
        attempts.append((None, None))
    for provider_ref, api_url in attempts:
        try:
            found_provider, info = snapshot.find_provider_model(model, None, provider_ref, api_url)
        except LookupError:
            continue
        del found_provider
        return info.get_prices(when or datetime.now(tz=UTC)), info.id
    return None


# Clients may name any provider:model; remembering every name would let them grow the table forever.
_CACHE_SIZE = 4096


class PriceTable:
    """Prices of deployments by (provider, upstream model), resolved once and remembered.

    The configured deployments are resolved at start, so a missing price is logged then, once;
    a name a client makes up is resolved on first use and kept in a bounded cache.
    """

    def __init__(self, config: GatewayConfig) -> None:
        self._providers = effective_providers(config)
        self._configured: dict[tuple[str, str], Price] = {}
        self._cache: OrderedDict[tuple[str, str], Price] = OrderedDict()
        # Worth a warning: a deployment the config names without a price, which the dataset lacks.
        unpriced_in_config: dict[tuple[str, str], bool] = {}
        for model in config.models.values():
            for d in model.deployments:
                key = (d.provider, d.model)
                bare = d.input_usd_per_million is None and d.output_usd_per_million is None
                unpriced_in_config[key] = unpriced_in_config.get(key, False) or bare
        for (provider, name), warn in unpriced_in_config.items():
            self._configured[(provider, name)] = self._resolve(provider, name, configured=warn)

    def price(
        self, provider: str, model: str, input_override: float | None = None, output_override: float | None = None
    ) -> Price:
        """The price of ``provider:model``; the overrides (the config's, per million tokens) win."""
        key = (provider, model)
        resolved = self._configured.get(key) or self._cache.get(key)
        if resolved is None:
            resolved = self._resolve(provider, model, configured=False)
            self._cache[key] = resolved
            if len(self._cache) > _CACHE_SIZE:
                self._cache.popitem(last=False)
        elif key in self._cache:
            self._cache.move_to_end(key)
        if input_override is None and output_override is None:
            return resolved
        return Price(
            priced=True,
            source="config",
            input_usd_per_million=Decimal(str(input_override)) if input_override is not None else None,
            # One side set in config: the other side from the dataset, else free.
            output_usd_per_million=Decimal(str(output_override)) if output_override is not None else None,
            dataset=resolved.dataset,
            dataset_model=resolved.dataset_model,
        )

    def _resolve(self, provider: str, model: str, *, configured: bool) -> Price:
        config = self._providers.get(provider)
        if config is None:
            return UNPRICED
        if config.type == "mock" or getattr(config, "stub", False):
            return FREE
        found = dataset_price(config, model)
        if found is None:
            # Each request's log line says priced=false too; a made-up name is not worth a warning.
            log.log(
                logging.WARNING if configured else logging.DEBUG,
                "no price known for %s:%s: its usage is recorded at $0 and budgets cannot count it",
                provider,
                model,
                extra={"provider": provider, "model": model, "priced": False},
            )
            return UNPRICED
        return Price(priced=True, source="dataset", dataset=found[0], dataset_model=found[1])
