"""The ``/ui/`` pages: each GET reads through the services, each POST changes one thing and redirects.

Every POST is CSRF-checked (``session.checked_form``) before anything else is read from it. An RPC
refusal is shown on the page it came from, with the HTTP status the JSON routes would give it.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlencode

import grpc
import jinja2
from fastapi import APIRouter, FastAPI, Request
from fastapi.responses import RedirectResponse, Response
from fastapi.templating import Jinja2Templates

from edge.errors import http_status
from edge.ui import chart, forms
from edge.ui.clients import CredentialsUnavailable, Services
from edge.ui.session import (
    CSRF_FIELD,
    CsrfRejected,
    FormTooLarge,
    Session,
    checked_form,
    csrf_token,
    current,
    remember_csrf,
    sign_in,
    sign_out,
    valid_key_shape,
)
from gateway.auth.v1 import auth_pb2, credentials_pb2
from gateway.metering.v1 import metering_pb2
from gateway_common.errors import GatewayError

HERE = Path(__file__).parent
_ENVIRONMENT = jinja2.Environment(
    loader=jinja2.FileSystemLoader(HERE / "templates"),
    # Every value is escaped unless a template says otherwise (none does).
    autoescape=True,
    undefined=jinja2.StrictUndefined,
)
templates = Jinja2Templates(env=_ENVIRONMENT)
STYLESHEET = (HERE / "static" / "ui.css").read_bytes()
PROMPT_LOG_LIMIT = 100
# Defence in depth behind autoescaping: the pages run no script at all, load only their own
# stylesheet, post forms only to themselves and cannot be framed; nothing is cached.
PAGE_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self'; "
        "frame-ancestors 'none'; base-uri 'none'"
    ),
    "Cache-Control": "no-store",
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}

# Fixed texts for the notice after a redirect: the query string names one, it cannot inject text.
NOTICES = {
    "tenant-created": "Tenant created.",
    "tenant-updated": "Tenant limits saved.",
    "key-updated": "Key saved.",
    "key-revoked": "Key revoked.",
    "route-set": "Route saved.",
    "route-deleted": "Route deleted.",
    "credential-added": "Credential added.",
    "credential-updated": "Credential updated.",
    "credential-rotated": "Credential rotated.",
    "credential-deleted": "Credential deleted.",
}

router = APIRouter(prefix="/ui", include_in_schema=False)

Page = Callable[[Request, Session, "Feedback"], Awaitable[Response]]


class Feedback:
    """What a page says besides its data: a notice, an error and the status to answer with."""

    def __init__(self, notice: str = "", error: str = "", status: int = 200) -> None:
        self.notice = notice
        self.error = error
        self.status = status


def install(app: FastAPI) -> None:
    """Serve the UI under ``/ui/``."""
    app.include_router(router)


def _render(
    request: Request, session: Session | None, name: str, context: dict[str, Any], feedback: Feedback | None = None
) -> Response:
    feedback = feedback or Feedback(notice=NOTICES.get(request.query_params.get("done", ""), ""))
    response = templates.TemplateResponse(
        request,
        name,
        {
            "session": session,
            "csrf_field": CSRF_FIELD,
            "csrf": csrf_token(request),
            "notice": feedback.notice,
            "error": feedback.error,
            "empty_limits": auth_pb2.Limits(),
            **context,
        },
        status_code=feedback.status,
        headers=PAGE_HEADERS,
    )
    remember_csrf(request, response)
    return response


def _failure(exc: grpc.aio.AioRpcError) -> Feedback:
    error = GatewayError.from_rpc_error(exc)
    return Feedback(error=error.message, status=http_status(error))


def _done(path: str, notice: str, **query: str) -> Response:
    params = urlencode({**{k: v for k, v in query.items() if v}, "done": notice})
    return RedirectResponse(f"{path}?{params}", status_code=303)


async def _post(
    request: Request, page: Page, change: Callable[[Session, dict[str, str]], Awaitable[Response]]
) -> Response:
    """Check the session and the CSRF token, run ``change``; show a refusal on ``page``."""
    session = current(request)
    try:
        form = await checked_form(request)
    except CsrfRejected:
        return _render(
            request,
            session,
            "message.html",
            {"title": "Refused"},
            Feedback(
                error="This form was not sent from this page (its CSRF token did not match). Reload and try again.",
                status=403,
            ),
        )
    except FormTooLarge:
        return _render(
            request, session, "message.html", {"title": "Refused"}, Feedback(error="The form is too large.", status=413)
        )
    if session is None:
        return RedirectResponse("/ui/login", status_code=303)
    try:
        return await change(session, form)
    except forms.FormError as exc:
        return await page(request, session, Feedback(error=str(exc), status=400))
    except grpc.aio.AioRpcError as exc:
        return await page(request, session, _failure(exc))
    except CredentialsUnavailable:
        return await page(request, session, Feedback())


async def _get(request: Request, page: Page) -> Response:
    session = current(request)
    if session is None:
        return RedirectResponse("/ui/login", status_code=303)
    return await page(request, session, Feedback(notice=NOTICES.get(request.query_params.get("done", ""), "")))


@router.get("/static/ui.css")
async def stylesheet() -> Response:
    """The one stylesheet, shipped in the package."""
    return Response(STYLESHEET, media_type="text/css", headers={"Cache-Control": "max-age=300"})


@router.get("/")
async def home(request: Request) -> Response:
    """The sign-in page, or the first page of a signed-in session."""
    session = current(request)
    if session is None:
        return RedirectResponse("/ui/login", status_code=303)
    return RedirectResponse("/ui/tenants" if session.is_admin else "/ui/usage", status_code=303)


@router.get("/login")
async def login_page(request: Request) -> Response:
    """Ask for a key."""
    return _render(request, current(request), "login.html", {})


@router.post("/login")
async def login(request: Request) -> Response:
    """Sign in: auth's answer to ListTenants says whether the key is an admin's, a tenant's or none."""
    try:
        form = await checked_form(request)
    except (CsrfRejected, FormTooLarge):
        return _render(
            request,
            None,
            "login.html",
            {},
            Feedback(
                error="This form was not sent from this page (its CSRF token did not match). Reload and try again.",
                status=403,
            ),
        )
    key = form.get("key", "").strip()
    if not valid_key_shape(key):
        return _render(request, None, "login.html", {}, Feedback(error="Enter an API key.", status=400))
    try:
        await Services.for_key(request, key).list_tenants()
        session = Session(key, "admin")
    except grpc.aio.AioRpcError as exc:
        if exc.code() != grpc.StatusCode.PERMISSION_DENIED:
            # The message is auth's; it never echoes the key.
            return _render(request, None, "login.html", {}, _failure(exc))
        # A valid key without the admin scope: it sees what its own tenant's key may see.
        session = Session(key, "tenant")
    response = RedirectResponse("/ui/", status_code=303)
    sign_in(request, response, session)
    return response


