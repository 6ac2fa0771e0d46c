// The statistics page: the SAM paper's data-engine metrics (seconds and clicks per mask, masks per image)
// per stage, per annotator and per day, from GET /api/projects/{id}/stats, as tables and small SVG plots.
import { api } from './api.js';
import { h } from './ui.js';

const STAGES = ['manual', 'semi', 'auto', 'all'];
const COLORS = { manual: '#1e6fd9', semi: '#f58231', auto: '#3cb44b', all: '#555555' };
const COLUMNS = [['masks', 'masks'], ['images', 'images'], ['masks_per_image', 'masks / image'],
  ['pending', 'to review'], ['seconds_per_mask', 's / mask'], ['seconds_per_mask_median', 'median s / mask'],
  ['clicks_per_mask', 'clicks / mask']];
const SVG = 'http://www.w3.org/2000/svg';

const COUNTS = new Set(['masks', 'images', 'pending', 'timed_masks']);

function cell(v, key) {
  if (v === null || v === undefined) return '–';
  return COUNTS.has(key) ? String(v) : v.toFixed(1);
}

function table(id, rows) {
  return h(`table.stats#${id}`, {},
    h('thead', {}, h('tr', {}, h('th', {}, ''), COLUMNS.map(([, t]) => h('th', {}, t)))),
    h('tbody', {}, rows.map(([name, m]) => h('tr', { 'data-row': name },
      h('th', {}, name), COLUMNS.map(([k]) => h(`td.m-${k}`, {}, cell(m[k], k)))))));
}

function svg(tag, attrs, ...children) {
  const el = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs)) el.setAttribute(k, v);
  for (const c of children) el.append(c);
  return el;
}

/** Grouped bars: one group per day, one bar per stage with a value of `metric`. */
function dayPlot(days, metric, title) {
  const W = 640;
  const H = 200;
  const pad = 36;
  const stages = STAGES.slice(0, 3);
  const values = days.flatMap((d) => stages.map((s) => d.stages[s][metric] ?? 0));
  const top = Math.max(1e-9, ...values);
  const groupW = (W - pad - 10) / Math.max(1, days.length);
  const barW = Math.max(2, (groupW - 8) / stages.length);
  const plot = svg('svg', { width: W, height: H + 40, viewBox: `0 0 ${W} ${H + 40}`, class: 'plot',
    'data-metric': metric });
  plot.append(svg('text', { x: pad, y: 14, 'font-size': 13 }, title),
    svg('line', { x1: pad, y1: H, x2: W - 5, y2: H, stroke: '#999' }),
    svg('text', { x: 2, y: 34, 'font-size': 11 }, cell(top, metric)), svg('text', { x: 2, y: H, 'font-size': 11 }, '0'));
  days.forEach((d, i) => {
    const x0 = pad + i * groupW + 4;
    stages.forEach((s, j) => {
      const v = d.stages[s][metric];
      if (v === null || v === undefined || v === 0) return;
      const bh = ((H - 30) * v) / top;
      plot.append(svg('rect', { x: x0 + j * barW, y: H - bh, width: barW - 1, height: bh, fill: COLORS[s],
        'data-stage': s, 'data-date': d.date }, svg('title', {}, `${d.date} ${s}: ${cell(v, metric)}`)));
    });
    plot.append(svg('text', { x: x0, y: H + 14, 'font-size': 11 }, d.date));
  });
  stages.forEach((s, j) => {
    plot.append(svg('rect', { x: pad + j * 90, y: H + 24, width: 10, height: 10, fill: COLORS[s] }),
      svg('text', { x: pad + j * 90 + 14, y: H + 33, 'font-size': 11 }, s));
  });
  return plot;
}

export async function statsPage(root, projectId) {
  const report = await api('GET', `/api/projects/${projectId}/stats`);
  const people = report.annotators.map((a) => [a.username || `user ${a.user_id}`, a.stages.all]);
  root.replaceChildren(h('div.statistics', {},
    h('h1', {}, 'Statistics'),
    h('p.muted', {}, 'Seconds and clicks per mask come from the time and clicks saved with each mask or fix; ',
      'masks without them (automatic ones, imports) count for masks per image only.'),
    h('h3', {}, 'Per stage'), table('stage-table', STAGES.map((s) => [s, report.stages[s]])),
    h('h3', {}, 'Per annotator (all stages)'),
    people.length ? table('annotator-table', people) : h('p.muted', {}, 'No masks yet.'),
    h('h3', {}, 'Per day'),
    report.days.length ? h('div.plots', {},
      dayPlot(report.days, 'seconds_per_mask', 'seconds per mask'),
      dayPlot(report.days, 'clicks_per_mask', 'clicks per mask'),
      dayPlot(report.days, 'masks_per_image', 'masks per image')) : h('p.muted', {}, 'No masks yet.')));
  return () => {};
}
