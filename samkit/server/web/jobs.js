// The jobs page: start pre-fill (semi) / automatic labelling / export / retrain, live progress (polled),
// errors, cancel, and the export's archive to download.
import { api, getToken } from './api.js';
import { banner, h } from './ui.js';

const KINDS = [
  ['semi', 'Pre-fill (semi-automatic)'], ['auto', 'Automatic labelling'], ['export', 'Export'], ['retrain', 'Retrain'],
];
const POLL_MS = 700;

export async function jobsPage(root, projectId) {
  const base = `/api/projects/${projectId}`;
  const params = h('textarea#job-params', { rows: 3, spellcheck: false, placeholder: '{}',
    title: 'parameters as JSON, e.g. {"points_per_side": 16} for pre-fill / automatic labelling' });
  const format = h('select#export-format', {}, ['coco', 'sa1b', 'yolo', 'png'].map((f) => h('option', { value: f }, f)));
  const segmentation = h('select#export-segmentation', {},
    ['rle', 'polygon'].map((f) => h('option', { value: f }, f)));
  const error = h('p.error#job-error', { role: 'alert' });
  const table = h('tbody#job-rows');
  let timer = null;
  let stopped = false;

  async function start(kind) {
    error.textContent = '';
    let p = {};
    try {
      if (kind !== 'export' && params.value.trim()) p = JSON.parse(params.value);
      if (typeof p !== 'object' || Array.isArray(p) || p === null) throw new Error('give a JSON object');
    } catch (err) {
      error.textContent = `Parameters: not valid JSON (${err.message})`;
      return;
    }
    if (kind === 'export') p = { format: format.value, segmentation: segmentation.value };
    try {
      const job = await api('POST', `${base}/jobs`, { kind, params: p });
      banner(`Started job #${job.id} (${kind})`, 'info');
    } catch (err) {
      error.textContent = `Could not start ${kind}: ${err.message}`;
    }
    await refresh();
  }

  async function download(job) {
    try {
      const r = await api('GET', `${base}/jobs/${job.id}/result`, undefined, { raw: true });
      const cd = r.headers.get('content-disposition') || '';
      const m = /filename\*?=(?:UTF-8'')?"?([^";]+)"?/i.exec(cd);
      const a = h('a', { href: URL.createObjectURL(await r.blob()), download: m ? decodeURIComponent(m[1])
        : `job-${job.id}` });
      document.body.append(a);
      a.click();
      a.remove();
    } catch (err) { banner(`Download failed: ${err.message}`); }
  }

  async function cancel(job) {
    try { await api('POST', `${base}/jobs/${job.id}/cancel`); } catch (err) { banner(err.message); }
    await refresh();
  }

  function row(job) {
    const pct = job.total ? Math.round((100 * job.done) / job.total) : (job.state === 'done' ? 100 : 0);
    const active = job.state === 'queued' || job.state === 'running';
    return h('tr', { 'data-job-id': job.id, 'data-state': job.state, 'data-kind': job.kind },
      h('td', {}, `#${job.id}`), h('td', {}, job.kind),
      h('td.state', {}, job.state + (job.cancel_requested && active ? ' (cancelling)' : '')),
      h('td', {}, h('progress', { max: 100, value: pct }), ` ${job.done}/${job.total || '?'}`),
      h('td.job-error', {}, job.error || ''),
      h('td', {},
        active && !job.cancel_requested ? h('button.cancel', { onclick: () => cancel(job) }, 'Cancel') : null,
        job.has_result ? h('button.download', { onclick: () => download(job) }, 'Download') : null));
  }

  async function refresh() {
    clearTimeout(timer);
    if (stopped || !getToken()) return;
    try {
      const jobs = await api('GET', `${base}/jobs`);
      table.replaceChildren(...jobs.map(row));
      const active = jobs.some((j) => j.state === 'queued' || j.state === 'running');
      if (!stopped) timer = setTimeout(refresh, active ? POLL_MS : 3 * POLL_MS);
    } catch (err) {
      if (err.status !== 401) banner(`Jobs: ${err.message}`);
    }
  }

  root.replaceChildren(h('div.jobs', {},
    h('h1', {}, 'Jobs'),
    h('div.card', {},
      h('label', { for: 'job-params' }, 'Parameters for pre-fill / automatic labelling / retrain (JSON)'), params,
      h('div.toolbar', {}, KINDS.map(([kind, title]) => h(`button#start-${kind}`, { onclick: () => start(kind) }, title)),
        h('label', { for: 'export-format' }, 'export as'), format,
        h('label', { for: 'export-segmentation' }, 'masks as'), segmentation),
      error),
    h('table.jobs#job-table', {}, h('thead', {}, h('tr', {},
      ['Job', 'Kind', 'State', 'Progress', 'Error', ''].map((t) => h('th', {}, t)))), table)));
  await refresh();
  return () => { stopped = true; clearTimeout(timer); };
}
