// The browser annotation tool of `samkit serve`: hash routes, login, projects, images; the canvas
// (annotate.js), the jobs page (jobs.js) and the statistics page (stats.js).
import { api, getToken, setToken } from './api.js';
import { annotatePage } from './annotate.js';
import { jobsPage } from './jobs.js';
import { statsPage } from './stats.js';
import { STATUS_NAMES, banner, clearBanner, h } from './ui.js';

const main = document.getElementById('main');
let leave = null; // the current page's clean-up (key handlers, timers)
let me = null;

function go(hash) { window.location.hash = hash; }

window.addEventListener('samkit-signed-out', (e) => {
  me = null;
  go('#/login');
  banner(`Signed out: ${e.detail}`);
});

function nav(projectId) {
  const el = document.getElementById('nav');
  el.replaceChildren();
  if (!me) return;
  el.append(h('a', { href: '#/projects' }, 'Projects'));
  if (projectId) {
    el.append(h('a', { href: `#/p/${projectId}/images` }, 'Images'), h('a', { href: `#/p/${projectId}/jobs` }, 'Jobs'),
      h('a', { href: `#/p/${projectId}/stats` }, 'Statistics'));
  }
  document.getElementById('whoami').replaceChildren(
    h('span', {}, `${me.username} (${me.role})`),
    h('button.link#logout', { onclick: logout }, 'Log out'));
}

async function logout() {
  try { await api('POST', '/api/auth/logout'); } catch { /* already invalid */ }
  setToken(null);
  me = null;
  document.getElementById('whoami').replaceChildren();
  go('#/login');
}

function loginPage() {
  nav(null);
  document.getElementById('whoami').replaceChildren();
  const error = h('p.error#login-error', { role: 'alert' });
  const user = h('input#username', { name: 'username', autocomplete: 'username', required: true });
  const pass = h('input#password', { name: 'password', type: 'password', autocomplete: 'current-password',
    required: true });
  const form = h('form.card#login-form', {
    async onsubmit(e) {
      e.preventDefault();
      error.textContent = '';
      try {
        const r = await api('POST', '/api/auth/login', { username: user.value, password: pass.value });
        setToken(r.token);
        me = r.user;
        clearBanner();
        go('#/projects');
      } catch (err) {
        error.textContent = err.message;
        pass.select();
      }
    },
  }, h('h1', {}, 'Sign in'),
  h('label', { for: 'username' }, 'User name'), user,
  h('label', { for: 'password' }, 'Password'), pass,
  h('button.primary#login-button', { type: 'submit' }, 'Sign in'), error);
  main.replaceChildren(form);
  user.focus();
}

async function projectsPage() {
  nav(null);
  const projects = await api('GET', '/api/projects');
  if (projects.length === 1) { go(`#/p/${projects[0].id}/images`); return; }
  main.replaceChildren(h('h1', {}, 'Projects'), h('ul.projects', {}, projects.map((p) => h('li', {},
    h('a', { href: `#/p/${p.id}/images` }, p.name),
    p.model_version ? h('span.muted', {}, ` model ${p.model_version.name}`) : null))));
}

function imageName(image) { return image.path.split('/').pop(); }

async function imagesPage(projectId, params) {
  nav(projectId);
  const status = params.get('status') || '';
  const query = status ? `&status=${encodeURIComponent(status)}` : '';
  const [images, counts] = await Promise.all([
    api('GET', `/api/projects/${projectId}/images?limit=1000${query}`),
    api('GET', `/api/projects/${projectId}/image_counts`)]);
  const filter = h('select#status-filter', {
    onchange() { go(`#/p/${projectId}/images${this.value ? `?status=${this.value}` : ''}`); },
  }, h('option', { value: '' }, 'all'),
  Object.entries(STATUS_NAMES).map(([v, name]) => h('option', { value: v, selected: v === status }, name)));
  const rows = images.map((im) => {
    const c = counts[String(im.id)] || { masks: 0, pending: 0 };
    return h('tr', { 'data-image-id': im.id },
      h('td', {}, h('a', { href: `#/p/${projectId}/image/${im.id}` }, imageName(im))),
      h('td', {}, `${im.width}×${im.height}`),
      h('td', {}, h(`span.status.s-${im.status}`, {}, STATUS_NAMES[im.status] || im.status)),
      h('td.masks', {}, String(c.masks)),
      h('td.pending', {}, c.pending ? String(c.pending) : ''));
  });
  main.replaceChildren(
    h('div.toolbar', {}, h('h1', {}, 'Images'), h('label', { for: 'status-filter' }, 'Status '), filter,
      h('span.muted', {}, `${images.length} image(s)`)),
    h('table.images#image-table', {},
      h('thead', {}, h('tr', {}, ['Image', 'Size', 'Status', 'Masks', 'To review'].map((t) => h('th', {}, t)))),
      h('tbody', {}, rows)));
}

async function route() {
  if (leave) { leave(); leave = null; }
  const [path, queryString] = (window.location.hash.slice(1) || '/projects').split('?');
  const params = new URLSearchParams(queryString || '');
  if (!getToken()) { loginPage(); return; }
  try {
    if (!me) me = await api('GET', '/api/me');
    let m;
    if (path === '/login') loginPage();
    else if ((m = path.match(/^\/p\/(\d+)\/images$/))) await imagesPage(+m[1], params);
    else if ((m = path.match(/^\/p\/(\d+)\/image\/(\d+)$/))) {
      nav(+m[1]);
      leave = await annotatePage(main, +m[1], +m[2], me);
    } else if ((m = path.match(/^\/p\/(\d+)\/jobs$/))) {
      nav(+m[1]);
      leave = await jobsPage(main, +m[1]);
    } else if ((m = path.match(/^\/p\/(\d+)\/stats$/))) {
      nav(+m[1]);
      leave = await statsPage(main, +m[1]);
    } else await projectsPage();
  } catch (err) {
    if (err.status !== 401) banner(err.message);
  }
}

window.addEventListener('hashchange', route);
route();
