// DOM helpers and widgets of the console: tables, status badges, add forms, More menus (in a
// layer of their own over the page, so no scroll box clips them), confirmation and secret
// dialogs. Nodes are built with createElement and text nodes only: no string is ever parsed as
// HTML, so names from the API always show as the characters they are.

/** An element with attributes (`on` holds event listeners) and children (strings become text). */
export function h(tag, props = {}, ...children) {
  const el = document.createElement(tag);
  for (const [key, value] of Object.entries(props)) {
    if (value === undefined || value === null || value === false) continue;
    if (key === 'on') {
      for (const [event, listener] of Object.entries(value)) el.addEventListener(event, listener);
    } else if (key === 'class') {
      el.className = value;
    } else if (key === 'value') {
      el.value = value;
    } else {
      el.setAttribute(key, value === true ? '' : String(value));
    }
  }
  append(el, children);
  return el;
}

function append(el, children) {
  for (const child of children.flat(Infinity)) {
    if (child === null || child === undefined || child === false) continue;
    el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
}

/** Replaces the children of `el`. */
export function clear(el, ...children) {
  el.replaceChildren();
  append(el, children);
  return el;
}

/** A region that shows an error (or nothing); screen readers announce it. */
export function alertBox() {
  const box = h('p', { class: 'alert', role: 'alert', hidden: true });
  box.show = (error) => {
    if (!error) {
      box.hidden = true;
      box.textContent = '';
      return;
    }
    box.textContent = error.message || String(error);
    box.hidden = false;
  };
  return box;
}

/** Copies text to the clipboard; falls back to a selection copy where the API is refused. */
async function copyText(text) {
  try {
    await navigator.clipboard.writeText(text);
    return;
  } catch {
    const area = h('textarea', { class: 'offscreen', readonly: true });
    area.value = text;
    document.body.append(area);
    area.select();
    const ok = document.execCommand('copy');
    area.remove();
    if (!ok) throw new Error('copy refused');
  }
}

/** A Copy button for what `text()` returns at the time of the click. */
export function copyButton(text, label = 'Copy') {
  const status = h('span', { class: 'copied', 'aria-live': 'polite' });
  const button = h('button', {
    type: 'button',
    class: 'copy',
    on: {
      click: async () => {
        try {
          await copyText(text());
          status.textContent = 'Copied';
        } catch {
          status.textContent = 'Cannot copy here: select the text and copy it';
        }
        setTimeout(() => { status.textContent = ''; }, 2500);
      },
    },
  }, label);
  return h('span', { class: 'copy-wrap' }, button, status);
}

/**
 * A modal confirmation (with form controls in `content`, if given). `action` runs on confirm; its error is shown in the dialog (which stays
 * open); its result is handed to `done` after the dialog closes. Escape or Cancel closes it. With `typeToConfirm`, the
 * confirm button works only once that text has been typed.
 */
export function confirmDialog({ title, message, content = null, confirmLabel, danger = false, typeToConfirm = null, action, done }) {
  const error = alertBox();
  const cancel = h('button', { type: 'button', class: 'secondary' }, 'Cancel');
  const confirm = h('button', { type: 'button', class: danger ? 'danger' : 'primary', 'data-confirm': true }, confirmLabel);
  const typed = h('input', { id: 'type-to-confirm', type: 'text', autocomplete: 'off', spellcheck: 'false' });
  const ready = () => typeToConfirm === null || typed.value === typeToConfirm;
  typed.addEventListener('input', () => { confirm.disabled = !ready(); });
  typed.addEventListener('keydown', (e) => { if (e.key === 'Enter' && ready()) confirm.click(); });
  confirm.disabled = !ready();
  const dialog = h('dialog', { class: 'confirm', 'aria-labelledby': 'dialog-title' },
    h('h2', { id: 'dialog-title' }, title),
    [message].flat().map((line) => (typeof line === 'string' ? h('p', {}, line) : line)),
    content,
    typeToConfirm === null ? null : h('div', { class: 'field type-to-confirm' },
      h('label', { for: 'type-to-confirm' }, 'Type ', h('code', {}, typeToConfirm), ' to confirm'), typed),
    error,
    h('div', { class: 'buttons' }, cancel, confirm));
  const opener = document.activeElement;
  const close = () => {
    dialog.close();
    dialog.remove();
    if (opener && opener.isConnected) opener.focus();
  };
  cancel.addEventListener('click', close);
  dialog.addEventListener('cancel', (e) => { e.preventDefault(); if (!confirm.disabled) close(); });
  confirm.addEventListener('click', async () => {
    confirm.disabled = true;
    cancel.disabled = true;
    error.show(null);
    confirm.textContent = 'Working…';
    try {
      const result = await action();
      close();
      if (done) done(result);
    } catch (e) {
      error.show(e);
      confirm.disabled = !ready();
      cancel.disabled = false;
      confirm.textContent = confirmLabel;
    }
  });
  document.body.append(dialog);
  dialog.showModal();
  (typeToConfirm === null ? cancel : typed).focus();
}

/** A dialog that shows a secret once, with a Copy button. */
export function secretDialog({ title, message, secret }) {
  const ok = h('button', { type: 'button', class: 'primary' }, 'Done');
  const dialog = h('dialog', { class: 'confirm', 'aria-labelledby': 'dialog-title' },
    h('h2', { id: 'dialog-title' }, title),
    h('p', {}, message),
    h('p', { class: 'secret' }, h('code', { class: 'new-password' }, secret), ' ', copyButton(() => secret)),
    h('div', { class: 'buttons' }, ok));
  const opener = document.activeElement;
  const close = () => { dialog.close(); dialog.remove(); };
  ok.addEventListener('click', close);
  dialog.addEventListener('close', () => {
    dialog.remove();
    if (opener && opener.isConnected) opener.focus();
  });
  document.body.append(dialog);
  dialog.showModal();
  ok.focus();
}

/** A date from the API, shown in the browser's locale (the raw text when it does not parse). */
export function when(text) {
  if (!text) return '';
  const date = new Date(text);
  return Number.isNaN(date.getTime()) ? text : date.toLocaleString();
}

/** A table with a caption for screen readers, or the `empty` sentence when there are no rows. */
export function table(caption, headings, rows, empty) {
  if (rows.length === 0) return h('p', { class: 'empty' }, empty);
  return h('div', { class: 'table-wrap' },
    h('table', {},
      h('caption', { class: 'offscreen' }, caption),
      h('thead', {}, h('tr', {}, headings.map((x) => h('th', { scope: 'col' }, x)))),
      h('tbody', {}, rows)));
}

/** A status cell: its badge, with the last error under it while not ready. */
export function status(value, lastError) {
  const s = value || 'ready';
  return h('td', { class: 'status-cell' },
    h('span', { class: `badge ${s}`, 'data-status': s }, s),
    lastError && s !== 'ready' ? h('span', { class: 'last-error' }, lastError) : null);
}

/** An "Add new …" field with its Save button (and `extra` controls before it); `save(value)`
 * calls the API, and its error is shown under the form. */
export function addForm(kind, save, extra = null, label = `Add new ${kind}`) {
  const id = `new-${kind}`;
  const input = h('input', { id, name: id, type: 'text', autocomplete: 'off', spellcheck: 'false', required: true, maxlength: 63 });
  const button = h('button', { type: 'submit', class: 'primary' }, 'Save');
  const error = alertBox();
  const form = h('form', { class: 'add', 'data-add': kind }, h('label', { for: id }, label), input, extra, button, error);
  form.addEventListener('submit', async (event) => {
    event.preventDefault();
    const value = input.value.trim();
    if (!value) return;
    button.disabled = true;
    button.textContent = 'Saving…';
    error.show(null);
    try {
      await save(value);
      input.value = '';
    } catch (e) {
      error.show(e);
    } finally {
      button.disabled = false;
      button.textContent = 'Save';
      input.focus();
    }
  });
  return form;
}

/** The open More menu ({menu, button, at: the button's place when it opened}); one at a time. */
let openMenu = null;
/** Room kept between a menu, its button and the window's edges (px). */
const GAP = 4;
const MARGIN = 8;

/** The open menu's button, or the one that took its place when the page rebuilt its rows
 * while the menu was open (same label). */
function menuButton() {
  const { button } = openMenu;
  if (button.isConnected) return button;
  return [...document.querySelectorAll('button.more')].find((b) => b.getAttribute('aria-label') === button.getAttribute('aria-label')) || null;
}

function closeMenu(refocus) {
  if (!openMenu) return;
  const button = menuButton();
  openMenu.menu.remove();
  openMenu = null;
  if (!button) return;
  button.setAttribute('aria-expanded', 'false');
  button.removeAttribute('aria-controls');
  if (refocus) button.focus();
}

/** Places `menu` (fixed) under `button`, or above it when there is more room there than below
 * and not enough below; right-aligned with the button, inside the window. */
function placeMenu(menu, button) {
  const at = button.getBoundingClientRect();
  const { clientWidth: width, clientHeight: height } = document.documentElement;
  const below = height - at.bottom - GAP - MARGIN;
  const above = at.top - GAP - MARGIN;
  const up = menu.offsetHeight > below && above > below;
  menu.style.maxHeight = `${Math.max(up ? above : below, 0)}px`;
  menu.style.top = `${up ? at.top - GAP - menu.offsetHeight : at.bottom + GAP}px`;
  menu.style.left = `${Math.max(MARGIN, Math.min(at.right - menu.offsetWidth, width - MARGIN - menu.offsetWidth))}px`;
  return at;
}

function showMenu(button, items, focusLast) {
  closeMenu(false);
  const entries = items.map(([text, act]) => h('button', {
    type: 'button',
    role: 'menuitem',
    class: 'menu-item',
    tabindex: -1,
    on: { click: () => { closeMenu(true); act(); } },
  }, text));
  const menu = h('div', { class: 'menu', role: 'menu', id: 'more-menu', 'aria-label': button.getAttribute('aria-label') }, entries);
  menu.addEventListener('keydown', (e) => {
    const i = entries.indexOf(document.activeElement);
    const to = { ArrowDown: i + 1, ArrowUp: i - 1, Home: 0, End: entries.length - 1 }[e.key];
    if (to !== undefined) {
      e.preventDefault();
      entries[(to + entries.length) % entries.length].focus();
    } else if (e.key === 'Escape') {
      e.preventDefault();
      closeMenu(true);
    } else if (e.key === 'Tab') {
      // Back on the button, the Tab goes on to whatever follows (or precedes) it.
      closeMenu(true);
    }
  });
  document.body.append(menu);
  openMenu = { menu, button, at: placeMenu(menu, button) };
  button.setAttribute('aria-expanded', 'true');
  button.setAttribute('aria-controls', 'more-menu');
  entries[focusLast ? entries.length - 1 : 0].focus({ preventScroll: true });
}

/** Whether a More menu is open (pages do not refresh under it). */
export function menuIsOpen() {
  return openMenu !== null;
}

/**
 * A row's More button: it opens a menu of `items` ([label, action]) in a layer over the page
 * (the menu-button pattern: Enter, Space or Down open it on its first item, Up on its last;
 * arrows, Home and End move; Escape closes it back on the button). A click elsewhere, Tab, a
 * resize, a scroll that moves the button, or a new page closes it.
 */
export function moreMenu(label, items) {
  const button = h('button', {
    type: 'button', class: 'more', 'aria-haspopup': 'menu', 'aria-expanded': 'false', 'aria-label': `More actions for ${label}`,
  }, 'More');
  button.addEventListener('click', () => {
    if (openMenu && menuButton() === button) closeMenu(true);
    else showMenu(button, items, false);
  });
  button.addEventListener('keydown', (e) => {
    if (e.key === 'ArrowDown' || e.key === 'ArrowUp') {
      e.preventDefault();
      showMenu(button, items, e.key === 'ArrowUp');
    }
  });
  return button;
}

const outside = (e) => openMenu && !openMenu.menu.contains(e.target) && !(menuButton() || openMenu.button).contains(e.target);
document.addEventListener('pointerdown', (e) => { if (outside(e)) closeMenu(false); }, true);
document.addEventListener('focusin', (e) => { if (outside(e)) closeMenu(false); });
window.addEventListener('scroll', (e) => {
  if (!openMenu || openMenu.menu.contains(e.target)) return;
  const button = menuButton();
  const now = button && button.getBoundingClientRect();
  if (!now || now.top !== openMenu.at.top || now.left !== openMenu.at.left) closeMenu(false);
}, true);
window.addEventListener('resize', () => closeMenu(false));
window.addEventListener('hashchange', () => closeMenu(false));
