"""``gateway``: administer tenants, API keys and route overrides through the auth service, and check a config file.

    gateway keys create --tenant acme --rpm 60 --tpm 100000 --budget-usd 50/month
    gateway keys list [--tenant acme] [--all]
    gateway keys update KEY_ID --rpm 120
    gateway keys revoke KEY_ID
    gateway tenants create acme --name "Acme" --rpm 600 --key-rpm 60 --deny-models 'openai:gpt-4*'
    gateway tenants list
    gateway tenants update acme --budget-usd 500/month
    gateway routes set gpt-4o openai-eu [--upstream-model gpt-4o-2024-08-06]
    gateway routes list
    gateway routes delete gpt-4o
    gateway credentials add --tenant acme --provider openai --rpm 500 < key.txt   (see credentials.py)
    gateway credentials list|disable|enable|rotate|delete|set-limits|rewrap
    gateway check-config gateway.yaml

Admin calls need a key with the ``admin`` scope: ``--admin-key`` or ``GATEWAY_ADMIN_KEY``. The
service is reached at ``services.auth.address`` of the configuration (``--address`` overrides),
over mutual TLS with the CLI's own certificate (identity ``cli``): ``--tls-ca/--tls-cert/--tls-key``,
else ``GATEWAY_TLS_*``, else the folder ``make up`` mints (``.gateway/tls``); see ``identity.py``.
Exit status: 0 on success, 1 when the service refused or could not be reached, 2 on bad usage or
a bad configuration.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime
from typing import Any

import grpc
from google.protobuf import json_format, timestamp_pb2

from gateway.auth.v1 import auth_pb2, auth_pb2_grpc, credentials_pb2_grpc
from gateway_common.config import ConfigError, effective_providers, load_config
from gateway_common.errors import GatewayError
from gateway_common.grpc_client import open_channel

from . import credentials as credential_commands
from .credentials import UsageError
from .identity import channel_credentials, tls_settings
from .limits import (
    describe_limits,
    merge_limits,
    non_negative_int,
    parse_budget,
    parse_duration,
    parse_list,
    positive_int,
    quotas_from_flags,
)

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2
ADMIN_KEY_ENV = "GATEWAY_ADMIN_KEY"


class Admin:
    """The auth service's stubs and what every admin call sends: the admin key and a deadline."""

    def __init__(
        self,
        stub: auth_pb2_grpc.AuthServiceAsyncStub,
        admin_key: str,
        deadline_s: float,
        credentials: credentials_pb2_grpc.CredentialServiceAsyncStub | None = None,
    ) -> None:
        self.stub = stub
        if credentials is not None:
            self.credentials = credentials
        self.options: dict[str, Any] = {
            "metadata": (("authorization", f"Bearer {admin_key}"),),
            "timeout": deadline_s,
        }


# ---------------------------------------------------------------------------------------------
# Arguments


def _common_options() -> argparse.ArgumentParser:
    # SUPPRESS keeps a subcommand's unset option from hiding the same option given before it,
    # so `gateway --admin-key K keys list` and `gateway keys list --admin-key K` both work.
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--address",
        default=argparse.SUPPRESS,
        help="host:port of the auth service (default: services.auth.address of the config)",
    )
    common.add_argument(
        "--admin-key", default=argparse.SUPPRESS, help=f"a key with the admin scope (default: ${ADMIN_KEY_ENV})"
    )
    common.add_argument(
        "--config",
        default=argparse.SUPPRESS,
        help="configuration file (default: $GATEWAY_CONFIG, else built-in defaults)",
    )
    common.add_argument(
        "--tls-ca", default=argparse.SUPPRESS, help="CA certificate (default: $GATEWAY_TLS_CA, else .gateway/tls)"
    )
    common.add_argument(
        "--tls-cert",
        default=argparse.SUPPRESS,
        help="the CLI's client certificate, identity cli (default: $GATEWAY_TLS_CERT, else .gateway/tls/cli.crt)",
    )
    common.add_argument(
        "--tls-key", default=argparse.SUPPRESS, help="the client certificate's key (default: $GATEWAY_TLS_KEY)"
    )
    common.add_argument(
        "--timeout", type=float, default=argparse.SUPPRESS, help="seconds to wait for the service (default: 10)"
    )
    common.add_argument(
        "--json", action="store_true", default=argparse.SUPPRESS, help="print the service's answer as JSON"
    )
    return common


