"""Every menu and dialog of the console as a person sees it, at common window sizes: each row's
More menu (every row, the last one brought to the window's bottom edge) and each dialog its items
open lie inside the window, and at the centre of each menu item and dialog button is that very
item or button (document.elementFromPoint: what a click there reaches, checked without letting
Selenium scroll for us; clicks are then made there). Screenshots of each are saved under
$PGPLANE_SCREENSHOTS/layout/<width>x<height>/."""

import os

import pytest
from selenium.common.exceptions import StaleElementReferenceException, TimeoutException
from selenium.webdriver.common.action_chains import ActionChains
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.support import expected_conditions as EC

from conftest import ENV, api, cluster_path, open_tab, row, row_status, sign_in, unique, wait

SIZES = [(1280, 800), (1920, 1080), (768, 1024), (390, 844)]
# Menu items that open no dialog, and the control they bring keyboard focus to.
SHOWN_ON_THE_PAGE = {"Connection string": "pick-pool"}

# What is at the centre of an element, and whether the element is inside the window.
AT_CENTRE = """
const el = arguments[0];
const r = el.getBoundingClientRect();
const w = document.documentElement.clientWidth, h = document.documentElement.clientHeight;
const x = r.left + r.width / 2, y = r.top + r.height / 2;
const at = x >= 0 && y >= 0 && x < w && y < h ? document.elementFromPoint(x, y) : null;
return {
  hit: at !== null && (at === el || el.contains(at)),
  inside: r.left >= 0 && r.top >= 0 && r.right <= w && r.bottom <= h,
  at: at && at.outerHTML.slice(0, 160), rect: [r.left, r.top, r.right, r.bottom], window: [w, h],
};
"""


@pytest.fixture(scope="module")
def objects():
    """A user with many session parameters (a tall settings dialog), a lease, a database, a pool
    and a trusted source: every kind of row with a More menu."""
    user, lease, db, pool = unique("menu_user"), unique("menu_lease"), unique("menu_db"), unique("menu-pool")
    assert api("POST", cluster_path("/users"), {"name": user})[0] == 201
    parameters = [{"name": n, "value": v} for n, v in [("statement_timeout", "30s"), ("lock_timeout", "5s"),
                  ("idle_in_transaction_session_timeout", "1min"), ("work_mem", "64MB"),
                  ("search_path", "public"), ("idle_session_timeout", "1h")]]
    status, body = api("PUT", cluster_path(f"/users/{user}"),
                       {"settings": {"pg_allow_replication": False, "connection_limit": 5, "parameters": parameters}})
    assert status in (200, 201), body
    assert api("POST", cluster_path("/users"), {"name": lease, "ttl": "1h"})[0] == 201
    assert api("POST", cluster_path("/dbs"), {"name": db})[0] == 201
    status, body = api("POST", cluster_path("/pools"), {"name": pool, "mode": "transaction", "size": 2,
                                                        "db": ENV["PGPLANE_DEFAULT_DB"]})
    assert status == 201, body
    status, body = api("PUT", cluster_path("/firewall"), {"rules": [{"type": "ip_addr", "value": "127.0.0.0/8"}]})
    assert status == 204, body
    return {"user": user, "lease": lease, "db": db, "pool": pool, "rule": "127.0.0.0/8"}


class Looker:
    """Looks at the console in one window size, as a person: checks what is at the centre of
    each control before clicking there, and saves a screenshot of each menu and dialog."""

    def __init__(self, driver, size):
        self.driver, self.size = driver, size
        self.folder = os.path.join(ENV["PGPLANE_SCREENSHOTS"], "layout", f"{size[0]}x{size[1]}")
        os.makedirs(self.folder, exist_ok=True)

    def seen(self, element, what, whole=True):
        r = self.driver.execute_script(AT_CENTRE, element)
        assert r["hit"], f"{self.size}: a click at the centre of {what} reaches something else: {r}"
        assert r["inside"] or not whole, f"{self.size}: {what} is not wholly inside the window: {r}"

    def click(self, element, what):
        self.seen(element, what, whole=False)
        ActionChains(self.driver).move_to_element(element).click().perform()

    def shot(self, name):
        self.driver.save_screenshot(os.path.join(self.folder, f"{name}.png"))

    def open_menu(self, kind, name, to_bottom):
        """Opens the More menu of a row (scrolled into view as a person would, or to the
        window's bottom edge) and checks it and its items; returns the items' labels."""
        what = f"{kind} {name}"
        for attempt in range(3):
            try:
                tr = wait(self.driver, lambda d: row(d, kind, name))
                return self.try_open_menu(tr.find_element(By.CSS_SELECTOR, "button.more"), what, to_bottom)
            except (StaleElementReferenceException, TimeoutException):
                # The page rebuilt its rows under the pointer (the click reached no button): a
                # person clicks again.
                if attempt == 2:
                    raise
        return []

    def try_open_menu(self, button, what, to_bottom):
        block = "end" if to_bottom else "nearest"
        self.driver.execute_script(f"arguments[0].scrollIntoView({{block: '{block}', inline: 'nearest'}})", button)
        self.click(button, f"the More button of {what}")
        menu = wait(self.driver, EC.visibility_of_element_located((By.CSS_SELECTOR, "[role=menu]")), timeout=5)
        self.seen(menu, f"the menu of {what}")
        items = menu.find_elements(By.CSS_SELECTOR, "[role=menuitem]")
        for item in items:
            self.seen(item, f"{item.text!r} in the menu of {what}")
        return [item.text for item in items]

    def pick(self, label, what):
        item = next(i for i in self.driver.find_elements(By.CSS_SELECTOR, "[role=menuitem]") if i.text == label)
        self.click(item, f"{label!r} in the menu of {what}")

    def dialog(self, what):
        """The open dialog, checked: inside the window, each of its buttons (and the field to
        type a name in, if any) at its own centre."""
        dialog = wait(self.driver, EC.visibility_of_element_located((By.CSS_SELECTOR, "dialog[open]")))
        wait(self.driver, lambda d: not dialog.find_elements(By.CSS_SELECTOR, ".loading"))
        self.seen(dialog, what)
        for control in dialog.find_elements(By.CSS_SELECTOR, ".buttons button, .secret button, #type-to-confirm"):
            self.seen(control, f"{control.text or control.get_attribute('id')!r} of {what}")
        return dialog

    def cancel(self, dialog, what):
        self.click(dialog.find_element(By.CSS_SELECTOR, ".buttons button.secondary"), f"Cancel of {what}")
        wait(self.driver, lambda d: not d.find_elements(By.CSS_SELECTOR, "dialog[open]"))


