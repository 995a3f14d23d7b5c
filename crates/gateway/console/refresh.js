// Pages that stay current: a page's loader runs again every second while something on it is not
// yet ready (else every 5 s), never under an open menu or dialog; when the rows are rebuilt,
// keyboard focus stays on the same control of the same row and each table keeps its sideways
// scroll.

import { menuIsOpen } from './dom.js';

/** How often a page with something not yet ready asks again, and otherwise. */
const BUSY_POLL_MS = 1000;
const IDLE_POLL_MS = 5000;

const ROW_KEYS = ['data-user', 'data-db', 'data-cluster', 'data-pool', 'data-rule'];
const FOCUSABLE = 'a, button, input, select';

/** Where keyboard focus is, as a table row's key and the position among the row's controls
 * (rows are rebuilt on refresh; this finds the same control in the new row). */
function saveFocus() {
  const active = document.activeElement;
  const tr = active && active.closest && active.closest('tr');
  const attr = tr && ROW_KEYS.find((a) => tr.hasAttribute(a));
  if (!attr) return null;
  return { active, attr, key: tr.getAttribute(attr), index: [...tr.querySelectorAll(FOCUSABLE)].indexOf(active) };
}

/** Whether a menu or dialog is open: the page is not refreshed under it, nor focus moved. */
function interacting() {
  return menuIsOpen() || document.querySelector('dialog[open]') !== null;
}

function restoreFocus(saved) {
  // A menu or dialog opened while the rows were loading keeps the focus it has.
  if (!saved || saved.active.isConnected || interacting()) return;
  const tr = [...document.querySelectorAll(`tr[${saved.attr}]`)].find((r) => r.getAttribute(saved.attr) === saved.key);
  const target = tr && tr.querySelectorAll(FOCUSABLE)[saved.index];
  if (target) target.focus();
}

/** How far each table is scrolled sideways, by caption (a rebuilt table starts unscrolled). */
function saveScroll() {
  return new Map([...document.querySelectorAll('.table-wrap')].map((w) => [w.querySelector('caption').textContent, w.scrollLeft]));
}

function restoreScroll(saved) {
  for (const w of document.querySelectorAll('.table-wrap')) {
    const left = saved.get(w.querySelector('caption').textContent);
    if (left) w.scrollLeft = left;
  }
}

/** `load` (which resolves to whether something is busy) with its error shown in `errors`
 * (and cleared when it works), the tables it rebuilds scrolled sideways as they were;
 * resolves to false when it failed. */
export function loadInto(load, errors) {
  return async () => {
    const scroll = saveScroll();
    try {
      const busy = await load();
      errors.show(null);
      return busy;
    } catch (e) {
      errors.show(e);
      return false;
    } finally {
      restoreScroll(scroll);
    }
  };
}

/** Runs `load` now and again every second while it reports something busy, else every 5 s,
 * for as long as `alive()` holds; its errors go to `errors`. */
export function keepFresh(alive, load, errors) {
  const once = loadInto(load, errors);
  let busy = false;
  const tick = async () => {
    if (!alive()) return;
    if (!interacting()) {
      const focus = saveFocus();
      // Focus moved while loading (a click that started then) is left where it went.
      let moved = false;
      const onFocus = () => { moved = true; };
      document.addEventListener('focusin', onFocus);
      busy = await once();
      document.removeEventListener('focusin', onFocus);
      if (!moved) restoreFocus(focus);
    }
    if (alive()) setTimeout(tick, busy ? BUSY_POLL_MS : IDLE_POLL_MS);
  };
  return tick();
}
