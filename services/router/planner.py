"""Turns the model a client names into the ordered deployments to try.

A name is an alias from the config (its deployments, in order of preference), or a shorthand
alias (``aliases: {name: "provider:model"}``), or ``provider:model`` for any model of a known
provider, or empty for the configured default. ``default-chat`` names the default model unless the
config defines it (Governed LLM Gateway's clients send it out of the box).
"""

from __future__ import annotations

import fnmatch
import random
from collections.abc import Callable
from dataclasses import dataclass

import grpc

from gateway_common.config import DEFAULT_CHAT_ALIAS, GatewayConfig, effective_providers
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
    """The requested model (resolved from the default when empty) and its candidates in order."""

    model: str
    candidates: tuple[Candidate, ...]


DEFAULT_ALIAS = DEFAULT_CHAT_ALIAS
"""The alias that exists out of the box, pointing at ``default_model``."""

# Aliases may name aliases; a chain longer than this is a loop.
_MAX_ALIAS_HOPS = 8


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
        self._aliases = dict(config.aliases)
        if DEFAULT_ALIAS not in config.models:
            self._aliases.setdefault(DEFAULT_ALIAS, config.default_model)
        self._prices: dict[tuple[str, str], tuple[float, float]] = {}
        for model in config.models.values():
            for d in model.deployments:
                self._prices.setdefault((d.provider, d.model), (d.input_usd_per_million, d.output_usd_per_million))

    @property
    def default_model(self) -> str:
        """The model used when a request names none."""
        return self._config.default_model

    def plan(self, requested: str) -> Plan:
        """The candidates for ``requested``; NOT_FOUND when nothing can serve it."""
        name = requested or self._config.default_model
        target = self._resolve(name)
        alias = self._config.models.get(target)
        if alias is not None:
            deployments = list(alias.deployments)
            if alias.strategy == "weighted":
                # Weighted sampling without replacement (Efraimidis–Spirakis): the first candidate
                # is drawn by weight, and so is each fallback among those left.
                deployments.sort(key=lambda d: self._random() ** (1.0 / d.weight), reverse=True)
            return Plan(
                name,
                tuple(
                    Candidate(d.provider, d.model, d.input_usd_per_million, d.output_usd_per_million)
                    for d in deployments
                ),
            )
        provider, sep, upstream = target.partition(":")
        if not sep or not upstream or provider not in self._providers:
            raise model_not_found(name)
        price_in, price_out = self._prices.get((provider, upstream), (0.0, 0.0))
        return Plan(name, (Candidate(provider, upstream, price_in, price_out),))

    def _resolve(self, name: str) -> str:
        """``name`` with shorthand aliases followed (models entries win over shorthands)."""
        for _ in range(_MAX_ALIAS_HOPS):
            if name in self._config.models or name not in self._aliases:
                return name
            name = self._aliases[name]
        raise model_not_found(name)

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
        for alias in self._aliases:
            try:
                candidates = self.plan(alias).candidates
            except GatewayError:
                continue
            seen.setdefault(alias, (alias, candidates[0].provider, "llm-gateway"))
        return list(seen.values())


def matches_any(patterns: list[str] | tuple[str, ...], *names: str) -> bool:
    """Whether any of ``names`` matches any fnmatch pattern (case-sensitive)."""
    return any(fnmatch.fnmatchcase(name, pattern) for pattern in patterns for name in names)
