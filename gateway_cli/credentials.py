"""``gateway credentials …``: tenants' upstream credentials in the auth service's encrypted store.

    gateway credentials add --tenant acme --provider openai --name main --priority 0 --rpm 500 < key.txt
    gateway credentials add --tenant acme --provider gemini-cli --oauth < tokens.json
    gateway credentials list [--tenant acme] [--provider openai]
    gateway credentials disable|enable|delete CRED_ID
    gateway credentials rotate CRED_ID < new-key.txt
    gateway credentials set-limits CRED_ID --rpm 500 --tpd 2000000   (no flag: clear them)
    gateway credentials rewrap            (after adding a new current KEK)

A secret is read from standard input (or ``--secret-file``), never from the command line, where
the shell history and ``ps`` would keep it; an OAuth token set is a JSON object with
``access_token``, ``refresh_token``, ``expires_at`` (RFC 3339), ``scopes``, ``token_type``.
Answers never hold a secret, only its last four characters.
"""

from __future__ import annotations

import argparse
import getpass
import json
import sys
from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC
from typing import Any, Protocol

from google.protobuf import json_format, timestamp_pb2

from gateway.auth.v1 import credentials_pb2, credentials_pb2_grpc
from gateway.quota.v1 import quota_pb2

from .limits import describe_quota, non_negative_int


class UsageError(Exception):
    """The command cannot run as given (the caller maps it to exit status 2)."""


class Caller(Protocol):
    """What a command needs: the credential stub and the per-call options (admin key, deadline)."""

    credentials: credentials_pb2_grpc.CredentialServiceAsyncStub
    options: dict[str, Any]


Command = Callable[[Caller, argparse.Namespace], Awaitable[None]]

_FLAGS = (
    ("rpm", quota_pb2.UNIT_REQUESTS, quota_pb2.WINDOW_MINUTE, "requests per minute"),
    ("rpd", quota_pb2.UNIT_REQUESTS, quota_pb2.WINDOW_DAY, "requests per day"),
    ("rpmonth", quota_pb2.UNIT_REQUESTS, quota_pb2.WINDOW_MONTH, "requests per month"),
    ("tpm", quota_pb2.UNIT_TOKENS, quota_pb2.WINDOW_MINUTE, "tokens per minute"),
    ("tpd", quota_pb2.UNIT_TOKENS, quota_pb2.WINDOW_DAY, "tokens per day"),
    ("tpmonth", quota_pb2.UNIT_TOKENS, quota_pb2.WINDOW_MONTH, "tokens per month"),
)
_KINDS = {credentials_pb2.CREDENTIAL_KIND_API_KEY: "api_key", credentials_pb2.CREDENTIAL_KIND_OAUTH: "oauth"}
_STATES = {credentials_pb2.CREDENTIAL_STATE_DISABLED: "disabled"}


def _limit_flags(parser: argparse.ArgumentParser) -> None:
    for flag, _, _, text in _FLAGS:
        parser.add_argument(f"--{flag}", type=non_negative_int, metavar="N", help=f"the credential's {text}")


def _quotas(args: argparse.Namespace) -> list[quota_pb2.Quota]:
    return [
        quota_pb2.Quota(unit=unit, window=window, limit=getattr(args, flag))
        for flag, unit, window, _ in _FLAGS
        if getattr(args, flag) is not None
    ]


def _secret_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--secret-file", default="-", metavar="PATH", help="read the secret from this file (default: standard input)"
    )
    parser.add_argument(
        "--oauth", action="store_true", help="the secret is an OAuth token set as JSON (default: an API key)"
    )


