"""Turns the model a client names into the ordered deployments to try.

A name is an alias from the config (its deployments, in order of preference), or
``provider:model`` for any model of a known provider, or empty for the configured default.
"""

from __future__ import annotations

import fnmatch
import random
from collections.abc import Callable
from dataclasses import dataclass, field

import grpc

from gateway_common.config import GatewayConfig, effective_providers
from gateway_common.errors import GatewayError, Reason
from services.router.price_table import UNPRICED, Price, PriceTable


@dataclass(frozen=True)
class Candidate:
    """One deployment an attempt can go to, with its price."""

    provider: str
    model: str
    # Not part of the identity: the same deployment is the same route whatever alias priced it.
    price: Price = field(default=UNPRICED, compare=False)

    @property
    def id(self) -> str:
        """The deployment as ``provider:model``."""
        return f"{self.provider}:{self.model}"


@dataclass(frozen=True)
class Plan:
    """The requested model (resolved from the default when empty) and its candidates in order."""

    model: str
    candidates: tuple[Candidate, ...]


def model_not_found(model: str) -> GatewayError:
    """The error for a model the gateway cannot route, worded as OpenAI words it."""
    return GatewayError(
        grpc.StatusCode.NOT_FOUND,
        Reason.MODEL_NOT_FOUND,
        f"The model `{model}` does not exist or you do not have access to it.",
        {"param": "model"},
    )


class Planner:
    """Resolves model names against the configuration."""

    def __init__(self, config: GatewayConfig, rng: Callable[[], float] = random.random) -> None:
        self._config = config
        self._random = rng
        self._providers = set(effective_providers(config))
        self.prices = PriceTable(config)
        # A provider:model named directly takes the price the config gives that deployment first.
        self._price_overrides: dict[tuple[str, str], tuple[float | None, float | None]] = {}
        for model in config.models.values():
            for d in model.deployments:
                if d.input_usd_per_million is not None or d.output_usd_per_million is not None:
                    self._price_overrides.setdefault(
                        (d.provider, d.model), (d.input_usd_per_million, d.output_usd_per_million)
                    )

    @property
    def config(self) -> GatewayConfig:
        """The configuration plans are made from."""
        return self._config

    @property
    def default_model(self) -> str:
        """The model used when a request names none."""
        return self._config.default_model

    def plan(self, requested: str) -> Plan:
        """The candidates for ``requested``; NOT_FOUND when nothing can serve it."""
        name = requested or self._config.default_model
        alias = self._config.models.get(name)
        if alias is not None:
            deployments = list(alias.deployments)
            if alias.strategy == "weighted":
                # Weighted sampling without replacement (Efraimidis–Spirakis): the first candidate
                # is drawn by weight, and so is each fallback among those left.
                deployments.sort(key=lambda d: self._random() ** (1.0 / d.weight), reverse=True)
            return Plan(
                name,
                tuple(
                    Candidate(
                        d.provider,
                        d.model,
                        self.prices.price(d.provider, d.model, d.input_usd_per_million, d.output_usd_per_million),
                    )
                    for d in deployments
                ),
            )
        provider, sep, upstream = name.partition(":")
        if not sep or not upstream or provider not in self._providers:
            raise model_not_found(name)
        price_in, price_out = self._price_overrides.get((provider, upstream), (None, None))
        return Plan(name, (Candidate(provider, upstream, self.prices.price(provider, upstream, price_in, price_out)),))

    def catalog(self) -> list[tuple[str, str, str]]:
        """Models to list: (id, provider, owned_by) for the default, every alias and every deployment."""
        seen: dict[str, tuple[str, str, str]] = {}
        default_provider = self._config.default_model.partition(":")[0]
        for alias, model in self._config.models.items():
            seen.setdefault(alias, (alias, model.deployments[0].provider, model.owned_by))
            for d in model.deployments:
                ident = f"{d.provider}:{d.model}"
                seen.setdefault(ident, (ident, d.provider, d.provider))
        default = self._config.default_model
        seen.setdefault(default, (default, default_provider, default_provider or "llm-gateway"))
        return list(seen.values())


def matches_any(patterns: list[str] | tuple[str, ...], *names: str) -> bool:
    """Whether any of ``names`` matches any fnmatch pattern (case-sensitive)."""
    return any(fnmatch.fnmatchcase(name, pattern) for pattern in patterns for name in names)