@router.post("/logout")
async def logout(request: Request) -> Response:
    """Sign out (CSRF-checked, so another site cannot sign a user out either)."""
    try:
        await checked_form(request)
    except (CsrfRejected, FormTooLarge):
        return _render(
            request,
            current(request),
            "message.html",
            {"title": "Refused"},
            Feedback(error="This form was not sent from this page (its CSRF token did not match).", status=403),
        )
    response = RedirectResponse("/ui/login", status_code=303)
    sign_out(response)
    return response


# Tenants.


async def _tenants_page(request: Request, session: Session, feedback: Feedback) -> Response:
    context: dict[str, Any] = {"tenants": [], "grid": forms.limit_grid, "concurrency": forms.concurrency}
    try:
        context["tenants"] = await Services(request, session).list_tenants()
    except grpc.aio.AioRpcError as exc:
        feedback = feedback if feedback.error else _failure(exc)
    return _render(request, session, "tenants.html", context, feedback)


@router.get("/tenants")
async def tenants(request: Request) -> Response:
    """Every tenant with its limits (admin keys)."""
    return await _get(request, _tenants_page)


@router.post("/tenants")
async def create_tenant(request: Request) -> Response:
    """Create a tenant."""

    async def change(session: Session, form: dict[str, str]) -> Response:
        tenant = auth_pb2.Tenant(
            tenant_id=form.get("tenant_id", "").strip(),
            display_name=form.get("display_name", "").strip(),
            limits=forms.parse_limits(form, "limits"),
            key_defaults=forms.parse_limits(form, "key_defaults"),
        )
        await Services(request, session).create_tenant(tenant)
        return _done("/ui/tenants", "tenant-created")

    return await _post(request, _tenants_page, change)


