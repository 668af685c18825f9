"""Webhook URLs: only http(s), never loopback or private targets unless allowed; the signature scheme."""

from __future__ import annotations

import hashlib
import hmac

import pytest

from gateway_common.errors import GatewayError
from services.router.jobs.webhook import check_url, sign


@pytest.mark.parametrize(
    "url",
    [
        "ftp://example.com/hook",
        "file:///etc/passwd",
        "https://",
        "http://127.0.0.1:8080/hook",
        "http://localhost/hook",
        "http://10.1.2.3/hook",
        "http://169.254.169.254/latest/meta-data",
        "http://[::1]/hook",
        "http://api.internal/hook",
        "https://example.com/" + "a" * 2100,
    ],
)
def test_refused_urls_name_webhook_url(url: str) -> None:
    with pytest.raises(GatewayError) as refused:
        check_url(url, allow_private=False)
    assert refused.value.metadata["param"] == "webhook.url"


def test_public_urls_pass_and_private_ones_only_when_allowed() -> None:
    check_url("https://hooks.example.com/jobs?x=1", allow_private=False)
    check_url("http://127.0.0.1:9999/hook", allow_private=True)
    with pytest.raises(GatewayError):
        check_url("gopher://127.0.0.1/", allow_private=True)


def test_signature_is_hmac_sha256_over_timestamp_dot_body() -> None:
    body = b'{"id":"job_1"}'
    header = sign("s3cret", body, 1700000000)
    expected = hmac.new(b"s3cret", b"1700000000." + body, hashlib.sha256).hexdigest()
    assert header == f"t=1700000000,v1={expected}"
