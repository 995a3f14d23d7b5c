"""A user that is pending (no reconciler was running when it was added) turns ready on screen
by itself once a reconciler runs, without a reload. Run by tests/e2e/console.rs, which starts
the reconciler when this test writes $PGPLANE_PENDING_MARKER."""

import pathlib

from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.support import expected_conditions as EC

from conftest import ENV, login, open_tab, row, row_status, sign_in, unique, wait


def test_a_pending_user_turns_ready_by_itself(browser):
    name = unique("later")
    sign_in(browser)
    open_tab(browser, "users")
    wait(browser, EC.element_to_be_clickable((By.ID, "new-user"))).send_keys(name + Keys.ENTER)
    wait(browser, lambda d: row_status(d, "user", name) == "pending")
    browser.execute_script("window.pgplaneSamePage = true")
    browser.save_screenshot(str(pathlib.Path(ENV["PGPLANE_SCREENSHOTS"]) / "pending_user_before_reconcile.png"))
    pathlib.Path(ENV["PGPLANE_PENDING_MARKER"]).write_text("seen")
    wait(browser, lambda d: row_status(d, "user", name) == "ready", timeout=60)
    assert browser.execute_script("return window.pgplaneSamePage") is True, "the page was reloaded"
    tr = row(browser, "user", name)
    tr.find_element(By.CSS_SELECTOR, "button.show-password").click()
    password = row(browser, "user", name).find_element(By.CSS_SELECTOR, "code.password").text
    login(name, password).close()
