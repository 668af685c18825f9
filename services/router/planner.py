"""Turns the model a client names into the ordered deployments to try.

A name resolves, first match wins:

1. a **route override** stored by an admin (``gateway routes set gpt-4o openai-eu``), for bare ids:
   the operator's run-time decision is the newest one, so it beats the file;
2. an **alias** from the config (its deployments, in order of preference), or a shorthand alias
   (``aliases: {name: "provider:model"}``); ``default-chat`` names the default model unless the
   config defines it (Governed LLM Gateway's clients send it out of the box);
3. ``provider:model`` for any model of a known provider;
4. a bare id whose **prefix** is in ``routing.prefixes`` (``gpt-`` -> openai, ``claude-`` ->
   anthropic, ``gemini-`` -> gemini…; the longest prefix wins);
5. empty: the configured default, resolved the same way.

With ``routing.mock_mode`` every name, known or not, is then served by the mock provider.
"""

from __future__ import annotations

import fnmatch
import random
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace

import grpc

from gateway_common.config import DEFAULT_CHAT_ALIAS, GatewayConfig, effective_providers
from gateway_common.errors import GatewayError, Reason
from services.router.price_table import UNPRICED, Price, PriceTable


@dataclass(frozen=True)
class Candidate:
    """One deployment an attempt can go to, with its price."""

    provider: str
    model: str
    # Not part of the identity: the same deployment is the same route whatever alias priced it.
    price: Price = field(default=UNPRICED, compare=False)
    stands_in_for: str = field(default="", compare=False)
    """In mock mode, the provider the mock answers for: routing constraints and policies name it."""

    @property
    def routed_provider(self) -> str:
        """The provider allowlists, denylists and ``allow_providers`` judge this deployment by."""
        return self.stands_in_for or self.provider

    @property
    def id(self) -> str:
        """The deployment as ``provider:model``."""
        return f"{self.provider}:{self.model}"


@dataclass(frozen=True)
class RouteOverride:
    """A stored override: the provider that serves a bare model id, and the name sent upstream."""

    provider: str
    upstream_model: str = ""
    """Empty: the model id itself."""


def _no_overrides() -> Mapping[str, RouteOverride]:
    return {}


@dataclass(frozen=True)
class Plan:
    """The requested model (resolved from the default when empty), its candidates in order, and the
    strategy that orders them (``ordered`` and ``weighted`` are applied here; the others rank the
    candidates later, from the router's observations)."""

    model: str
    candidates: tuple[Candidate, ...]
    strategy: str = "ordered"


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

    def __init__(
        self,
        config: GatewayConfig,
        rng: Callable[[], float] = random.random,
        overrides: Callable[[], Mapping[str, RouteOverride]] = _no_overrides,
    ) -> None:
        """``overrides`` returns the current route-override table (a router's cache of auth's; the
        planner only reads it, so a refresh swaps the whole table at once)."""
        self._config = config
        self._random = rng
        self._overrides = overrides
        self._mock_mode = config.routing.mock_mode
        self._providers = set(effective_providers(config))
        # Longest first, so "gpt-4o-eu" can be routed apart from "gpt-".
        self._prefixes = sorted(config.routing.prefixes.items(), key=lambda item: len(item[0]), reverse=True)
        self.prices = PriceTable(config)
        # A provider:model named directly takes the price the config gives that deployment first.
        self._price_overrides: dict[tuple[str, str], tuple[float | None, float | None]] = {}
        self._aliases = dict(config.aliases)
        if DEFAULT_ALIAS not in config.models:
            self._aliases.setdefault(DEFAULT_ALIAS, config.default_model)
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

    def plan(self, requested: str, strategy: str | None = None) -> Plan:
        """The candidates for ``requested``, ordered by ``strategy`` (the alias's own when None);
        NOT_FOUND when nothing can serve it (never in mock mode)."""
        name = requested or self._config.default_model
        if not self._mock_mode:
            return self._resolve(name, strategy)
        try:
            resolved = self._resolve(name, strategy)
        except GatewayError:
            resolved = Plan(name, (), strategy or "ordered")
        upstreams = [(c.provider, c.model) for c in resolved.candidates] or [("", name)]
        # Mock mode stands in for every upstream: the same model names, answered by the mock, for
        # free, each still the provider it stands in for, so constraints and policies read the same.
        mocks = tuple(
            replace(self._candidate("mock", model), stands_in_for=provider)
            for provider, model in dict.fromkeys(upstreams)
        )
        return Plan(name, mocks, resolved.strategy)

    def _candidate(self, provider: str, model: str) -> Candidate:
        price_in, price_out = self._price_overrides.get((provider, model), (None, None))
        return Candidate(provider, model, self.prices.price(provider, model, price_in, price_out))

    def _resolve(self, name: str, strategy: str | None, hops: int = 0) -> Plan:
        single = strategy or "ordered"
        override = self._overrides().get(name)
        # An override naming a provider the config no longer has is skipped, not a dead end.
        if override is not None and override.provider in self._providers:
            return Plan(name, (self._candidate(override.provider, override.upstream_model or name),), single)
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
                    Candidate(
                        d.provider,
                        d.model,
                        self.prices.price(d.provider, d.model, d.input_usd_per_million, d.output_usd_per_million),
                    )
                    for d in deployments
                ),
                strategy,
            )
        target = self._aliases.get(name)
        if target is not None:
            if hops >= _MAX_ALIAS_HOPS:
                raise model_not_found(name)  # a loop of shorthand aliases
            resolved = self._resolve(target, strategy, hops + 1)
            return Plan(name, resolved.candidates, resolved.strategy)
        provider, sep, upstream = name.partition(":")
        if sep:
            if not upstream or provider not in self._providers:
                raise model_not_found(name)
            return Plan(name, (self._candidate(provider, upstream),), single)
        for prefix, prefixed in self._prefixes:
            if name.startswith(prefix):
                return Plan(name, (self._candidate(prefixed, name),), single)
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
        for routed, override in sorted(self._overrides().items()):
            seen.setdefault(routed, (routed, override.provider, override.provider))
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