def _limit_options(parser: argparse.ArgumentParser, prefix: str = "", what: str = "") -> None:
    flag = f"--{prefix}"
    dest = prefix.replace("-", "_")
    parser.add_argument(
        f"{flag}rpm", dest=f"{dest}rpm", type=non_negative_int, metavar="N", help=f"{what}requests per minute"
    )
    parser.add_argument(
        f"{flag}rpd", dest=f"{dest}rpd", type=non_negative_int, metavar="N", help=f"{what}requests per day"
    )
    parser.add_argument(
        f"{flag}tpm", dest=f"{dest}tpm", type=non_negative_int, metavar="N", help=f"{what}tokens per minute"
    )
    parser.add_argument(
        f"{flag}tpd", dest=f"{dest}tpd", type=non_negative_int, metavar="N", help=f"{what}tokens per day"
    )
    parser.add_argument(
        f"{flag}budget-usd",
        dest=f"{dest}budget_usd",
        type=parse_budget,
        action="append",
        default=[],
        metavar="USD/WINDOW",
        help=f"{what}spend budget such as 50/month or 5/day (repeatable)",
    )
    parser.add_argument(
        f"{flag}concurrency",
        dest=f"{dest}concurrency",
        type=non_negative_int,
        metavar="N",
        help=f"{what}requests in flight at once",
    )


def _policy_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--deny-models",
        type=parse_list,
        metavar="PATTERNS",
        help="model patterns the tenant may not use, comma-separated ('openai:gpt-4*')",
    )
    parser.add_argument(
        "--deny-providers", type=parse_list, metavar="NAMES", help="providers the tenant may not use, comma-separated"
    )
    parser.add_argument(
        "--max-prompt-tokens", type=positive_int, metavar="N", help="the most prompt tokens one request may carry"
    )
    parser.add_argument(
        "--log-prompts",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="whether metering logs the tenant's prompts and completions",
    )
    parser.add_argument(
        "--continue-streams",
        dest="continue_streams",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="whether a stream broken mid-answer is continued by another attempt (default: the router's setting)",
    )


