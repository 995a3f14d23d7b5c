"""The console's user settings: the Users & Databases tab shows each user's connection limit and
session parameters and edits them (More -> Edit settings), the effect checked on the target by
logging in as the user; a refused value is shown in the dialog and changes nothing; the
primary user has the editor too."""

import os

import psycopg
import pytest
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import Select

from conftest import ENV, api, cluster_path, login, more, open_menu, open_tab, row, sign_in, unique, wait


def settings_shown(driver, name):
    tr = row(driver, "user", name)
    if tr is None:
        return None
    try:
        cell = tr.find_element(By.CSS_SELECTOR, "td.settings")
        limit = [li.get_attribute("data-limit") for li in cell.find_elements(By.CSS_SELECTOR, "li[data-limit]")]
        params = {(li.get_attribute("data-parameter-db"), li.get_attribute("data-parameter")): li.text
                  for li in cell.find_elements(By.CSS_SELECTOR, "li[data-parameter]")}
        return limit, params
    except Exception:  # re-rendered under us
        return None


def test_settings_are_shown_and_edited_with_effects_on_the_target(browser, target):
    user = unique("tuned")
    status, body = api("POST", cluster_path("/users"), {"name": user})
    assert status == 201, body
    password = body["user"]["password"]
    db = ENV["PGPLANE_DEFAULT_DB"]

    sign_in(browser)
    open_tab(browser, "users")
    wait(browser, lambda d: settings_shown(d, user) == ([], {}))
    assert "default" in row(browser, "user", user).find_element(By.CSS_SELECTOR, "td.settings").text

    dialog = more(browser, "user", user, "Edit settings")
    dialog.find_element(By.ID, "settings-limit").send_keys("2")
    dialog.find_element(By.CSS_SELECTOR, "[data-add-parameter]").click()
    dialog.find_element(By.CSS_SELECTOR, "[data-parameter-row='0'] [data-field=value]").send_keys("150ms")
    dialog.find_element(By.CSS_SELECTOR, "[data-add-parameter]").click()
    Select(dialog.find_element(By.CSS_SELECTOR, "[data-parameter-row='1'] [data-field=name]")).select_by_value("work_mem")
    dialog.find_element(By.CSS_SELECTOR, "[data-parameter-row='1'] [data-field=value]").send_keys("8MB")
    Select(dialog.find_element(By.CSS_SELECTOR, "[data-parameter-row='1'] [data-field=database]")).select_by_value(db)
    browser.save_screenshot(os.path.join(ENV["PGPLANE_SCREENSHOTS"], "settings_editor.png"))
    dialog.find_element(By.CSS_SELECTOR, "[data-confirm]").click()
    wait(browser, lambda d: settings_shown(d, user) == (["2"], {
        ("", "statement_timeout"): "statement_timeout = 150ms",
        (db, "work_mem"): f"work_mem = 8MB in {db}",
    }))
    browser.save_screenshot(os.path.join(ENV["PGPLANE_SCREENSHOTS"], "settings_shown.png"))

    # On the target: the user's sessions feel it.
    assert target.execute("SELECT rolconnlimit FROM pg_roles WHERE rolname = %s", (user,)).fetchone()[0] == 2
    with login(user, password, db) as conn:
        conn.autocommit = True
        assert conn.execute("SHOW work_mem").fetchone()[0] == "8MB"
        with pytest.raises(psycopg.errors.QueryCanceled):
            conn.execute("SELECT pg_sleep(1)")

    # A refused value: the dialog says why and stays open; nothing changes.
    dialog = more(browser, "user", user, "Edit settings")
    value = dialog.find_element(By.CSS_SELECTOR, "[data-parameter-row='0'] [data-field=value]")
    assert value.get_attribute("value") == "150ms"
    value.clear()
    value.send_keys("soon")
    dialog.find_element(By.CSS_SELECTOR, "[data-confirm]").click()
    alert = wait(browser, lambda d: next((a for a in dialog.find_elements(By.CSS_SELECTOR, "[role=alert]")
                                          if a.is_displayed() and a.text), None))
    assert 'invalid value "soon" for parameter statement_timeout' in alert.text
    browser.save_screenshot(os.path.join(ENV["PGPLANE_SCREENSHOTS"], "settings_refused.png"))
    dialog.find_element(By.CSS_SELECTOR, "button.secondary:not([data-add-parameter])").click()
    status, body = api("GET", cluster_path(f"/users/{user}"))
    assert body["user"]["settings"]["parameters"][0]["value"] == "150ms"

    # Clearing everything: no limit and no parameters, on screen and on the target.
    dialog = more(browser, "user", user, "Edit settings")
    dialog.find_element(By.ID, "settings-limit").clear()
    for remove in dialog.find_elements(By.CSS_SELECTOR, ".parameter-row button.link"):
        remove.click()
    dialog.find_element(By.CSS_SELECTOR, "[data-confirm]").click()
    wait(browser, lambda d: settings_shown(d, user) == ([], {}))
    assert target.execute("SELECT rolconnlimit FROM pg_roles WHERE rolname = %s", (user,)).fetchone()[0] == -1

    # The primary user has the editor as well (and nothing else in its menu).
    primary = ENV["PGPLANE_PRIMARY_USER"]
    assert [b.text for b in open_menu(browser, "user", primary)] == ["Edit settings"]
