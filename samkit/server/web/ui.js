// Small DOM helpers shared by the pages.

/** h('button.primary#save', {onclick}, 'Save') -> element (tag.class#id; attrs: props, on* handlers, data-*). */
export function h(spec, attrs = {}, ...children) {
  const [, tag, rest] = spec.match(/^([a-z0-9]+)(.*)$/i);
  const el = document.createElement(tag);
  for (const part of rest.match(/[.#][^.#]+/g) || []) {
    if (part[0] === '.') el.classList.add(part.slice(1)); else el.id = part.slice(1);
  }
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k.startsWith('on')) el.addEventListener(k.slice(2), v);
    else if (k.startsWith('data-') || k === 'for' || k === 'role' || k.startsWith('aria-')) el.setAttribute(k, v);
    else el[k] = v;
  }
  for (const c of children.flat()) {
    if (c === null || c === undefined || c === false) continue;
    el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return el;
}

let bannerTimer = null;

/** A message at the top of the page: kind 'error' stays until dismissed or replaced, 'info' fades. */
export function banner(text, kind = 'error') {
  const el = document.getElementById('banner');
  clearTimeout(bannerTimer);
  el.className = `banner ${kind}`;
  el.replaceChildren(h('span.text', {}, text), h('button.close', { title: 'dismiss', onclick: clearBanner }, '×'));
  if (kind === 'info') bannerTimer = setTimeout(clearBanner, 4000);
}

export function clearBanner() {
  const el = document.getElementById('banner');
  el.className = 'banner hidden';
  el.replaceChildren();
}

export const STATUS_NAMES = { new: 'new', in_progress: 'in progress', done: 'done' };