def build_parser() -> argparse.ArgumentParser:
    """The whole command line."""
    common = _common_options()
    parser = argparse.ArgumentParser(prog="gateway", description="Administer LLM Gateway.", parents=[common])
    groups = parser.add_subparsers(
        dest="group", required=True, metavar="{keys,tenants,routes,credentials,check-config}"
    )

    keys = groups.add_parser("keys", help="create, list, update and revoke API keys")
    key_commands = keys.add_subparsers(dest="command", required=True)
    create = key_commands.add_parser("create", parents=[common], help="create a key (its secret is shown once)")
    create.add_argument("--tenant", required=True, help="the tenant that owns the key (it must exist)")
    create.add_argument("--name", default="", help="a name to recognise the key by")
    create.add_argument(
        "--scopes",
        type=parse_list,
        default=[],
        help="comma-separated: chat, embeddings, usage:read, admin (default: chat,embeddings)",
    )
    create.add_argument(
        "--models",
        type=parse_list,
        default=[],
        metavar="PATTERNS",
        help="model patterns the key may use, comma-separated (default: all)",
    )
    create.add_argument(
        "--expires-in",
        type=parse_duration,
        metavar="DURATION",
        help="the key stops working after this long: 30d, 12h, 90m, 2w",
    )
    _limit_options(create, what="the key's own ")
    create.set_defaults(handler=_keys_create)

    listing = key_commands.add_parser("list", parents=[common], help="list keys (never their secrets)")
    listing.add_argument("--tenant", default="", help="only this tenant's keys")
    listing.add_argument("--all", action="store_true", help="include revoked keys")
    listing.set_defaults(handler=_keys_list)

    update = key_commands.add_parser(
        "update",
        parents=[common],
        help="change a key's limits, scopes or models; limit flags merge into the key's own limits",
    )
    update.add_argument("key_id")
    update.add_argument("--scopes", type=parse_list, help="replace the scopes, comma-separated")
    update.add_argument(
        "--models", type=parse_list, metavar="PATTERNS", help="replace the allowed model patterns ('*' for all)"
    )
    update.add_argument(
        "--inherit-limits",
        action="store_true",
        help="drop the key's own limits first (alone: it inherits its tenant's key defaults)",
    )
    _limit_options(update, what="the key's own ")
    update.set_defaults(handler=_keys_update)

    revoke = key_commands.add_parser("revoke", parents=[common], help="revoke a key for good")
    revoke.add_argument("key_id")
    revoke.set_defaults(handler=_keys_revoke)

    tenants = groups.add_parser("tenants", help="create, list and update tenants")
    tenant_commands = tenants.add_subparsers(dest="command", required=True)
    for name, handler, text in (
        ("create", _tenants_create, "create a tenant"),
        ("update", _tenants_update, "change a tenant's limits, key defaults or policy (flags merge in)"),
    ):
        command = tenant_commands.add_parser(name, parents=[common], help=text)
        command.add_argument("tenant_id")
        if name == "create":
            command.add_argument("--name", default="", help="a human name")
        else:
            command.add_argument(
                "--replace",
                action="store_true",
                help="replace each group of limits the flags touch instead of merging into it",
            )
        _limit_options(command, what="the tenant's (shared by its keys) ")
        _limit_options(command, prefix="key-", what="default per key: ")
        _policy_options(command)
        command.set_defaults(handler=handler)
    tenant_list = tenant_commands.add_parser("list", parents=[common], help="list tenants")
    tenant_list.set_defaults(handler=_tenants_list)

    routes = groups.add_parser("routes", help="set, list and delete route overrides (model id -> provider)")
    route_commands = routes.add_subparsers(dest="command", required=True)
    route_set = route_commands.add_parser(
        "set", parents=[common], help="route a model id to a provider (every router follows within seconds)"
    )
    route_set.add_argument("model", help="the model id clients send, e.g. gpt-4o")
    route_set.add_argument("provider", help="a provider of the configuration, e.g. openai-eu")
    route_set.add_argument("--upstream-model", default="", help="the name sent upstream (default: the model id)")
    route_set.set_defaults(handler=_routes_set)
    route_list = route_commands.add_parser("list", parents=[common], help="list route overrides")
    route_list.set_defaults(handler=_routes_list)
    route_delete = route_commands.add_parser("delete", parents=[common], help="remove a route override")
    route_delete.add_argument("model")
    route_delete.set_defaults(handler=_routes_delete)

    credential_commands.add_parser(groups, common)

    check = groups.add_parser("check-config", parents=[common], help="check a configuration file offline")
    check.add_argument("file", nargs="?", help="the file (default: $GATEWAY_CONFIG, else built-in defaults)")
    check.set_defaults(handler=None)
    return parser


# ---------------------------------------------------------------------------------------------
# Output


def _time(value: timestamp_pb2.Timestamp) -> str:
    return value.ToDatetime(tzinfo=UTC).strftime("%Y-%m-%d %H:%M:%SZ")


def _table(rows: Sequence[Sequence[str]]) -> str:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip() for row in rows)


def _key_status(key: auth_pb2.ApiKey, now: datetime) -> str:
    if key.HasField("revoke_time"):
        return f"revoked {_time(key.revoke_time)}"
    if key.HasField("expire_time"):
        expired = key.expire_time.ToDatetime(tzinfo=UTC) <= now
        return f"{'expired' if expired else 'expires'} {_time(key.expire_time)}"
    return "active"


def format_keys(keys: Sequence[auth_pb2.ApiKey], now: datetime) -> str:
    """Keys as a table."""
    rows = [["KEY_ID", "TENANT", "NAME", "PREFIX", "SCOPES", "MODELS", "LIMITS", "STATUS"]]
    for key in keys:
        rows.append(
            [
                key.key_id,
                key.tenant_id,
                key.name or "-",
                key.prefix + "…",
                ",".join(key.scopes),
                ",".join(key.allowed_models) or "*",
                describe_limits(key.limits, "(tenant defaults)"),
                _key_status(key, now),
            ]
        )
    return _table(rows)


def _policy_text(policy: auth_pb2.Policy) -> str:
    parts = []
    if policy.deny_models:
        parts.append("deny models " + ",".join(policy.deny_models))
    if policy.deny_providers:
        parts.append("deny providers " + ",".join(policy.deny_providers))
    if policy.HasField("max_prompt_tokens"):
        parts.append(f"max {policy.max_prompt_tokens} prompt tokens")
    if policy.log_prompts:
        parts.append("logs prompts")
    if policy.HasField("continue_broken_streams") and not policy.continue_broken_streams:
        parts.append("broken streams not continued")
    return "; ".join(parts) or "-"