def add_parser(groups: Any, common: argparse.ArgumentParser) -> None:
    """The ``credentials`` command group."""
    group = groups.add_parser("credentials", help="tenants' upstream credentials (encrypted at rest)")
    commands = group.add_subparsers(dest="command", required=True)

    add = commands.add_parser("add", parents=[common], help="store a credential (secret from standard input)")
    add.add_argument("--tenant", default="", help="the owning tenant (default: the key's own)")
    add.add_argument("--provider", required=True, help="the provider's name in the configuration")
    add.add_argument("--name", default="", help="a display name (default: the provider)")
    add.add_argument("--priority", type=non_negative_int, default=0, help="lower is tried first (default 0)")
    _limit_flags(add)
    _secret_flags(add)
    add.set_defaults(handler=_add)

    listing = commands.add_parser("list", parents=[common], help="list credentials (never their secrets)")
    listing.add_argument("--tenant", default="", help="only this tenant's")
    listing.add_argument("--provider", default="", help="only this provider's")
    listing.set_defaults(handler=_list)

    for name, handler, text in (
        ("disable", _disable, "stop using a credential until enabled again"),
        ("enable", _enable, "use a disabled credential again"),
        ("delete", _delete, "delete a credential for good"),
    ):
        command = commands.add_parser(name, parents=[common], help=text)
        command.add_argument("credential_id")
        command.set_defaults(handler=handler)

    rotate = commands.add_parser("rotate", parents=[common], help="replace a credential's secret (standard input)")
    rotate.add_argument("credential_id")
    _secret_flags(rotate)
    rotate.set_defaults(handler=_rotate)

    limits = commands.add_parser(
        "set-limits", parents=[common], help="replace a credential's limits (no flag: no limits)"
    )
    limits.add_argument("credential_id")
    _limit_flags(limits)
    limits.set_defaults(handler=_set_limits)

    rewrap = commands.add_parser(
        "rewrap", parents=[common], help="re-wrap every data key under the current KEK (after a KEK rotation)"
    )
    rewrap.set_defaults(handler=_rewrap)


# ---------------------------------------------------------------------------------------------
# Reading secrets


def _read_text(path: str, prompt: str) -> str:
    if path != "-":
        try:
            with open(path) as source:
                return source.read().strip()
        except OSError as exc:
            raise UsageError(f"cannot read {path}: {exc.strerror}") from None
    if sys.stdin.isatty():
        return getpass.getpass(prompt).strip()
    return sys.stdin.read().strip()


def read_secret(args: argparse.Namespace) -> credentials_pb2.CredentialSecret:
    """The secret the command was given: an API key, or an OAuth token set (JSON)."""
    if not args.oauth:
        key = _read_text(args.secret_file, "API key: ")
        if not key:
            raise UsageError("no secret given: pipe the API key into standard input or use --secret-file")
        return credentials_pb2.CredentialSecret(api_key=key)
    text = _read_text(args.secret_file, "OAuth token set (JSON): ")
    try:
        document = json.loads(text)
        tokens = json_format.ParseDict(document, credentials_pb2.OAuthTokens(), ignore_unknown_fields=True)
    except (ValueError, json_format.ParseError, TypeError, AttributeError):
        # The message of a parse error may quote the input, which holds the tokens.
        raise UsageError(
            "the OAuth token set must be a JSON object with access_token, refresh_token, expires_at (RFC 3339)"
        ) from None
    return credentials_pb2.CredentialSecret(oauth=tokens)


# ---------------------------------------------------------------------------------------------
# Output


def _time(value: timestamp_pb2.Timestamp) -> str:
    return value.ToDatetime(tzinfo=UTC).strftime("%Y-%m-%d %H:%M:%SZ")


def _table(rows: Sequence[Sequence[str]]) -> str:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip() for row in rows)


def credential_state(credential: credentials_pb2.Credential) -> str:
    """Disabled, cooling down (until when, as the rate limit service reports it), or active."""
    if credential.state == credentials_pb2.CREDENTIAL_STATE_DISABLED:
        return "disabled"
    if credential.HasField("cooldown_until"):
        return f"cooling down until {_time(credential.cooldown_until)}"
    return "active"


def credential_usage(credential: credentials_pb2.Credential) -> str:
    """What it used of each quota's current window (``3/60 req/min``), as the rate limit service
    reports it; ``-`` when it has no quotas or the rate limit service did not answer."""
    return ", ".join(f"{w.used}/{describe_quota(w.quota)}" for w in credential.window_usage) or "-"


def month_usage(credential: credentials_pb2.Credential) -> str:
    """What it served this month (``12 req, 3400 tok``), from the ledger; ``-`` when unknown."""
    if not credential.HasField("month_usage"):
        return "-"
    usage = credential.month_usage
    return f"{usage.requests} req, {usage.prompt_tokens + usage.completion_tokens} tok"


