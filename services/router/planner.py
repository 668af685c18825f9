"""Turns the model a client names into the ordered deployments to try.

A name is an alias from the config (its deployments, in order of preference), or
``provider:model`` for any model of a known provider, or empty for the configured default.
"""

from __future__ import annotations

import fnmatch
import random
from collections.abc import Callable
from dataclasses import dataclass

import grpc

from gateway_common.config import GatewayConfig, effective_providers
from gateway_common.errors import GatewayError, Reason


@dataclass(frozen=True)
class Candidate:
    """One deployment an attempt can go to, with its price."""

    provider: str
    model: str
    input_usd_per_million: float = 0.0
    output_usd_per_million: float = 0.0

    @property
    def id(self) -> str:
        """The deployment as ``provider:model``."""
        return f"{self.provider}:{self.model}"


@dataclass(frozen=True)
class Plan:
    """The requested model (resolved from the default when empty), its candidates in order, and the
    strategy that orders them (``ordered`` and ``weighted`` are applied here; the others rank the
    candidates later, from the router's observations)."""

    model: str
    candidates: tuple[Candidate, ...]
    strategy: str = "ordered"


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
        self._prices: dict[tuple[str, str], tuple[float, float]] = {}
        for model in config.models.values():
            for d in model.deployments:
                self._prices.setdefault((d.provider, d.model), (d.input_usd_per_million, d.output_usd_per_million))

    @property
    def default_model(self) -> str:
        """The model used when a request names none."""
        return self._config.default_model

    def plan(self, requested: str, strategy: str | None = None) -> Plan:
        """The candidates for ``requested``, ordered by ``strategy`` (the alias's own when None);
        NOT_FOUND when nothing can serve it."""
        name = requested or self._config.default_model
        alias = self._config.models.get(name)
        if alias is not None:
            deployments = list(alias.deployments)
            strategy = strategy or alias.strategy
            if strategy == "weighted":
                # Weighted sampling without replacement (Efraimidis–Spirakis): the first candidate
                # is drawn by weight, and so is each fallback among those left.
                deployments.sort(key=lambda d: self._random() ** (1.0 / d.weight), reverse=True)
            return Plan(
                name,
                tuple(
                    Candidate(d.provider, d.model, d.input_usd_per_million, d.output_usd_per_million)
                    for d in deployments
                ),
                strategy,
            )
        provider, sep, upstream = name.partition(":")
        if not sep or not upstream or provider not in self._providers:
            raise model_not_found(name)
        price_in, price_out = self._prices.get((provider, upstream), (0.0, 0.0))
        return Plan(name, (Candidate(provider, upstream, price_in, price_out),), strategy or "ordered")

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
