"""The web console in headless Chromium against a live pgplane and real PostgreSQL: sign-in,
the Users & Databases tab (add, reset, delete, checked on the target), connection details and
their pickers, what tokens with fewer scopes see, hostile names, and API errors on screen."""

import os
import urllib.parse

import psycopg
import pytest
from selenium.common.exceptions import NoAlertPresentException
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.support import expected_conditions as EC
from selenium.webdriver.support.ui import Select

from conftest import ENV, api, cluster_path, login, more, open_menu, open_tab, row, row_status, sign_in, unique, wait

MASK = "••••••••"


def primary_password():
    status, body = api("GET", cluster_path())
    assert status == 200, body
    return body["database"]["connection"]["password"]


def alert_text(driver, css):
    box = wait(driver, EC.visibility_of_element_located((By.CSS_SELECTOR, css)))
    return box.text


def test_a_bad_token_is_refused_and_not_kept(browser):
    browser.get(f"{ENV['PGPLANE_API_URL']}/")
    wait(browser, EC.element_to_be_clickable((By.ID, "token"))).send_keys("dop_v1_" + "0" * 64 + Keys.ENTER)
    assert "not accepted" in alert_text(browser, "#sign-in .alert")
    assert browser.execute_script("return sessionStorage.getItem('pgplane.token')") is None
    assert not browser.find_element(By.ID, "sign-out").is_displayed()


def test_a_good_token_signs_in_for_the_session_only_and_sign_out_forgets_it(browser):
    sign_in(browser)
    cluster = wait(browser, EC.visibility_of_element_located((By.CSS_SELECTOR, f"tr[data-cluster='{ENV['PGPLANE_CLUSTER_ID']}']")))
    assert f"c-{ENV['PGPLANE_SUFFIX']}" in cluster.text and "PostgreSQL 15" in cluster.text and "online" in cluster.text
    assert ENV["PGPLANE_TOKEN"] not in browser.current_url
    assert browser.execute_script("return sessionStorage.getItem('pgplane.token')") == ENV["PGPLANE_TOKEN"]
    assert browser.execute_script("return localStorage.length") == 0
    browser.find_element(By.ID, "sign-out").click()
    wait(browser, EC.visibility_of_element_located((By.ID, "token")))
    assert browser.execute_script("return sessionStorage.getItem('pgplane.token')") is None


def test_add_reset_and_delete_a_user_with_effects_on_the_target(browser, target):
    name = unique("app")
    sign_in(browser)
    open_tab(browser, "users")
    field = wait(browser, EC.element_to_be_clickable((By.ID, "new-user")))
    field.send_keys(name)
    browser.find_element(By.CSS_SELECTOR, "form[data-add=user] button[type=submit]").click()
    wait(browser, lambda d: row_status(d, "user", name) == "ready")
    assert "normal" in row(browser, "user", name).text

    tr = row(browser, "user", name)
    assert tr.find_element(By.CSS_SELECTOR, "code.password").text == MASK
    tr.find_element(By.CSS_SELECTOR, "button.show-password").click()
    old = row(browser, "user", name).find_element(By.CSS_SELECTOR, "code.password").text
    assert old and old != MASK
    login(name, old).close()

    dialog = more(browser, "user", name, "Reset password")
    assert name in dialog.text and "stops working" in dialog.text
    dialog.find_element(By.CSS_SELECTOR, "[data-confirm]").click()
    new = wait(browser, EC.visibility_of_element_located((By.CSS_SELECTOR, "dialog[open] code.new-password"))).text
    assert new and new != old
    browser.save_screenshot(os.path.join(ENV["PGPLANE_SCREENSHOTS"], "new_password_shown_once.png"))
    browser.find_element(By.CSS_SELECTOR, "dialog[open] button.primary").click()
    with pytest.raises(psycopg.OperationalError):
        login(name, old)
    login(name, new).close()

    dialog = more(browser, "user", name, "Delete")
    assert f"Delete the user {name}?" in dialog.text
    dialog.find_element(By.CSS_SELECTOR, "[data-confirm]").click()
    wait(browser, lambda d: row(d, "user", name) is None)
    assert target.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (name,)).fetchone() is None


def test_add_and_delete_a_database_with_effects_on_the_target(browser, target):
    name = unique("appdb")
    sign_in(browser)
    open_tab(browser, "users")
    wait(browser, EC.element_to_be_clickable((By.ID, "new-database"))).send_keys(name + Keys.ENTER)
    wait(browser, lambda d: row_status(d, "db", name) == "ready")
    assert target.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone() == (1,)

    dialog = more(browser, "db", name, "Delete")
    assert f"Delete the database {name}?" in dialog.text
    dialog.find_element(By.CSS_SELECTOR, "[data-confirm]").click()
    wait(browser, lambda d: row(d, "db", name) is None)
    assert target.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone() is None