def format_tenants(tenants: Sequence[auth_pb2.Tenant]) -> str:
    """Tenants as a table."""
    rows = [["TENANT", "NAME", "LIMITS", "KEY_DEFAULTS", "POLICY", "CREATED"]]
    for tenant in tenants:
        rows.append(
            [
                tenant.tenant_id,
                tenant.display_name or "-",
                describe_limits(tenant.limits),
                describe_limits(tenant.key_defaults),
                _policy_text(tenant.policy),
                _time(tenant.create_time),
            ]
        )
    return _table(rows)


def _print_json(message: Any) -> None:
    print(json_format.MessageToJson(message, preserving_proto_field_name=True, indent=2))


def describe_error(error: GatewayError, address: str, certificate: str | None = None) -> str:
    """One line for a failed call: code, message, and the field at fault when there is one.

    ``certificate`` says what the call showed in the TLS handshake: a refused handshake looks like
    an unreachable service from this side.
    """
    if error.code in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED):
        line = f"error: cannot reach the auth service at {address} ({error.code.name}: {error.message})"
        if certificate is not None:
            line += (
                f"; it accepts only a client certificate of the gateway's CA naming identity cli, and this call "
                f"showed {certificate} (--tls-ca/--tls-cert/--tls-key, GATEWAY_DATA_DIR)"
            )
        return line
    fields = ", ".join(v.field for v in error.field_violations)
    suffix = f" (field {fields})" if fields else ""
    return f"error: {error.code.name}: {error.message}{suffix}"


# ---------------------------------------------------------------------------------------------
# Commands


def _limits(args: argparse.Namespace, prefix: str = "") -> tuple[list[Any], int | None, bool]:
    """The quotas and concurrency the flags with ``prefix`` ask for, and whether any was given."""
    quotas = quotas_from_flags(
        rpm=getattr(args, f"{prefix}rpm"),
        rpd=getattr(args, f"{prefix}rpd"),
        tpm=getattr(args, f"{prefix}tpm"),
        tpd=getattr(args, f"{prefix}tpd"),
        budgets=getattr(args, f"{prefix}budget_usd"),
    )
    concurrency: int | None = getattr(args, f"{prefix}concurrency")
    return quotas, concurrency, bool(quotas) or concurrency is not None


def _policy(args: argparse.Namespace, current: auth_pb2.Policy) -> tuple[auth_pb2.Policy, bool]:
    policy = auth_pb2.Policy()
    policy.CopyFrom(current)
    given = False
    if args.deny_models is not None:
        policy.ClearField("deny_models")
        policy.deny_models.extend(args.deny_models)
        given = True
    if args.deny_providers is not None:
        policy.ClearField("deny_providers")
        policy.deny_providers.extend(args.deny_providers)
        given = True
    if args.max_prompt_tokens is not None:
        policy.max_prompt_tokens = args.max_prompt_tokens
        given = True
    if args.log_prompts is not None:
        policy.log_prompts = args.log_prompts
        given = True
    if args.continue_streams is not None:
        policy.continue_broken_streams = args.continue_streams
        given = True
    return policy, given


async def _keys_create(admin: Admin, args: argparse.Namespace) -> None:
    quotas, concurrency, _ = _limits(args)
    request = auth_pb2.CreateKeyRequest(
        tenant_id=args.tenant,
        name=args.name,
        scopes=args.scopes,
        allowed_models=args.models,
        limits=merge_limits(auth_pb2.Limits(), quotas, concurrency),
    )
    if args.expires_in is not None:
        request.expire_time.FromDatetime(datetime.now(UTC) + args.expires_in)
    response = await admin.stub.CreateKey(request, **admin.options)
    if args.json:
        _print_json(response)
        return
    key = response.key
    print(f"Created key {key.key_id} in tenant {key.tenant_id} (scopes {','.join(key.scopes)}).")
    print("Store this key now; it cannot be shown again:")
    print(response.secret)


