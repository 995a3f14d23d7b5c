"""Connection pools and trusted sources in headless Chromium against a live pgplane, its pooler
(PgBouncer, started by tests/e2e/console.rs) and real PostgreSQL: a pool added in its tab turns
ready, its connection string (masked until shown) logs in through PgBouncer, a pool without a
user lets each client log in as itself, Delete needs the pool's name typed and stops the pool;
trusted sources added and removed in their tab are enforced at the pooler, and the server's
pg_hba.conf is shown as reported, not enforced."""

import time

import psycopg
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.support import expected_conditions as EC
from selenium.webdriver.support.ui import Select

from conftest import ENV, api, cluster_path, more, open_tab, row, row_status, sign_in, unique, wait

MASK = "••••••••"
POOLER_PORT = int(ENV["PGPLANE_POOLER_PORT"])


def add_pool(driver, name, mode, size, user=""):
    """Adds a pool in the Pools tab and waits until its pooler runs it."""
    open_tab(driver, "pools")
    field = wait(driver, EC.element_to_be_clickable((By.ID, "new-pool")))
    Select(driver.find_element(By.ID, "new-pool-mode")).select_by_value(mode)
    size_field = driver.find_element(By.ID, "new-pool-size")
    size_field.clear()
    size_field.send_keys(str(size))
    Select(driver.find_element(By.ID, "new-pool-user")).select_by_value(user)
    field.send_keys(name + Keys.ENTER)
    wait(driver, lambda d: row_status(d, "pool", name) == "ready", timeout=30)


def shown_uri(driver, pool):
    """The connection string shown for `pool`, once it is the one shown."""
    section = wait(driver, lambda d: d.find_element(By.CSS_SELECTOR, f"[data-pool-uri='{pool}']"))
    return section.find_element(By.CSS_SELECTOR, "code").text


def connects(uri=None, **params):
    """Whether a login through the pool works now (and who it is)."""
    try:
        with psycopg.connect(uri or "", connect_timeout=5, **params) as conn:
            return conn.execute("SELECT current_user, current_database()").fetchone()
    except psycopg.OperationalError:
        return None


def eventually(check, timeout=20):
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "it did not happen in time"
        time.sleep(0.2)


def test_a_pool_is_added_served_connected_to_and_deleted_by_its_typed_name(browser):
    name, primary = unique("tx-pool"), ENV["PGPLANE_PRIMARY_USER"]
    sign_in(browser)
    add_pool(browser, name, "transaction", 3, primary)
    cells = [td.text for td in row(browser, "pool", name).find_elements(By.CSS_SELECTOR, "td")]
    assert cells[:5] == [name, "transaction", "3", ENV["PGPLANE_DEFAULT_DB"], primary], cells

    masked = shown_uri(browser, name)
    assert MASK in masked and f"@127.0.0.1:{POOLER_PORT}/{name}?sslmode=disable" in masked, masked
    assert browser.find_elements(By.CSS_SELECTOR, "[data-pool-uri] button.copy")
    browser.find_element(By.ID, "show-pool-password").click()
    uri = shown_uri(browser, name)
    assert uri == api("GET", cluster_path(f"/pools/{name}"))[1]["pool"]["connection"]["uri"]
    assert connects(uri) == (primary, ENV["PGPLANE_DEFAULT_DB"])

    dialog = more(browser, "pool", name, "Delete")
    assert f"Delete the pool {name}?" in dialog.text
    confirm = dialog.find_element(By.CSS_SELECTOR, "[data-confirm]")
    typed = dialog.find_element(By.ID, "type-to-confirm")
    assert browser.switch_to.active_element == typed and not confirm.is_enabled()
    typed.send_keys(name[:-1])
    assert not confirm.is_enabled()
    typed.send_keys(name[-1])
    assert confirm.is_enabled()
    confirm.click()
    wait(browser, lambda d: row(d, "pool", name) is None)
    assert api("GET", cluster_path(f"/pools/{name}"))[0] == 404
    eventually(lambda: connects(uri) is None)