def test_the_primary_user_and_the_default_database_have_no_delete(browser):
    other = unique("other")
    assert api("POST", cluster_path("/users"), {"name": other})[0] == 201
    sign_in(browser)
    open_tab(browser, "users")
    wait(browser, lambda d: row(d, "user", other) and row(d, "db", ENV["PGPLANE_DEFAULT_DB"]))
    primary = row(browser, "user", ENV["PGPLANE_PRIMARY_USER"])
    assert "primary" in primary.text
    # Its menu offers its settings only: no delete, no password reset here.
    assert [b.text for b in open_menu(browser, "user", ENV["PGPLANE_PRIMARY_USER"])] == ["Edit settings"]
    assert row(browser, "db", ENV["PGPLANE_DEFAULT_DB"]).find_elements(By.CSS_SELECTOR, "button.more") == []
    assert row(browser, "user", other).find_elements(By.CSS_SELECTOR, "button.more") != []


def test_the_connection_pickers_show_the_picked_user_and_database(browser):
    user, db = unique("picked"), unique("pickeddb")
    status, created = api("POST", cluster_path("/users"), {"name": user})
    assert status == 201, created
    assert api("POST", cluster_path("/dbs"), {"name": db})[0] == 201
    password = created["user"]["password"]
    sign_in(browser)
    open_tab(browser, "overview")
    uri = lambda d: d.find_element(By.CSS_SELECTOR, "[data-shape=uri] code").text
    wait(browser, lambda d: ENV["PGPLANE_PRIMARY_USER"] in uri(d))
    for shape in ("uri", "psql", "jdbc"):
        assert browser.find_elements(By.CSS_SELECTOR, f"[data-shape={shape}] button.copy")
    Select(browser.find_element(By.ID, "pick-user")).select_by_value(user)
    Select(browser.find_element(By.ID, "pick-db")).select_by_value(db)
    assert f"{user}:{MASK}@" in uri(browser) and f"/{db}?sslmode=" in uri(browser)
    assert password not in browser.page_source
    browser.find_element(By.ID, "show-password").click()
    shown = uri(browser)
    assert f"{urllib.parse.quote(user, safe='')}:{urllib.parse.quote(password, safe='')}@" in shown
    psql = browser.find_element(By.CSS_SELECTOR, "[data-shape=psql] code").text
    jdbc = browser.find_element(By.CSS_SELECTOR, "[data-shape=jdbc] code").text
    assert f"-U {user}" in psql and f"-d {db}" in psql
    assert jdbc.startswith("jdbc:postgresql://") and f"/{db}?user={user}&password=" in jdbc
    params = browser.find_element(By.CSS_SELECTOR, "[data-field=password] code").text
    assert params == password
    # The URI the console shows is one a client can connect with.
    with psycopg.connect(shown, connect_timeout=5) as conn:
        assert conn.execute("SELECT current_user, current_database()").fetchone() == (user, db)


def test_a_read_only_token_sees_no_write_action_and_no_password(browser):
    other = unique("seen")
    assert api("POST", cluster_path("/users"), {"name": other})[0] == 201
    sign_in(browser, ENV["PGPLANE_READ_ONLY_TOKEN"])
    open_tab(browser, "users")
    wait(browser, lambda d: row(d, "user", other))
    assert browser.find_elements(By.CSS_SELECTOR, "form.add") == []
    assert browser.find_elements(By.CSS_SELECTOR, "button.more") == []
    assert browser.find_elements(By.CSS_SELECTOR, "code.password") == []
    open_tab(browser, "overview")
    wait(browser, EC.visibility_of_element_located((By.ID, "no-credentials")))
    assert browser.find_elements(By.ID, "show-password") == []
    assert primary_password() not in browser.page_source


def test_a_token_without_view_credentials_sees_no_password_anywhere(browser):
    sign_in(browser, ENV["PGPLANE_NO_CREDENTIALS_TOKEN"])
    open_tab(browser, "users")
    wait(browser, EC.element_to_be_clickable((By.ID, "new-user")))
    wait(browser, lambda d: row(d, "user", ENV["PGPLANE_PRIMARY_USER"]))
    assert browser.find_elements(By.CSS_SELECTOR, "code.password") == []
    assert primary_password() not in browser.page_source
    open_tab(browser, "overview")
    uri = wait(browser, EC.visibility_of_element_located((By.CSS_SELECTOR, "[data-shape=uri] code"))).text
    assert uri.startswith(f"postgresql://{ENV['PGPLANE_PRIMARY_USER']}@"), uri
    assert browser.find_elements(By.CSS_SELECTOR, "[data-field=password]") == []
    assert "PGPASSWORD" not in browser.page_source and "password=" not in browser.page_source
    assert primary_password() not in browser.page_source