async def _keys_list(admin: Admin, args: argparse.Namespace) -> None:
    request = auth_pb2.ListKeysRequest(tenant_id=args.tenant, include_revoked=args.all)
    response = await admin.stub.ListKeys(request, **admin.options)
    if args.json:
        _print_json(response)
    elif not response.keys:
        print("No keys.")
    else:
        print(format_keys(response.keys, datetime.now(UTC)))


async def _find_key(admin: Admin, key_id: str) -> auth_pb2.ApiKey | None:
    response = await admin.stub.ListKeys(auth_pb2.ListKeysRequest(include_revoked=True), **admin.options)
    return next((key for key in response.keys if key.key_id == key_id), None)


async def _keys_update(admin: Admin, args: argparse.Namespace) -> None:
    request = auth_pb2.UpdateKeyRequest(key_id=args.key_id, scopes=args.scopes or [], allowed_models=args.models or [])
    quotas, concurrency, given = _limits(args)
    if given or args.inherit_limits:
        current = auth_pb2.Limits()
        if not args.inherit_limits:
            key = await _find_key(admin, args.key_id)
            if key is not None:  # an unknown key is the service's to report (NOT_FOUND)
                current = key.limits
        request.limits.CopyFrom(merge_limits(current, quotas, concurrency))
    if not (request.HasField("limits") or request.scopes or request.allowed_models):
        raise UsageError("nothing to change: give limit flags, --scopes, --models or --inherit-limits")
    response = await admin.stub.UpdateKey(request, **admin.options)
    if args.json:
        _print_json(response)
    else:
        print(format_keys([response.key], datetime.now(UTC)))


async def _keys_revoke(admin: Admin, args: argparse.Namespace) -> None:
    response = await admin.stub.RevokeKey(auth_pb2.RevokeKeyRequest(key_id=args.key_id), **admin.options)
    if args.json:
        _print_json(response)
    else:
        print(f"Revoked key {response.key.key_id} of tenant {response.key.tenant_id}.")


async def _tenants_create(admin: Admin, args: argparse.Namespace) -> None:
    quotas, concurrency, _ = _limits(args)
    key_quotas, key_concurrency, _ = _limits(args, "key_")
    policy, _ = _policy(args, auth_pb2.Policy())
    tenant = auth_pb2.Tenant(
        tenant_id=args.tenant_id,
        display_name=args.name,
        limits=merge_limits(auth_pb2.Limits(), quotas, concurrency),
        key_defaults=merge_limits(auth_pb2.Limits(), key_quotas, key_concurrency),
        policy=policy,
    )
    response = await admin.stub.CreateTenant(auth_pb2.CreateTenantRequest(tenant=tenant), **admin.options)
    if args.json:
        _print_json(response)
    else:
        print(format_tenants([response.tenant]))


async def _tenants_list(admin: Admin, args: argparse.Namespace) -> None:
    response = await admin.stub.ListTenants(auth_pb2.ListTenantsRequest(), **admin.options)
    if args.json:
        _print_json(response)
    elif not response.tenants:
        print("No tenants.")
    else:
        print(format_tenants(response.tenants))


async def _tenants_update(admin: Admin, args: argparse.Namespace) -> None:
    listing = await admin.stub.ListTenants(auth_pb2.ListTenantsRequest(), **admin.options)
    # An unknown tenant is the service's to report (NOT_FOUND); merge into nothing meanwhile.
    current = next((t for t in listing.tenants if t.tenant_id == args.tenant_id), auth_pb2.Tenant())
    request = auth_pb2.UpdateTenantRequest(tenant_id=args.tenant_id)
    quotas, concurrency, given = _limits(args)
    if given:
        base = auth_pb2.Limits() if args.replace else current.limits
        request.limits.CopyFrom(merge_limits(base, quotas, concurrency))
    key_quotas, key_concurrency, key_given = _limits(args, "key_")
    if key_given:
        base = auth_pb2.Limits() if args.replace else current.key_defaults
        request.key_defaults.CopyFrom(merge_limits(base, key_quotas, key_concurrency))
    policy, policy_given = _policy(args, auth_pb2.Policy() if args.replace else current.policy)
    if policy_given:
        request.policy.CopyFrom(policy)
    if not (given or key_given or policy_given):
        raise UsageError("nothing to change: give limit, --key-* or policy flags")
    response = await admin.stub.UpdateTenant(request, **admin.options)
    if args.json:
        _print_json(response)
    else:
        print(format_tenants([response.tenant]))