def rows(driver, kind):
    """The names of the table's rows of `kind`, read in one script: the console may re-render
    the table between finding a row and reading it (a stale element)."""
    return driver.execute_script(
        "return Array.from(document.querySelectorAll(`tr[data-${arguments[0]}]`),"
        " tr => tr.getAttribute(`data-${arguments[0]}`))",
        kind,
    )


def every_menu_and_dialog(look, kind, names, shot_prefix, act=None):
    """Opens the menu of each row named (the last one at the window's bottom edge) and each
    dialog of its items; `act(label, dialog)` may do more than cancel (it returns True then)."""
    driver = look.driver
    for n, name in enumerate(names):
        what = f"{kind} {name}"
        last = n == len(names) - 1
        labels = look.open_menu(kind, name, to_bottom=last)
        look.shot(f"{shot_prefix}-{n}-menu{'-last-row-at-bottom' if last else ''}")
        ActionChains(driver).send_keys(Keys.ESCAPE).perform()
        wait(driver, lambda d: not d.find_elements(By.CSS_SELECTOR, "[role=menu]"))
        assert driver.switch_to.active_element.get_attribute("aria-haspopup") == "menu"
        for label in labels:
            look.open_menu(kind, name, to_bottom=last)
            look.pick(label, what)
            if label in SHOWN_ON_THE_PAGE:
                wait(driver, lambda d: d.switch_to.active_element.get_attribute("id") == SHOWN_ON_THE_PAGE[label])
                look.seen(driver.switch_to.active_element, f"what {label!r} of {what} shows")
                continue
            dialog = look.dialog(f"the {label!r} dialog of {what}")
            look.shot(f"{shot_prefix}-{n}-{label.lower().replace(' ', '-')}")
            if not (act and act(label, dialog)):
                look.cancel(dialog, f"the {label!r} dialog of {what}")


@pytest.mark.parametrize("size", SIZES, ids=[f"{w}x{h}" for w, h in SIZES])
def test_every_menu_and_dialog_is_seen_whole(browser, objects, size):
    browser.set_window_size(*size)
    inner = browser.execute_script("return [window.innerWidth, window.innerHeight]")
    if inner != list(size):  # the window's frame took some: make the page itself that size
        browser.set_window_size(2 * size[0] - inner[0], 2 * size[1] - inner[1])
    assert browser.execute_script("return [window.innerWidth, window.innerHeight]") == list(size)
    look = Looker(browser, size)
    sign_in(browser)

    open_tab(browser, "users")
    wait(browser, lambda d: all(row_status(d, "user", objects[k]) == "ready" for k in ("user", "lease")))
    wait(browser, lambda d: row_status(d, "db", objects["db"]) == "ready")

    def reset_shows_the_new_password(label, dialog):
        if label != "Reset password":
            return False
        look.click(dialog.find_element(By.CSS_SELECTOR, "[data-confirm]"), "Reset password")
        wait(browser, EC.visibility_of_element_located((By.CSS_SELECTOR, "dialog[open] code.new-password")))
        secret = look.dialog("the new password dialog")
        look.shot("users-new-password")
        look.click(secret.find_element(By.CSS_SELECTOR, ".buttons button"), "Done")
        wait(browser, lambda d: not d.find_elements(By.CSS_SELECTOR, "dialog[open]"))
        return True

    every_menu_and_dialog(look, "user", rows(browser, "user"), "users", reset_shows_the_new_password)
    every_menu_and_dialog(look, "db", [d for d in rows(browser, "db") if d != ENV["PGPLANE_DEFAULT_DB"]], "dbs")

    open_tab(browser, "pools")
    wait(browser, lambda d: row(d, "pool", objects["pool"]))
    every_menu_and_dialog(look, "pool", rows(browser, "pool"), "pools")
    look.shot("pools-connection-string")

    open_tab(browser, "sources")
    wait(browser, lambda d: row(d, "rule", objects["rule"]))
    every_menu_and_dialog(look, "rule", rows(browser, "rule"), "sources")