def test_a_hostile_user_name_shows_as_text(browser):
    name = "<img src=x onerror=alert(1)>" + ENV["PGPLANE_SUFFIX"]
    status, body = api("POST", cluster_path("/users"), {"name": name})
    assert status == 201, body
    sign_in(browser)
    open_tab(browser, "users")
    tr = wait(browser, lambda d: row(d, "user", name))
    assert tr.find_element(By.CSS_SELECTOR, "td.name").text == name
    assert browser.find_elements(By.CSS_SELECTOR, "main img") == []
    open_tab(browser, "overview")
    picker = wait(browser, EC.visibility_of_element_located((By.ID, "pick-user")))
    assert name in [o.text for o in Select(picker).options]
    assert browser.find_elements(By.CSS_SELECTOR, "img") == []
    with pytest.raises(NoAlertPresentException):
        browser.switch_to.alert.text


def test_api_errors_are_shown_where_they_happened(browser, target):
    taken = unique("taken")
    target.execute(f'CREATE ROLE "{taken}"')
    sign_in(browser)
    open_tab(browser, "users")
    field = wait(browser, EC.element_to_be_clickable((By.ID, "new-user")))
    field.send_keys("postgres" + Keys.ENTER)
    assert "reserved" in alert_text(browser, "form[data-add=user] .alert")
    field.clear()
    field.send_keys(taken + Keys.ENTER)
    wait(browser, lambda d: "Conflict" in d.find_element(By.CSS_SELECTOR, "form[data-add=user] .alert").text)
    assert row(browser, "user", taken) is None
    assert target.execute("SELECT rolcanlogin FROM pg_roles WHERE rolname = %s", (taken,)).fetchone() == (False,)


def test_drift_unmanaged_roles_and_the_audit_log_are_shown(browser, target):
    loose, audited = unique("loose"), unique("audited")
    target.execute(f'CREATE ROLE "{loose}"')
    assert api("POST", cluster_path("/users"), {"name": audited})[0] == 201
    sign_in(browser)
    open_tab(browser, "insights")
    wait(browser, lambda d: loose in [li.text for li in d.find_elements(By.CSS_SELECTOR, "#unmanaged li")])
    wait(browser, lambda d: d.find_elements(By.CSS_SELECTOR, "#drift table, #drift .empty"))
    assert browser.find_element(By.CSS_SELECTOR, "#unmanaged").text.count(audited) == 0
    browser.execute_script("location.hash = '#/audit'")
    wait(browser, lambda d: any(audited in r.text for r in d.find_elements(By.CSS_SELECTOR, "main tbody tr")))


def test_a_narrow_window_and_the_keyboard_alone_are_enough(browser, target):
    name = unique("keyed")
    browser.set_window_size(380, 900)
    sign_in(browser)
    open_tab(browser, "users")
    wait(browser, lambda d: row(d, "user", ENV["PGPLANE_PRIMARY_USER"]))
    assert browser.execute_script("return document.documentElement.scrollWidth <= window.innerWidth + 1")
    # Add a user, open its More menu and delete it with the keyboard only.
    field = browser.find_element(By.ID, "new-user")
    field.click()
    field.send_keys(name + Keys.ENTER)
    button = wait(browser, lambda d: row(d, "user", name) and row(d, "user", name).find_element(By.CSS_SELECTOR, "button.more"))
    browser.execute_script("arguments[0].focus()", button)
    button.send_keys(Keys.ENTER)
    focused = browser.switch_to.active_element
    assert focused.text == "Reset password"
    # Escape closes the menu back on its button; Down opens it again.
    focused.send_keys(Keys.ESCAPE)
    assert browser.find_elements(By.CSS_SELECTOR, "[role=menu]") == []
    assert browser.switch_to.active_element.get_attribute("aria-haspopup") == "menu"
    browser.switch_to.active_element.send_keys(Keys.ARROW_DOWN)
    browser.switch_to.active_element.send_keys(Keys.ARROW_DOWN)
    focused = browser.switch_to.active_element
    assert focused.text == "Delete"
    focused.send_keys(Keys.ENTER)
    wait(browser, EC.visibility_of_element_located((By.CSS_SELECTOR, "dialog[open]")))
    assert browser.switch_to.active_element.text == "Cancel"
    browser.switch_to.active_element.send_keys(Keys.TAB)
    assert browser.switch_to.active_element.get_attribute("data-confirm") is not None
    browser.switch_to.active_element.send_keys(Keys.ENTER)
    wait(browser, lambda d: row(d, "user", name) is None)
    assert browser.find_elements(By.CSS_SELECTOR, "dialog[open]") == []
    assert target.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (name,)).fetchone() is None
