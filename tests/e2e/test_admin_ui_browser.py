"""The admin UI in a real headless browser (Debian's chromium + chromium-driver, driven by selenium)
against the real suite: sign in with the admin key, create a tenant and a key through the pages,
read the once-shown secret, chat with it, and see that request's usage on the usage page.
"""

from __future__ import annotations

import os
import secrets
import shutil
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.e2e.conftest import Gateway

pytestmark = pytest.mark.e2e

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")
USAGE_DEADLINE_S = 30.0
# A shared, loaded machine can take seconds for one page; a page that never comes still fails.
PAGE_DEADLINE_S = 30


@pytest.fixture
def browser() -> Iterator[object]:
    """A headless chromium; skipped only where it is not installed, never in CI."""
    if CHROMIUM is None or CHROMEDRIVER is None:
        reason = "chromium and chromium-driver are not installed (make test-deps installs them from Debian)"
        if os.environ.get("CI"):
            pytest.fail(reason)
        pytest.skip(reason)
    webdriver = pytest.importorskip("selenium.webdriver")
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu", "--no-first-run"):
        options.add_argument(argument)
    # Both paths given: selenium-manager is never asked to find or download anything.
    driver = webdriver.Chrome(options=options, service=Service(executable_path=CHROMEDRIVER))
    driver.set_page_load_timeout(PAGE_DEADLINE_S)
    try:
        yield driver
    finally:
        driver.quit()


def test_an_admin_creates_a_tenant_and_a_key_and_sees_its_request_on_the_usage_page(
    gateway: Gateway, browser: object
) -> None:
    from selenium.common.exceptions import TimeoutException
    from selenium.webdriver.common.by import By
    from selenium.webdriver.remote.webdriver import WebDriver
    from selenium.webdriver.support import expected_conditions
    from selenium.webdriver.support.wait import WebDriverWait

    assert isinstance(browser, WebDriver)
    driver = browser

    # A click that submits a form returns before the next page may have loaded: wait for it, and
    # say where the browser is instead when it does not come.
    def arrive(condition: object) -> None:
        try:
            WebDriverWait(driver, PAGE_DEADLINE_S).until(condition)  # type: ignore[arg-type]
        except TimeoutException:
            errors = [e.text for e in driver.find_elements(By.ID, "error")]
            pytest.fail(f"the browser stayed at {driver.current_url} (errors shown: {errors})")

    ui = f"{gateway.url}/ui"
    tenant = f"ui-{secrets.token_hex(4)}"

    driver.get(f"{ui}/")
    assert driver.current_url.endswith("/ui/login")
    driver.find_element(By.ID, "key").send_keys(gateway.admin_key)
    driver.find_element(By.ID, "sign-in").click()
    arrive(expected_conditions.url_contains("/ui/tenants"))
    assert driver.find_element(By.ID, "role").text == "admin"
    # HttpOnly: the page's scripts cannot read the key.
    assert gateway.admin_key not in str(driver.execute_script("return document.cookie"))

    driver.find_element(By.ID, "tenant-id").send_keys(tenant)
    driver.find_element(By.ID, "tenant-name").send_keys("Browser test")
    driver.find_element(By.ID, "create-tenant-submit").click()
    arrive(expected_conditions.url_contains("done=tenant-created"))
    assert driver.find_element(By.ID, "notice").text == "Tenant created."
    assert driver.find_elements(By.CSS_SELECTOR, f'tr.tenant[data-tenant="{tenant}"]')

    driver.get(f"{ui}/keys?tenant={tenant}")
    driver.find_element(By.ID, "key-name").send_keys("browser")
    driver.find_element(By.ID, "create-key-submit").click()
    arrive(expected_conditions.presence_of_element_located((By.ID, "new-secret")))
    secret = driver.find_element(By.ID, "new-secret").text.strip()
    key_id = driver.find_element(By.ID, "new-key-id").text.strip()
    assert secret and key_id
    # Shown once: the listing that follows has the key, not its secret.
    driver.get(f"{ui}/keys?tenant={tenant}")
    assert driver.find_elements(By.CSS_SELECTOR, f'tr.key[data-key="{key_id}"]')
    assert secret not in driver.page_source

    answer = httpx.post(
        f"{gateway.url}/v1/chat/completions",
        headers={"authorization": f"Bearer {secret}"},
        json={"model": "fast", "messages": [{"role": "user", "content": "hello from the browser test"}]},
        timeout=30,
    )
    assert answer.status_code == 200, answer.text
    usage = answer.json()["usage"]

    # Metering records asynchronously (the router's spool): reload the page until the row is there.
    deadline = time.monotonic() + USAGE_DEADLINE_S
    rows: list[Any] = []
    while time.monotonic() < deadline:
        driver.get(f"{ui}/usage?tenant={tenant}&range=hour&metric=tokens")
        rows = driver.find_elements(By.CSS_SELECTOR, f'#usage-by-key tr.total[data-group="{key_id}"]')
        if rows:
            break
        time.sleep(0.5)
    assert rows, f"the key's usage did not appear on the usage page within {USAGE_DEADLINE_S} s"
    cells = [cell.text for cell in driver.find_elements(By.CSS_SELECTOR, f'tr.total[data-group="{key_id}"] td')]
    assert cells[:4] == [key_id, "1", str(usage["prompt_tokens"]), str(usage["completion_tokens"])]
    # The chart has the request as a bar, titled with the key and its tokens.
    bars = driver.find_elements(By.CSS_SELECTOR, "#chart-by-key rect.bar")
    assert len(bars) == 1
    title = bars[0].find_element(By.TAG_NAME, "title").get_attribute("textContent")
    assert title == f"{key_id}: {usage['total_tokens']:,} tokens"
    assert driver.find_elements(By.CSS_SELECTOR, "#usage-by-model tr.total[data-group]")

    driver.find_element(By.ID, "sign-out").click()
    arrive(expected_conditions.url_contains("/ui/login"))
    driver.get(f"{ui}/usage")
    assert driver.current_url.endswith("/ui/login")


def test_a_tenant_key_signs_in_and_the_real_services_keep_it_to_its_own_tenant(gateway: Gateway) -> None:
    """Against the real auth and router (no browser needed): auth refuses the admin pages, the
    router refuses another tenant's usage, and credentials render whether or not auth serves them."""
    with httpx.Client(base_url=f"{gateway.url}/ui", follow_redirects=False, timeout=20) as client:
        page = client.get("/login")
        token = page.text.split('name="csrf" value="', 1)[1].split('"', 1)[0]
        bad = client.post("/login", data={"csrf": token, "key": "gw-not-a-key"})
        assert bad.status_code == 401 and "gw-not-a-key" not in bad.text
        signed_in = client.post("/login", data={"csrf": token, "key": gateway.key})
        assert signed_in.status_code == 303
        assert client.get("/").headers["location"] == "/ui/usage"
        assert client.get("/usage").status_code == 200
        other = client.get("/usage", params={"tenant": "beta"})
        assert other.status_code == 403 and 'class="total"' not in other.text
        tenants = client.get("/tenants")
        assert tenants.status_code == 403 and "admin" in tenants.text and "data-tenant" not in tenants.text
        credentials = client.get("/credentials")
        assert credentials.status_code == 200
        assert "Credentials are not available" in credentials.text or 'id="credentials"' in credentials.text
        assert client.post("/tenants", data={"tenant_id": "forged"}).status_code == 403
