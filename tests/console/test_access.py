"""The console's access levels: the Users & Databases tab shows each user's level per database
and edits them (More -> Edit access), the effect checked on the target by logging in as the
user; the primary user is shown as owner and offers no editor; a read-only token sees no editor."""

import psycopg
import pytest
from selenium.webdriver.common.by import By
from selenium.webdriver.support import expected_conditions as EC
from selenium.webdriver.support.ui import Select

from conftest import ENV, api, cluster_path, login, more, open_tab, row, sign_in, unique, wait


def levels_shown(driver, name):
    tr = row(driver, "user", name)
    if tr is None:
        return None
    try:
        return {li.get_attribute("data-access-db"): li.get_attribute("data-level")
                for li in tr.find_elements(By.CSS_SELECTOR, "td.access li")}
    except Exception:  # re-rendered under us
        return None


def test_access_levels_are_shown_and_edited_with_effects_on_the_target(browser, target):
    shop, books, user = unique("shop"), unique("books"), unique("clerk")
    for db in (shop, books):
        status, body = api("POST", cluster_path("/dbs"), {"name": db})
        assert status == 201, body
    status, body = api("POST", cluster_path("/users"), {"name": user})
    assert status == 201, body
    password = body["user"]["password"]
    status, body = api("GET", cluster_path(f"/users/{ENV['PGPLANE_PRIMARY_USER']}"))
    primary_password = body["user"]["password"]
    with login(ENV["PGPLANE_PRIMARY_USER"], primary_password, shop) as owner:
        owner.execute("CREATE TABLE goods (n int)")
        owner.execute("INSERT INTO goods VALUES (1)")
        owner.commit()

    sign_in(browser)
    open_tab(browser, "users")
    wait(browser, lambda d: levels_shown(d, user) == {})
    assert "none" in row(browser, "user", user).find_element(By.CSS_SELECTOR, "td.access").text
    assert "owner" in row(browser, "user", ENV["PGPLANE_PRIMARY_USER"]).find_element(By.CSS_SELECTOR, "td.access").text

    dialog = more(browser, "user", user, "Edit access")
    Select(dialog.find_element(By.CSS_SELECTOR, f"select[data-access-db='{shop}']")).select_by_value("read_only")
    Select(dialog.find_element(By.CSS_SELECTOR, f"select[data-access-db='{books}']")).select_by_value("read_write")
    dialog.find_element(By.CSS_SELECTOR, "[data-confirm]").click()
    wait(browser, lambda d: levels_shown(d, user) == {shop: "read_only", books: "read_write"})

    with login(user, password, shop) as conn:
        assert conn.execute("SELECT n FROM goods").fetchall() == [(1,)]
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute("INSERT INTO goods VALUES (2)")

    # Taking shop away again, in the same editor: the level is gone on screen and on the target.
    dialog = more(browser, "user", user, "Edit access")
    select = Select(dialog.find_element(By.CSS_SELECTOR, f"select[data-access-db='{shop}']"))
    assert select.first_selected_option.get_attribute("value") == "read_only"
    select.select_by_value("none")
    dialog.find_element(By.CSS_SELECTOR, "[data-confirm]").click()
    wait(browser, lambda d: levels_shown(d, user) == {books: "read_write"})
    with login(user, password, shop) as conn:
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute("SELECT n FROM goods")


def test_a_read_only_token_sees_levels_but_no_editor(browser):
    user = unique("viewer")
    status, body = api("POST", cluster_path("/users"), {"name": user, "access": [
        {"database": ENV["PGPLANE_DEFAULT_DB"], "level": "read_only"}]})
    assert status == 201, body
    sign_in(browser, ENV["PGPLANE_READ_ONLY_TOKEN"])
    open_tab(browser, "users")
    wait(browser, lambda d: levels_shown(d, user) == {ENV["PGPLANE_DEFAULT_DB"]: "read_only"})
    assert row(browser, "user", user).find_elements(By.CSS_SELECTOR, "button.more") == []
