"""A tenant credential's usage and state in its admin listing, through the real processes: auth
reads ratelimit's window usage and metering's ledger over mutual TLS with its own identity."""

from __future__ import annotations

import time
from typing import Any

import httpx
import pytest

from tests.e2e.conftest import Gateway

pytestmark = pytest.mark.e2e

HELLO = [{"role": "user", "content": "Hello"}]


def _listed(gateway: Gateway, credential_id: str) -> dict[str, Any]:
    response = httpx.get(
        f"{gateway.url}/admin/v1/credentials",
        params={"provider": "fake"},
        headers={"Authorization": f"Bearer {gateway.admin_key}"},
        timeout=10,
    )
    assert response.status_code == 200, response.text
    (found,) = [c for c in response.json()["credentials"] if c["credential_id"] == credential_id]
    return dict(found)


def test_a_credentials_listing_shows_its_window_usage_and_this_months_ledger_totals(gateway: Gateway) -> None:
    created = httpx.post(
        f"{gateway.url}/admin/v1/credentials",
        headers={"Authorization": f"Bearer {gateway.key}"},
        json={
            "provider": "fake",
            "name": "e2e usage",
            "limits": [{"unit": "UNIT_REQUESTS", "window": "WINDOW_DAY", "limit": 1000}],
            # The upstream's own key, so that other tests of this session are served the same.
            "secret": {"api_key": "upstream-secret"},
        },
        timeout=10,
    )
    assert created.status_code == 200, created.text
    credential_id = created.json()["credential"]["credential_id"]
    try:
        # The providers service may hold this tenant's "no credentials" from an earlier test for its
        # cache TTL: call until the new credential has served one.
        deadline = time.monotonic() + 30
        while True:
            gateway.client().chat.completions.create(model="fake:plain", messages=HELLO)  # type: ignore[arg-type]
            windows = _listed(gateway, credential_id)["window_usage"]
            if int(windows[0].get("used", 0)) >= 1 or time.monotonic() > deadline:
                break
            time.sleep(0.5)
        served = int(windows[0]["used"])
        assert served >= 1
        # The router's spool sends usage to metering shortly after the call.
        while True:
            listed = _listed(gateway, credential_id)
            month = listed.get("month_usage", {})
            if int(month.get("requests", 0)) >= served or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        (window,) = listed["window_usage"]
        assert (int(window["used"]), int(window["remaining"])) == (served, 1000 - served)
        assert int(month["requests"]) == served and int(month["prompt_tokens"]) > 0
    finally:
        httpx.delete(
            f"{gateway.url}/admin/v1/credentials/{credential_id}",
            headers={"Authorization": f"Bearer {gateway.admin_key}"},
            timeout=10,
        )