@router.post("/tenants/{tenant_id:path}")
async def update_tenant(request: Request, tenant_id: str) -> Response:
    """Replace a tenant's limits and key defaults."""

    async def change(session: Session, form: dict[str, str]) -> Response:
        update = auth_pb2.UpdateTenantRequest(
            tenant_id=tenant_id,
            limits=forms.parse_limits(form, "limits"),
            key_defaults=forms.parse_limits(form, "key_defaults"),
        )
        await Services(request, session).update_tenant(update)
        return _done("/ui/tenants", "tenant-updated")

    return await _post(request, _tenants_page, change)


# Keys.


def _keys_page(created: auth_pb2.CreateKeyResponse | None = None) -> Page:
    async def page(request: Request, session: Session, feedback: Feedback) -> Response:
        tenant = request.query_params.get("tenant", "")
        context: dict[str, Any] = {
            "keys": [],
            "tenants": [],
            "tenant": tenant,
            "created": created,
            "grid": forms.limit_grid,
            "concurrency": forms.concurrency,
        }
        services = Services(request, session)
        try:
            context["tenants"] = [t.tenant_id for t in await services.list_tenants()]
            context["keys"] = await services.list_keys(tenant)
        except grpc.aio.AioRpcError as exc:
            feedback = feedback if feedback.error else _failure(exc)
        return _render(request, session, "keys.html", context, feedback)

    return page


@router.get("/keys")
async def keys(request: Request) -> Response:
    """Keys (of one tenant, or all), without secrets (admin keys)."""
    return await _get(request, _keys_page())


@router.post("/keys")
async def create_key(request: Request) -> Response:
    """Create a key and show its secret on this one answer; it is never shown again."""

    async def change(session: Session, form: dict[str, str]) -> Response:
        created = await Services(request, session).create_key(
            auth_pb2.CreateKeyRequest(
                tenant_id=form.get("tenant_id", "").strip(),
                name=form.get("name", "").strip(),
                scopes=forms.parse_list(form.get("scopes", "")),
                allowed_models=forms.parse_list(form.get("allowed_models", "")),
                limits=forms.parse_limits(form, "limits"),
            )
        )
        return await _keys_page(created)(request, session, Feedback(notice="Key created. Copy its secret now."))

    return await _post(request, _keys_page(), change)


@router.post("/keys/{key_id}")
async def update_key(request: Request, key_id: str) -> Response:
    """Replace a key's limits and budget, and its allowed models when some are given."""

    async def change(session: Session, form: dict[str, str]) -> Response:
        await Services(request, session).update_key(
            auth_pb2.UpdateKeyRequest(
                key_id=key_id,
                limits=forms.parse_limits(form, "limits"),
                allowed_models=forms.parse_list(form.get("allowed_models", "")),
            )
        )
        return _done("/ui/keys", "key-updated", tenant=form.get("tenant", ""))

    return await _post(request, _keys_page(), change)


@router.post("/keys/{key_id}/revoke")
async def revoke_key(request: Request, key_id: str) -> Response:
    """Revoke a key for good."""

    async def change(session: Session, form: dict[str, str]) -> Response:
        await Services(request, session).revoke_key(key_id)
        return _done("/ui/keys", "key-revoked", tenant=form.get("tenant", ""))

    return await _post(request, _keys_page(), change)


# Routes.


async def _routes_page(request: Request, session: Session, feedback: Feedback) -> Response:
    context: dict[str, Any] = {"routes": []}
    try:
        context["routes"] = await Services(request, session).list_routes()
    except grpc.aio.AioRpcError as exc:
        feedback = feedback if feedback.error else _failure(exc)
    return _render(request, session, "routes.html", context, feedback)


