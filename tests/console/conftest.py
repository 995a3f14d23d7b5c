"""Fixtures of the console's browser suite: a headless Chromium (no sandbox, no network beyond
loopback, a fresh profile per test) driven by Selenium against the pgplane that
tests/e2e/console.rs started, the API for setting up, and the target for checking effects. Each
test leaves a PNG screenshot of what it saw in $PGPLANE_SCREENSHOTS."""

import json
import os
import tempfile
import urllib.error
import urllib.request

import psycopg
import pytest
from selenium import webdriver
from selenium.common.exceptions import StaleElementReferenceException
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support import expected_conditions as EC
from selenium.webdriver.support.ui import WebDriverWait

ENV = os.environ
BASE = ENV["PGPLANE_API_URL"]
CLUSTER = ENV["PGPLANE_CLUSTER_ID"]

CHROMIUM_FLAGS = [
    "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--no-first-run", "--no-default-browser-check", "--disable-default-apps", "--disable-extensions",
    "--disable-quic", "--no-proxy-server", "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1, EXCLUDE localhost",
    "--window-size=1280,1000",
]


def unique(base):
    return f"{base}_{ENV['PGPLANE_SUFFIX']}"


def api(method, path, body=None, token=None):
    """Calls the API (for setting up and for reading what the console should show)."""
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(f"{BASE}{path}", data=data, method=method)
    request.add_header("Authorization", f"Bearer {token or ENV['PGPLANE_TOKEN']}")
    if data is not None:
        request.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            raw = response.read()
            return response.status, (json.loads(raw) if raw else None)
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read() or b"null")


def cluster_path(rest=""):
    return f"/v2/databases/{CLUSTER}{rest}"


def login(user, password, dbname=None):
    """Logs in to the target; returns the connection (caller closes it)."""
    return psycopg.connect(host=ENV["PGPLANE_TARGET_HOST"], port=int(ENV["PGPLANE_TARGET_PORT"]), user=user,
                           password=password, dbname=dbname or ENV["PGPLANE_DEFAULT_DB"], connect_timeout=5)


@pytest.fixture
def target():
    """A superuser session on the target (autocommit)."""
    conn = login(ENV["PGPLANE_TARGET_ADMIN_USER"], ENV["PGPLANE_TARGET_ADMIN_PASSWORD"], "postgres")
    conn.autocommit = True
    yield conn
    conn.close()


@pytest.fixture
def browser(request):
    options = webdriver.ChromeOptions()
    options.binary_location = ENV["PGPLANE_CHROMIUM"]
    profile = tempfile.TemporaryDirectory(prefix="pgplane-chromium-")
    for flag in CHROMIUM_FLAGS + [f"--user-data-dir={profile.name}"]:
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(executable_path=ENV["PGPLANE_CHROMEDRIVER"]), options=options)
    driver.set_page_load_timeout(30)
    yield driver
    try:
        driver.save_screenshot(os.path.join(ENV["PGPLANE_SCREENSHOTS"], f"{request.node.name}.png"))
        # The page never broke its own policy and never threw (refused API calls are logged by
        # Chromium as failed loads; those are expected).
        broken = [e["message"] for e in driver.get_log("browser")
                  if "Content Security Policy" in e["message"] or "Uncaught" in e["message"]]
        assert broken == [], broken
    finally:
        driver.quit()
        profile.cleanup()


def wait(driver, condition, timeout=20):
    return WebDriverWait(driver, timeout).until(condition)


def sign_in(driver, token=None):
    """Opens the console and signs in with `token` (the full-access one by default)."""
    driver.get(f"{BASE}/")
    field = wait(driver, EC.element_to_be_clickable((By.ID, "token")))
    field.send_keys(token or ENV["PGPLANE_TOKEN"])
    driver.find_element(By.CSS_SELECTOR, "#sign-in button[type=submit]").click()
    wait(driver, EC.visibility_of_element_located((By.ID, "sign-out")))


def open_tab(driver, tab):
    """Goes to one of the cluster's tabs (a hash change: no reload)."""
    driver.execute_script("location.hash = arguments[0]", f"#/clusters/{CLUSTER}/{tab}")


def row(driver, kind, name):
    """The table row of a user or database (None when absent); names are compared exactly."""
    for tr in driver.find_elements(By.CSS_SELECTOR, f"tr[data-{kind}]"):
        try:
            if tr.get_attribute(f"data-{kind}") == name:
                return tr
        except Exception:  # the table was re-rendered under us
            return None
    return None


def row_status(driver, kind, name):
    tr = row(driver, kind, name)
    if tr is None:
        return None
    try:
        return tr.find_element(By.CSS_SELECTOR, "[data-status]").get_attribute("data-status")
    except Exception:
        return None


def open_menu(driver, kind, name):
    """Opens a row's More menu (a layer over the page, not inside the row); returns its items."""
    for attempt in range(3):
        tr = wait(driver, lambda d: row(d, kind, name))
        try:
            tr.find_element(By.CSS_SELECTOR, "button.more").click()
            break
        except StaleElementReferenceException:
            # The page rebuilt its rows (a refresh) between finding the row and the click: a
            # person clicks again.
            if attempt == 2:
                raise
    menu = wait(driver, EC.visibility_of_element_located((By.CSS_SELECTOR, "[role=menu]")))
    return menu.find_elements(By.CSS_SELECTOR, "[role=menuitem]")


def more(driver, kind, name, item):
    """Opens a row's More menu and picks `item`; returns the dialog it opens."""
    menu_item = next(b for b in open_menu(driver, kind, name) if b.text == item)
    menu_item.click()
    return wait(driver, EC.visibility_of_element_located((By.CSS_SELECTOR, "dialog[open]")))