def format_routes(routes: Sequence[auth_pb2.Route]) -> str:
    """The route overrides as a table."""
    rows = [("MODEL", "PROVIDER", "UPSTREAM MODEL", "UPDATED")]
    rows += [(r.model, r.provider, r.upstream_model or r.model, _time(r.update_time)) for r in routes]
    return _table(rows)


def _route_text(route: auth_pb2.Route) -> str:
    upstream = f" as {route.upstream_model}" if route.upstream_model else ""
    return f"{route.model} -> {route.provider}{upstream}"


async def _routes_set(admin: Admin, args: argparse.Namespace) -> None:
    request = auth_pb2.SetRouteRequest(model=args.model, provider=args.provider, upstream_model=args.upstream_model)
    response = await admin.stub.SetRoute(request, **admin.options)
    if args.json:
        _print_json(response)
    else:
        print(f"Route set: {_route_text(response.route)} (every router follows within seconds).")


async def _routes_list(admin: Admin, args: argparse.Namespace) -> None:
    response = await admin.stub.ListRoutes(auth_pb2.ListRoutesRequest(), **admin.options)
    if args.json:
        _print_json(response)
    elif not response.routes:
        print("No route overrides.")
    else:
        print(format_routes(response.routes))


async def _routes_delete(admin: Admin, args: argparse.Namespace) -> None:
    response = await admin.stub.DeleteRoute(auth_pb2.DeleteRouteRequest(model=args.model), **admin.options)
    if args.json:
        _print_json(response)
    else:
        print(f"Route deleted: {_route_text(response.route)}.")


Handler = Callable[[Admin, argparse.Namespace], Awaitable[None]]


async def _call(
    handler: Handler,
    args: argparse.Namespace,
    address: str,
    admin_key: str,
    credentials: grpc.ChannelCredentials | None,
) -> None:
    channel = open_channel(address, credentials=credentials)
    try:
        admin = Admin(
            auth_pb2_grpc.AuthServiceStub(channel),
            admin_key,
            args.timeout,
            credentials_pb2_grpc.CredentialServiceStub(channel),
        )
        await handler(admin, args)
    finally:
        await channel.close(None)


def _check_config(path: str | None) -> int:
    try:
        config = load_config(path)
    except ConfigError as exc:
        print(str(exc), file=sys.stderr)
        return EXIT_USAGE
    source = path or os.environ.get("GATEWAY_CONFIG") or "built-in defaults"
    providers = ", ".join(sorted(effective_providers(config)))
    print(f"OK: {source} (providers: {providers}; models: {len(config.models)})")
    return EXIT_OK


def main(argv: list[str] | None = None) -> int:
    """Run one command; returns the exit status (0 ok, 1 refused or unreachable, 2 bad usage)."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # argparse exits on --help (0) and on bad usage (2)
        return exc.code if isinstance(exc.code, int) else EXIT_USAGE
    defaults = (
        ("address", None),
        ("admin_key", None),
        ("config", None),
        ("timeout", 10.0),
        ("json", False),
        ("tls_ca", None),
        ("tls_cert", None),
        ("tls_key", None),
    )
    for name, default in defaults:
        if not hasattr(args, name):
            setattr(args, name, default)
    if args.group == "check-config":
        return _check_config(args.file or args.config)
    admin_key = args.admin_key or os.environ.get(ADMIN_KEY_ENV, "")
    if not admin_key:
        print(f"error: no admin key: pass --admin-key or set {ADMIN_KEY_ENV}", file=sys.stderr)
        return EXIT_USAGE
    try:
        config = load_config(args.config)
        address = args.address or config.services.auth.address
        tls = tls_settings(config.tls, ca=args.tls_ca, cert=args.tls_cert, key=args.tls_key)
        credentials = channel_credentials(tls)
    except ConfigError as exc:
        print(str(exc), file=sys.stderr)
        return EXIT_USAGE
    try:
        asyncio.run(_call(args.handler, args, address, admin_key, credentials))
    except UsageError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except grpc.aio.AioRpcError as exc:
        shown = "no client certificate" if credentials is None else f"the certificate in {tls.cert_file or tls.dir}"
        print(describe_error(GatewayError.from_rpc_error(exc), address, shown), file=sys.stderr)
        return EXIT_FAILED
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