@router.get("/routes")
async def routes(request: Request) -> Response:
    """Route overrides (admin keys)."""
    return await _get(request, _routes_page)


@router.post("/routes")
async def set_route(request: Request) -> Response:
    """Create or replace a route override."""

    async def change(session: Session, form: dict[str, str]) -> Response:
        await Services(request, session).set_route(
            form.get("model", "").strip(), form.get("provider", "").strip(), form.get("upstream_model", "").strip()
        )
        return _done("/ui/routes", "route-set")

    return await _post(request, _routes_page, change)


@router.post("/routes/{model:path}/delete")
async def delete_route(request: Request, model: str) -> Response:
    """Remove a route override."""

    async def change(session: Session, form: dict[str, str]) -> Response:
        await Services(request, session).delete_route(model)
        return _done("/ui/routes", "route-deleted")

    return await _post(request, _routes_page, change)


# Credentials.

STATE_NAMES = {
    credentials_pb2.CREDENTIAL_STATE_UNSPECIFIED: "active",
    credentials_pb2.CREDENTIAL_STATE_ACTIVE: "active",
    credentials_pb2.CREDENTIAL_STATE_DISABLED: "disabled",
}
KIND_NAMES = {credentials_pb2.CREDENTIAL_KIND_API_KEY: "API key", credentials_pb2.CREDENTIAL_KIND_OAUTH: "OAuth"}


def _credential_state(credential: credentials_pb2.Credential, now: datetime) -> str:
    if credential.HasField("cooldown_until") and credential.cooldown_until.ToDatetime(UTC) > now:
        return f"cooling down until {credential.cooldown_until.ToDatetime(UTC):%Y-%m-%d %H:%M:%S} UTC"
    return STATE_NAMES.get(credential.state, "active")


async def _credentials_page(request: Request, session: Session, feedback: Feedback) -> Response:
    tenant = request.query_params.get("tenant", "")
    now = datetime.now(UTC)
    context: dict[str, Any] = {"credentials": [], "available": True, "tenant": tenant, "kinds": KIND_NAMES}
    try:
        context["credentials"] = [
            (c, _credential_state(c, now)) for c in await Services(request, session).list_credentials(tenant)
        ]
    except CredentialsUnavailable:
        context["available"] = False
    except grpc.aio.AioRpcError as exc:
        feedback = feedback if feedback.error else _failure(exc)
    return _render(request, session, "credentials.html", context, feedback)


@router.get("/credentials")
async def credentials(request: Request) -> Response:
    """Upstream credentials with their last four characters and state (auth decides whose)."""
    return await _get(request, _credentials_page)


@router.post("/credentials")
async def add_credential(request: Request) -> Response:
    """Store an API-key credential (OAuth ones come from their login page, e.g. /ui/gemini)."""

    async def change(session: Session, form: dict[str, str]) -> Response:
        await Services(request, session).create_credential(
            credentials_pb2.CreateCredentialRequest(
                tenant_id=form.get("tenant_id", "").strip(),
                provider=form.get("provider", "").strip(),
                name=form.get("name", "").strip(),
                priority=forms.parse_int(form, "priority"),
                secret=credentials_pb2.CredentialSecret(api_key=form.get("api_key", "").strip()),
            )
        )
        return _done("/ui/credentials", "credential-added")

    return await _post(request, _credentials_page, change)


@router.post("/credentials/{credential_id}/state")
async def credential_state(request: Request, credential_id: str) -> Response:
    """Enable or disable a credential."""

    async def change(session: Session, form: dict[str, str]) -> Response:
        state = (
            credentials_pb2.CREDENTIAL_STATE_DISABLED
            if form.get("state") == "disabled"
            else credentials_pb2.CREDENTIAL_STATE_ACTIVE
        )
        await Services(request, session).set_credential_state(credential_id, state)
        return _done("/ui/credentials", "credential-updated")

    return await _post(request, _credentials_page, change)


@router.post("/credentials/{credential_id}/rotate")
async def rotate_credential(request: Request, credential_id: str) -> Response:
    """Replace a credential's API key."""

    async def change(session: Session, form: dict[str, str]) -> Response:
        await Services(request, session).rotate_credential(credential_id, form.get("api_key", "").strip())
        return _done("/ui/credentials", "credential-rotated")

    return await _post(request, _credentials_page, change)


