"""Seeing before doing, in headless Chromium against a live pgplane and real PostgreSQL: a
user's Delete confirmation shows what it owns, per database, and hands it to the heir chosen
there (checked on the target); the cluster's Plan tab shows the drift the next pass would put
back, with its SQL and no password (the app runs without resyncs, so nothing repairs it first)."""

import psycopg
from selenium.webdriver.common.by import By
from selenium.webdriver.support import expected_conditions as EC
from selenium.webdriver.support.ui import Select

from conftest import ENV, api, cluster_path, login, more, open_tab, row, row_status, sign_in, unique, wait


def test_the_delete_confirmation_previews_what_the_user_owns_and_hands_it_to_the_heir(browser, target):
    owner, heir = unique("owner"), unique("heir")
    status, body = api("POST", cluster_path("/users"), {"name": owner})
    assert status == 201, body
    password = body["user"]["password"]
    assert api("POST", cluster_path("/users"), {"name": heir})[0] == 201
    with login(ENV["PGPLANE_TARGET_ADMIN_USER"], ENV["PGPLANE_TARGET_ADMIN_PASSWORD"]) as admin:
        admin.execute(f'GRANT CREATE ON SCHEMA public TO "{owner}"')
    with login(owner, password) as conn:
        conn.execute("CREATE TABLE console_owned (id int)")

    sign_in(browser)
    open_tab(browser, "users")
    wait(browser, lambda d: row_status(d, "user", heir) == "ready")
    dialog = more(browser, "user", owner, "Delete")
    item = wait(browser, EC.visibility_of_element_located(
        (By.CSS_SELECTOR, f"#dependency-preview li[data-database='{ENV['PGPLANE_DEFAULT_DB']}']")))
    assert "1 table (public.console_owned)" in item.text
    assert "It owns objects on the server" in dialog.text
    Select(dialog.find_element(By.ID, "heir")).select_by_value(heir)
    dialog.find_element(By.CSS_SELECTOR, "[data-confirm]").click()
    wait(browser, lambda d: row(d, "user", owner) is None)
    assert target.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (owner,)).fetchone() is None
    with login(ENV["PGPLANE_TARGET_ADMIN_USER"], ENV["PGPLANE_TARGET_ADMIN_PASSWORD"]) as admin:
        owner_now = admin.execute("SELECT tableowner FROM pg_tables WHERE tablename = 'console_owned'").fetchone()
    assert owner_now == (heir,)


def test_the_plan_tab_shows_the_drift_the_next_pass_would_repair(browser, target):
    name = unique("drifter")
    status, body = api("POST", cluster_path("/users"), {"name": name})
    assert status == 201, body
    sign_in(browser)
    open_tab(browser, "plan")
    wait(browser, EC.visibility_of_element_located((By.CSS_SELECTOR, "#plan .empty")))

    target.execute(f'ALTER ROLE "{name}" CREATEDB')
    browser.find_element(By.ID, "replan").click()
    step = wait(browser, EC.visibility_of_element_located((By.CSS_SELECTOR, f"#plan li[data-step='user:{name}']")))
    assert "alter role" in step.text and "drift: CREATEDB was granted" in step.text
    sql = step.find_element(By.CSS_SELECTOR, "pre").text
    assert f'ALTER ROLE "{name}" WITH NOCREATEDB INHERIT' in sql
    assert "SCRAM-SHA-256$" not in browser.page_source and body["user"]["password"] not in browser.page_source
    # Looking changed nothing.
    assert target.execute("SELECT rolcreatedb FROM pg_roles WHERE rolname = %s", (name,)).fetchone() == (True,)
