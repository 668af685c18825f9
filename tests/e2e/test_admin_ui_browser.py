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

import httpx
import pytest

from tests.e2e.conftest import Gateway

pytestmark = pytest.mark.e2e

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")
USAGE_DEADLINE_S = 30.0


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
    driver.set_page_load_timeout(20)
    try:
        yield driver
    finally:
        driver.quit()


def test_an_admin_creates_a_tenant_and_a_key_and_sees_its_request_on_the_usage_page(
    gateway: Gateway, browser: object
) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.remote.webdriver import WebDriver

    assert isinstance(browser, WebDriver)
    driver = browser
    ui = f"{gateway.url}/ui"
    tenant = f"ui-{secrets.token_hex(4)}"

    driver.get(f"{ui}/")
    assert driver.current_url.endswith("/ui/login")
    driver.find_element(By.ID, "key").send_keys(gateway.admin_key)
    driver.find_element(By.ID, "sign-in").click()
    assert driver.current_url.endswith("/ui/tenants")
    assert driver.find_element(By.ID, "role").text == "admin"
    # HttpOnly: the page's scripts cannot read the key.
    assert gateway.admin_key not in str(driver.execute_script("return document.cookie"))

    driver.find_element(By.ID, "tenant-id").send_keys(tenant)
    driver.find_element(By.ID, "tenant-name").send_keys("Browser test")
    driver.find_element(By.ID, "create-tenant-submit").click()
    assert driver.find_element(By.ID, "notice").text == "Tenant created."
    assert driver.find_elements(By.CSS_SELECTOR, f'tr.tenant[data-tenant="{tenant}"]')

    driver.get(f"{ui}/keys?tenant={tenant}")
    driver.find_element(By.ID, "key-name").send_keys("browser")
    driver.find_element(By.ID, "create-key-submit").click()
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
    rows: list[object] = []
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
    assert driver.current_url.endswith("/ui/login")