@router.post("/credentials/{credential_id}/delete")
async def delete_credential(request: Request, credential_id: str) -> Response:
    """Delete a credential for good."""

    async def change(session: Session, form: dict[str, str]) -> Response:
        await Services(request, session).delete_credential(credential_id)
        return _done("/ui/credentials", "credential-deleted")

    return await _post(request, _credentials_page, change)


# Usage and the prompt log.

METRIC_LABELS = {"tokens": "tokens", "cost_usd": "USD", "requests": "requests"}


def _metric(row: metering_pb2.UsageRow, metric: str) -> float:
    if metric == "cost_usd":
        return row.cost_micro_usd / 1_000_000
    if metric == "requests":
        return float(row.requests)
    return float(row.prompt_tokens + row.completion_tokens)


def _totals(per_bucket: list[list[metering_pb2.UsageRow]]) -> list[dict[str, Any]]:
    sums: dict[str, dict[str, Any]] = {}
    for rows in per_bucket:
        for row in rows:
            total = sums.setdefault(
                row.group, {"group": row.group, "requests": 0, "prompt": 0, "completion": 0, "micro": 0, "errors": 0}
            )
            total["requests"] += row.requests
            total["prompt"] += row.prompt_tokens
            total["completion"] += row.completion_tokens
            total["micro"] += row.cost_micro_usd
            total["errors"] += row.errors
    return [{**t, "cost_usd": f"{t['micro'] / 1_000_000:.6f}"} for t in sorted(sums.values(), key=lambda t: t["group"])]


async def _usage_page(request: Request, session: Session, feedback: Feedback) -> Response:
    tenant = request.query_params.get("tenant", "")
    range_name = request.query_params.get("range", chart.DEFAULT_RANGE)
    range_name = range_name if range_name in chart.RANGES else chart.DEFAULT_RANGE
    metric = request.query_params.get("metric", "tokens")
    metric = metric if metric in chart.METRICS else "tokens"
    buckets = chart.windows(range_name, datetime.now(UTC))
    services = Services(request, session)
    context: dict[str, Any] = {
        "tenant": tenant,
        "range": range_name,
        "ranges": list(chart.RANGES),
        "metric": metric,
        "metrics": chart.METRICS,
        "sections": [],
        "tenants": [],
    }
    try:
        if session.is_admin:
            context["tenants"] = [t.tenant_id for t in await services.list_tenants()]
        for title, group_by in (("key", metering_pb2.GROUP_BY_KEY), ("model", metering_pb2.GROUP_BY_MODEL)):
            per_bucket = await services.usage(tenant, group_by, buckets)
            values = [{row.group: _metric(row, metric) for row in rows} for rows in per_bucket]
            context["sections"].append(
                {
                    "title": title,
                    "chart": chart.build(range_name, buckets, values, METRIC_LABELS[metric]),
                    "totals": _totals(per_bucket),
                }
            )
    except grpc.aio.AioRpcError as exc:
        feedback = feedback if feedback.error else _failure(exc)
    return _render(request, session, "usage.html", context, feedback)


@router.get("/usage")
async def usage(request: Request) -> Response:
    """Usage and cost per key and per model over time (the router decides whose usage the key reads)."""
    return await _get(request, _usage_page)


async def _prompt_log_page(request: Request, session: Session, feedback: Feedback) -> Response:
    context: dict[str, Any] = {"entries": []}
    try:
        context["entries"] = await Services(request, session).prompt_log(PROMPT_LOG_LIMIT)
    except grpc.aio.AioRpcError as exc:
        feedback = feedback if feedback.error else _failure(exc)
    return _render(request, session, "prompt_log.html", context, feedback)


@router.get("/prompt-log")
async def prompt_log(request: Request) -> Response:
    """The caller's tenant's latest logged calls, where its policy logs prompts."""
    return await _get(request, _prompt_log_page)


def quote_path(value: str) -> str:
    """A value as one URL path segment."""
    return quote(value, safe="")


_ENVIRONMENT.filters["path"] = quote_path