def test_a_pool_without_a_user_lets_each_client_log_in_as_itself_and_errors_show(browser):
    name, user = unique("own-pool"), unique("pooled")
    status, body = api("POST", cluster_path("/users"), {"name": user})
    assert status == 201, body
    password = body["user"]["password"]
    sign_in(browser)
    open_tab(browser, "pools")
    field = wait(browser, EC.element_to_be_clickable((By.ID, "new-pool")))
    field.send_keys("Not A Pool" + Keys.ENTER)
    alert = wait(browser, EC.visibility_of_element_located((By.CSS_SELECTOR, "form[data-add=pool] .alert")))
    assert "is invalid" in alert.text, alert.text
    field.clear()
    add_pool(browser, name, "session", 2)
    assert "each client's own" in row(browser, "pool", name).text
    assert shown_uri(browser, name).startswith(f"postgresql://@127.0.0.1:{POOLER_PORT}/{name}?")
    assert "Each client logs in as itself" in browser.find_element(By.ID, "pool-connection").text
    assert connects(host="127.0.0.1", port=POOLER_PORT, dbname=name, user=user, password=password) == (
        user, ENV["PGPLANE_DEFAULT_DB"])


def test_trusted_sources_are_added_and_removed_and_enforced_at_the_pooler(browser):
    pool, primary = unique("src-pool"), ENV["PGPLANE_PRIMARY_USER"]
    status, body = api("POST", cluster_path("/pools"), {"name": pool, "mode": "transaction", "size": 2,
                                                        "db": ENV["PGPLANE_DEFAULT_DB"], "user": primary})
    assert status == 201, body
    uri = body["pool"]["connection"]["uri"]
    eventually(lambda: connects(uri) is not None)

    sign_in(browser)
    open_tab(browser, "sources")
    summary = lambda d: d.find_element(By.ID, "rules-summary").text
    wait(browser, lambda d: "from any address" in summary(d))
    enforcement = browser.find_element(By.ID, "enforcement").text
    assert "Enforced" in enforcement and "at the pooler" in enforcement and "Only reported" in enforcement
    field = browser.find_element(By.ID, "new-source")
    field.send_keys("not-an-address" + Keys.ENTER)
    alert = wait(browser, EC.visibility_of_element_located((By.CSS_SELECTOR, "form[data-add=source] .alert")))
    assert "is not an IP address" in alert.text, alert.text
    field.clear()
    field.send_keys("10.9.8.7/24" + Keys.ENTER)
    wait(browser, lambda d: row(d, "rule", "10.9.8.0/24"))
    assert "only from the address or network below" in summary(browser)
    rules = api("GET", cluster_path("/firewall"))[1]
    assert [r["value"] for r in rules["rules"]] == ["10.9.8.0/24"]
    eventually(lambda: connects(uri) is None)

    # The server's own pg_hba.conf: what the API read of it, shown as it is.
    hba = rules["pgplane"]["server_hba"]
    if not hba["readable"]:
        assert hba["reason"] in browser.find_element(By.ID, "hba-unreadable").text
    elif not hba["open_entries"]:
        assert browser.find_element(By.ID, "hba-closed").is_displayed()
    for entry in hba["open_entries"]:
        line = browser.find_element(By.CSS_SELECTOR, f"tr[data-hba-line='{entry['line_number']}']")
        assert entry["auth_method"] in line.text and entry["findings"][0] in line.text

    dialog = more(browser, "rule", "10.9.8.0/24", "Remove")
    assert "the last one" in dialog.text and "any address" in dialog.text
    dialog.find_element(By.CSS_SELECTOR, "[data-confirm]").click()
    wait(browser, lambda d: row(d, "rule", "10.9.8.0/24") is None and "from any address" in summary(d))
    assert api("GET", cluster_path("/firewall"))[1]["rules"] == []
    eventually(lambda: connects(uri) is not None)