def format_credentials(credentials: Sequence[credentials_pb2.Credential]) -> str:
    """Credentials as a table; the secret only as its last four characters."""
    rows = [
        [
            "CREDENTIAL_ID",
            "TENANT",
            "PROVIDER",
            "KIND",
            "NAME",
            "PRIORITY",
            "LIMITS",
            "USED",
            "THIS_MONTH",
            "SECRET",
            "EXPIRES",
            "STATE",
        ]
    ]
    for c in credentials:
        rows.append(
            [
                c.credential_id,
                c.tenant_id,
                c.provider,
                _KINDS.get(c.kind, "?"),
                c.name or "-",
                str(c.priority),
                ", ".join(describe_quota(q) for q in c.limits) or "-",
                credential_usage(c),
                month_usage(c),
                "…" + c.secret_last_four,
                _time(c.expires_at) if c.HasField("expires_at") else "-",
                credential_state(c),
            ]
        )
    return _table(rows)


def _print_json(message: Any) -> None:
    print(json_format.MessageToJson(message, preserving_proto_field_name=True, indent=2))


def _show(args: argparse.Namespace, response: Any, credential: credentials_pb2.Credential, verb: str) -> None:
    if args.json:
        _print_json(response)
    else:
        print(f"{verb} credential {credential.credential_id}:")
        print(format_credentials([credential]))


# ---------------------------------------------------------------------------------------------
# Commands


async def _add(caller: Caller, args: argparse.Namespace) -> None:
    request = credentials_pb2.CreateCredentialRequest(
        tenant_id=args.tenant,
        provider=args.provider,
        name=args.name,
        priority=args.priority,
        limits=_quotas(args),
        secret=read_secret(args),
    )
    response = await caller.credentials.CreateCredential(request, **caller.options)
    _show(args, response, response.credential, "Stored")


async def _list(caller: Caller, args: argparse.Namespace) -> None:
    request = credentials_pb2.ListCredentialsRequest(tenant_id=args.tenant, provider=args.provider)
    response = await caller.credentials.ListCredentials(request, **caller.options)
    if args.json:
        _print_json(response)
    elif not response.credentials:
        print("No credentials.")
    else:
        print(format_credentials(response.credentials))


async def _set_state(
    caller: Caller, args: argparse.Namespace, state: credentials_pb2.CredentialState.ValueType
) -> None:
    request = credentials_pb2.UpdateCredentialRequest(credential_id=args.credential_id, state=state)
    response = await caller.credentials.UpdateCredential(request, **caller.options)
    _show(args, response, response.credential, "Updated")


async def _disable(caller: Caller, args: argparse.Namespace) -> None:
    await _set_state(caller, args, credentials_pb2.CREDENTIAL_STATE_DISABLED)


async def _enable(caller: Caller, args: argparse.Namespace) -> None:
    await _set_state(caller, args, credentials_pb2.CREDENTIAL_STATE_ACTIVE)


async def _delete(caller: Caller, args: argparse.Namespace) -> None:
    request = credentials_pb2.DeleteCredentialRequest(credential_id=args.credential_id)
    response = await caller.credentials.DeleteCredential(request, **caller.options)
    if args.json:
        _print_json(response)
    else:
        print(f"Deleted credential {args.credential_id}.")


async def _rotate(caller: Caller, args: argparse.Namespace) -> None:
    request = credentials_pb2.RotateCredentialRequest(credential_id=args.credential_id, secret=read_secret(args))
    response = await caller.credentials.RotateCredential(request, **caller.options)
    _show(args, response, response.credential, "Rotated")


async def _set_limits(caller: Caller, args: argparse.Namespace) -> None:
    request = credentials_pb2.UpdateCredentialRequest(
        credential_id=args.credential_id, replace_limits=True, limits=_quotas(args)
    )
    response = await caller.credentials.UpdateCredential(request, **caller.options)
    _show(args, response, response.credential, "Updated")


async def _rewrap(caller: Caller, args: argparse.Namespace) -> None:
    response = await caller.credentials.RewrapCredentials(credentials_pb2.RewrapCredentialsRequest(), **caller.options)
    if args.json:
        _print_json(response)
        return
    print(f"Re-wrapped {response.rewrapped} data keys under KEK {response.kek_id}; {response.remaining} left.")
    if response.remaining == 0:
        print("No data key needs an older KEK any more: it may be removed from the key ring.")
