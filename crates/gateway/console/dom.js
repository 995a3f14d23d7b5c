// DOM helpers of the console. Nodes are built with createElement and text nodes only: no
// string is ever parsed as HTML, so names from the API always show as the characters they are.

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
 * open); its result is handed to `done` after the dialog closes. Escape or Cancel closes it.
 */
export function confirmDialog({ title, message, content = null, confirmLabel, danger = false, action, done }) {
  const error = alertBox();
  const cancel = h('button', { type: 'button', class: 'secondary' }, 'Cancel');
  const confirm = h('button', { type: 'button', class: danger ? 'danger' : 'primary', 'data-confirm': true }, confirmLabel);
  const dialog = h('dialog', { class: 'confirm', 'aria-labelledby': 'dialog-title' },
    h('h2', { id: 'dialog-title' }, title),
    [message].flat().map((line) => (typeof line === 'string' ? h('p', {}, line) : line)),
    content,
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
      confirm.disabled = false;
      cancel.disabled = false;
      confirm.textContent = confirmLabel;
    }
  });
  document.body.append(dialog);
  dialog.showModal();
  cancel.focus();
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
