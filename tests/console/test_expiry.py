"""The console's credential lifecycle: the Users & Databases tab creates a lease (the lifetime
picked beside the new user's name), shows when it ends and renews it (More -> Renew lease), gives
a user an expiry in the settings editor, and resets a password with a grace (More -> Reset
password); the effects are checked through the API and on the target (an expired user's login is
refused; during a grace both passwords log in)."""

import os
from datetime import datetime, timedelta, timezone

import psycopg
import pytest
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import Select

from conftest import ENV, api, cluster_path, login, more, open_tab, row, row_status, sign_in, unique, wait

# A minute ago, as the browser's datetime-local input takes it (its own time zone).
A_MINUTE_AGO = """
const t = new Date(Date.now() - 60000);
arguments[0].value = new Date(t.getTime() - t.getTimezoneOffset() * 60000).toISOString().slice(0, 16);
"""


def expiry_shown(driver, name):
    tr = row(driver, "user", name)
    if tr is None:
        return None
    try:
        items = tr.find_elements(By.CSS_SELECTOR, "td.settings li[data-valid-until]")
        return items[0].text if items else ""
    except Exception:  # re-rendered under us
        return None


def until(name):
    status, body = api("GET", cluster_path(f"/users/{name}"))
    assert status == 200, body
    value = body["user"]["settings"].get("valid_until")
    return body["user"], value and datetime.fromisoformat(value.replace("Z", "+00:00"))


def test_a_lease_is_created_shown_and_renewed(browser):
    name = unique("job")
    sign_in(browser)
    open_tab(browser, "users")
    field = wait(browser, lambda d: d.find_element(By.ID, "new-user"))
    field.send_keys(name)
    Select(browser.find_element(By.ID, "new-user-ttl")).select_by_value("1h")
    browser.save_screenshot(os.path.join(ENV["PGPLANE_SCREENSHOTS"], "lease_create.png"))
    browser.find_element(By.CSS_SELECTOR, "form[data-add=user] button[type=submit]").click()
    shown = wait(browser, lambda d: expiry_shown(d, name))
    assert shown.startswith("lease (1h), ends "), shown
    user, ends = until(name)
    assert user["lease"]["ttl_seconds"] == 3600
    assert timedelta(minutes=55) < ends - datetime.now(timezone.utc) <= timedelta(hours=1)
    browser.save_screenshot(os.path.join(ENV["PGPLANE_SCREENSHOTS"], "lease_shown.png"))

    dialog = more(browser, "user", name, "Renew lease")
    Select(dialog.find_element(By.ID, "renew-ttl")).select_by_value("7d")
    dialog.find_element(By.CSS_SELECTOR, "[data-confirm]").click()
    wait(browser, lambda d: (expiry_shown(d, name) or "").startswith("lease (7d)"))
    user, ends = until(name)
    assert user["lease"]["ttl_seconds"] == 7 * 86400
    assert ends - datetime.now(timezone.utc) > timedelta(days=6)


def signed_in_with_a_new_user(browser, base):
    """A new user made through the API (its name and password), and the Users & Databases tab open."""
    name = unique(base)
    status, body = api("POST", cluster_path("/users"), {"name": name})
    assert status == 201, body
    sign_in(browser)
    open_tab(browser, "users")
    return name, body["user"]["password"]


def test_an_expiry_set_in_the_settings_editor_refuses_logins_until_removed(browser):
    name, password = signed_in_with_a_new_user(browser, "temp")
    wait(browser, lambda d: expiry_shown(d, name) == "")

    dialog = more(browser, "user", name, "Edit settings")
    browser.execute_script(A_MINUTE_AGO, dialog.find_element(By.ID, "settings-valid-until"))
    dialog.find_element(By.CSS_SELECTOR, "[data-confirm]").click()
    wait(browser, lambda d: row_status(d, "user", name) == "expired")
    assert (expiry_shown(browser, name) or "").startswith("expired "), expiry_shown(browser, name)
    assert not [a for a in browser.find_elements(By.CSS_SELECTOR, "[role=alert]") if a.is_displayed() and a.text]
    browser.save_screenshot(os.path.join(ENV["PGPLANE_SCREENSHOTS"], "user_expired.png"))
    with pytest.raises(psycopg.OperationalError):
        login(name, password).close()

    dialog = more(browser, "user", name, "Edit settings")
    dialog.find_element(By.ID, "settings-valid-until").clear()
    dialog.find_element(By.CSS_SELECTOR, "[data-confirm]").click()
    wait(browser, lambda d: row_status(d, "user", name) == "ready" and expiry_shown(d, name) == "")
    login(name, password).close()

    # The primary user's editor has no expiry.
    dialog = more(browser, "user", ENV["PGPLANE_PRIMARY_USER"], "Edit settings")
    assert not dialog.find_elements(By.ID, "settings-valid-until")


def test_a_reset_with_a_grace_keeps_the_old_password_working(browser):
    name, old = signed_in_with_a_new_user(browser, "rotated")
    dialog = more(browser, "user", name, "Reset password")
    Select(dialog.find_element(By.ID, "reset-grace")).select_by_value("10m")
    browser.save_screenshot(os.path.join(ENV["PGPLANE_SCREENSHOTS"], "reset_with_grace.png"))
    dialog.find_element(By.CSS_SELECTOR, "[data-confirm]").click()
    secret = wait(browser, lambda d: next((c for c in d.find_elements(By.CSS_SELECTOR, "dialog[open] code.new-password")
                                           if c.text), None))
    new = secret.text
    assert f"logging in as {name}_alt" in browser.find_element(By.CSS_SELECTOR, "dialog[open]").text
    browser.save_screenshot(os.path.join(ENV["PGPLANE_SCREENSHOTS"], "reset_with_grace_done.png"))
    browser.find_element(By.CSS_SELECTOR, "dialog[open] button.primary").click()
    tr = wait(browser, lambda d: row(d, "user", name) if row(d, "user", name).find_elements(By.CSS_SELECTOR, "[data-grace]") else None)
    assert tr.find_element(By.CSS_SELECTOR, "[data-login]").get_attribute("data-login") == f"{name}_alt"
    browser.save_screenshot(os.path.join(ENV["PGPLANE_SCREENSHOTS"], "user_in_grace.png"))
    # Both work on the target during the grace: the old password as the user, the new as its
    # second login.
    login(name, old).close()
    login(f"{name}_alt", new).close()
