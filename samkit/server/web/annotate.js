// The annotation canvas: image with zoom / pan, click and box prompts decoded into masks (in the browser
// when decoder.js can, else by the server), multimask candidates, brush / eraser, undo / redo, labels,
// the image's masks (show / hide / delete / edit), review of pre-filled masks, polygon view.
import { api, getToken, loadImage } from './api.js';
import { createDecoder } from './decoder.js';
import { polygons } from './polygon.js';
import { applyStroke, cloneMask, decodeRle, emptyMask, encodeRle, maskArea, maskCanvas } from './rle.js';
import { STATUS_NAMES, banner, h } from './ui.js';

const PALETTE = ['#e6194b', '#3cb44b', '#4363d8', '#f58231', '#911eb4', '#42d4f4', '#f032e6', '#bfef45',
  '#fabed4', '#469990', '#dcbeff', '#9a6324', '#800000', '#aaffc3', '#808000', '#000075'];
const CURRENT_RGBA = [30, 144, 255, 150];
const PENDING_RGBA = [255, 170, 0, 170];
const PREVIEW_RGBA = [255, 255, 255, 110];
const PREVIEW_DELAY_MS = 120; // the pointer rests this long before a hover preview is decoded
const HISTORY_LIMIT = 100;
const decoders = new Map(); // project, token, kind -> Promise of the decoder (one per page session)

/** The project's decoder (decoder.js: in the browser where onnxruntime-web runs, else the server's
 * predict endpoint, and it says why); `?decoder=server` in the page URL asks for the server. */
function decoderFor(projectId) {
  const server = new URLSearchParams(window.location.search).get('decoder') === 'server';
  const key = `${projectId}|${getToken()}|${server}`; // a new sign-in gets a decoder with its token
  if (!decoders.has(key)) decoders.set(key, createDecoder(projectId, getToken(), { server }));
  return decoders.get(key);
}

function hexRgba(hex, alpha) {
  const m = /^#?([0-9a-f]{6})$/i.exec(hex || '');
  const n = m ? parseInt(m[1], 16) : 0x808080;
  return [(n >> 16) & 255, (n >> 8) & 255, n & 255, alpha];
}

/** Typing into a text field or list is no shortcut (sliders and buttons let shortcuts through). */
function inField(e) {
  const t = e.target;
  if (!t) return false;
  if (t.tagName === 'INPUT') return !['range', 'checkbox', 'button', 'submit'].includes(t.type);
  return t.tagName === 'SELECT' || t.tagName === 'TEXTAREA';
}

export async function annotatePage(root, projectId, imageId, me) {
  const base = `/api/projects/${projectId}`;
  const [image, labelList, img, decoder] = await Promise.all([
    api('GET', `${base}/images/${imageId}`), api('GET', `${base}/labels`), loadImage(projectId, imageId),
    decoderFor(projectId)]);
  decoder.prepare(imageId).catch(() => {}); // the first click's wait, started now (a failure shows then)
  const W = image.width;
  const H = image.height;

  // ---- state ----------------------------------------------------------------------------------------
  const S = {
    points: [], labels: [], box: null, text: '', // prompts (image pixels; text for text models)
    cands: [], scores: [], candIdx: 0, lowRes: null, // decoded candidates
    strokes: [], // brush / eraser strokes on top of the chosen candidate (or of the edited mask)
    base: null, editing: null, // fixing a saved mask: its mask, {id, version}
    tool: 'point', brushR: 8, labelId: null,
    clicks: 0, kinds: new Set(), startedAt: null,
    anns: [], hidden: new Set(), polygonOf: null, eps: 2,
  };
  let labels = labelList;
  let view = { scale: 1, ox: 0, oy: 0 };
  let fitted = false;
  let current; // cached composite of the current mask (undefined: stale; null: none)
  let currentCanvas = null;
  let undoStack = [];
  let redoStack = [];
  let decodeSeq = 0;
  let decodes = 0;
  let drag = null;
  let spaceDown = false;
  let hover = null;
  // hover preview (SAM demo style): the top mask a positive click at the resting pointer would give,
  // shown faintly while nothing is prompted; only with the in-browser decoder (no server round trips)
  let previewOn = decoder.kind === 'browser';
  let preview = null; // {canvas, area}
  let previewTimer = null;
  let previewSeq = 0;
  let previews = 0;
  let conflict = null;
  const annCanvas = new Map(); // annotation id -> overlay canvas

  // ---- DOM ------------------------------------------------------------------------------------------
  const imageLayer = h('canvas#image-layer');
  const maskLayer = h('canvas#mask-layer', { 'data-area': '0', 'data-decodes': '0' });
  const promptLayer = h('canvas#prompt-layer', { tabIndex: 0 });
  const stage = h('div.stage#stage', {}, imageLayer, maskLayer, promptLayer);
  const toolButtons = {};
  const tool = (name, key, title) => {
    toolButtons[name] = h(`button.tool#tool-${name}`, { title, onclick: () => setTool(name) }, `${title} (${key})`);
    return toolButtons[name];
  };
  const brushSize = h('input#brush-size', { type: 'range', min: 1, max: 60, value: S.brushR,
    oninput() { S.brushR = +this.value; renderPrompts(); } });
  const candInfo = h('span#candidates.muted');
  const textPrompt = h('input#text-prompt', { placeholder: 'text prompt (text models), Enter', size: 22,
    onkeydown(e) { if (e.key === 'Enter') { e.preventDefault(); setText(this.value); } } });
  const decoderInfo = h('span#decoder-kind.muted', { title: decoder.reason || '', 'data-kind': decoder.kind },
    decoder.kind === 'browser' ? 'decoder: in browser' : `decoder: server (${decoder.reason})`);
  const statusInfo = h('span#image-status');
  const conflictBox = h('div.conflict.hidden#conflict', { role: 'alert' });
  const labelListEl = h('ol.labels#label-list');
  const maskListEl = h('ul.masks#mask-list');
  const polyCount = h('span#poly-count.muted');
  const polySlider = h('input#poly-eps', { type: 'range', min: 0.5, max: 20, step: 0.5, value: S.eps,
    oninput() { S.eps = +this.value; updatePolygon(); } });
  const polyPanel = h('div.polygon.hidden#polygon-panel', {},
    h('h3', {}, 'Polygon'), h('label', { for: 'poly-eps' }, 'Tolerance (px) '), polySlider, polyCount,
    h('button#poly-close', { onclick: () => { S.polygonOf = null; updatePolygon(); } }, 'Close'));
  const newLabel = h('input#new-label', { placeholder: 'new label', maxLength: 128 });
  const previewBox = h('input#hover-preview', { type: 'checkbox', checked: previewOn,
    disabled: decoder.kind !== 'browser', onchange() { setPreview(this.checked); } });

  root.replaceChildren(h('div.annotate', {},
    h('div.toolbar', {},
      h('a', { href: `#/p/${projectId}/images` }, '← images'),
      h('strong#image-name', {}, image.path.split('/').pop()), statusInfo,
      tool('point', 'v', 'Click'), tool('box', 'x', 'Box'), tool('brush', 'b', 'Brush'), tool('eraser', 'e', 'Eraser'),
      h('label', { for: 'brush-size' }, 'size'), brushSize, textPrompt,
      h('label.check', { title: 'show the mask a click at the pointer would give (h)' }, previewBox, ' preview (h)'),
      h('button#cycle', { title: 'next of the three candidates (c or Tab)', onclick: cycle }, 'Candidate (c)'), candInfo,
      h('button#undo', { onclick: undo, title: 'Ctrl+Z' }, 'Undo'),
      h('button#redo', { onclick: redo, title: 'Ctrl+Shift+Z' }, 'Redo'),
      h('button#clear', { onclick: clearCurrent, title: 'Esc' }, 'Clear'),
      h('button.primary#accept', { onclick: accept, title: 'Enter' }, 'Accept (Enter)'),
      h('button#polygon-current', { onclick: () => showPolygon('current') }, 'Polygon'),
      h('button#mark-done', { onclick: toggleDone }), h('button#next-image', { onclick: nextImage }, 'Next (n)'),
      decoderInfo),
    conflictBox,
    h('div.workspace', {}, stage, h('aside.side', {},
      h('h3', {}, 'Labels (1-9)'), labelListEl,
      h('form.inline#label-form', { onsubmit: addLabel }, newLabel, h('button', { type: 'submit' }, 'Add')),
      h('h3', {}, 'Masks ', h('button#undo-saved', { onclick: undoSaved,
        title: 'undo the newest saved change on this image (a save, fix, review or delete), by anyone' },
      'Undo last saved change')), maskListEl, polyPanel,
      h('p.help.muted', {}, 'Left click: object · right / Alt+click: background · drag or Shift+drag: box · ',
        'wheel: zoom · space+drag or middle drag: pan · c/Tab: candidate · b/e: brush/eraser · [ ]: size · ',
        'Ctrl+Z / Ctrl+Shift+Z: undo / redo · Enter: accept · Esc: clear · h: hover preview')))));

  // ---- view -----------------------------------------------------------------------------------------
  function fit() {
    const cw = stage.clientWidth;
    const ch = stage.clientHeight;
    const scale = Math.min(cw / W, ch / H);
    view = { scale, ox: (cw - W * scale) / 2, oy: (ch - H * scale) / 2 };
  }

  function resize() {
    if (!fitted && stage.clientWidth && stage.clientHeight) { fit(); fitted = true; }
    for (const c of [imageLayer, maskLayer, promptLayer]) {
      c.width = stage.clientWidth;
      c.height = stage.clientHeight;
    }
    render();
  }

  function toImage(e) {
    const r = promptLayer.getBoundingClientRect();
    return [(e.clientX - r.left - view.ox) / view.scale, (e.clientY - r.top - view.oy) / view.scale];
  }

  function clampPoint([x, y]) { return [Math.min(Math.max(x, 0), W - 1), Math.min(Math.max(y, 0), H - 1)]; }

  function transformed(ctx) {
    ctx.setTransform(1, 0, 0, 1, 0, 0);
    ctx.clearRect(0, 0, ctx.canvas.width, ctx.canvas.height);
    ctx.setTransform(view.scale, 0, 0, view.scale, view.ox, view.oy);
    return ctx;
  }

  // ---- current mask ---------------------------------------------------------------------------------
  function currentMask() {
    if (current !== undefined) return current;
    const start = S.cands.length ? S.cands[S.candIdx] : S.base;
    if (!start && !S.strokes.length) {
      current = null;
    } else {
      current = start ? cloneMask(start) : emptyMask(W, H);
      for (const s of S.strokes) applyStroke(current, s);
    }
    currentCanvas = current ? maskCanvas(current, CURRENT_RGBA) : null;
    return current;
  }

  function changed() {
    current = undefined;
    dropPreview(false); // render() below draws without it
    render();
    saveDraft();
  }

  // the unsaved mask survives a reload: kept per image in localStorage until saved or cleared
  const draftKey = `samkit.draft.${projectId}.${imageId}`;
  function saveDraft() {
    const m = currentMask();
    if (!m && !S.editing) { localStorage.removeItem(draftKey); return; }
    try {
      localStorage.setItem(draftKey, JSON.stringify({ points: S.points, labels: S.labels, box: S.box, text: S.text,
        editing: S.editing, labelId: S.labelId, rle: m ? encodeRle(m) : null, startedAt: S.startedAt,
        clicks: S.clicks, kinds: [...S.kinds] }));
    } catch { /* storage full: the draft is a convenience, the saved masks are on the server */ }
  }

  function restoreDraft() {
    let d = null;
    try { d = JSON.parse(localStorage.getItem(draftKey) || 'null'); } catch { /* a broken draft is dropped */ }
    if (!d) return;
    const editing = d.editing && S.anns.find((a) => a.id === d.editing.id) ? d.editing : null;
    Object.assign(S, { points: d.points || [], labels: d.labels || [], box: d.box || null, text: d.text || '',
      base: d.rle ? decodeRle(d.rle) : null, editing, labelId: d.labelId ?? S.labelId,
      startedAt: d.startedAt ? new Date(d.startedAt) : null, clicks: d.clicks || 0, kinds: new Set(d.kinds || []) });
    renderLabels();
    changed();
    banner('Your unsaved mask on this image was restored (Esc clears it)', 'info');
  }

  // ---- drawing --------------------------------------------------------------------------------------
  function render() {
    const ictx = transformed(imageLayer.getContext('2d'));
    ictx.imageSmoothingEnabled = view.scale < 2;
    ictx.drawImage(img, 0, 0);
    renderMasks();
    renderPrompts();
    renderSide();
  }

  function renderMasks() {
    const ctx = transformed(maskLayer.getContext('2d'));
    ctx.imageSmoothingEnabled = false;
    for (const a of S.anns) {
      if (S.hidden.has(a.id) || (S.editing && S.editing.id === a.id)) continue;
      ctx.drawImage(annCanvas.get(a.id), 0, 0);
    }
    const m = currentMask();
    if (m) ctx.drawImage(currentCanvas, 0, 0);
    else if (preview) ctx.drawImage(preview.canvas, 0, 0);
    maskLayer.dataset.area = String(m ? maskArea(m) : 0);
    maskLayer.dataset.previewArea = String(!m && preview ? preview.area : 0);
    promptLayer.dataset.view = JSON.stringify(view); // screen = image * scale + offset (for tests, tools)
    maskLayer.dataset.candidate = String(S.candIdx);
    maskLayer.dataset.candidates = String(S.cands.length);
  }

  function renderPrompts() {
    const ctx = transformed(promptLayer.getContext('2d'));
    const px = 1 / view.scale;
    if (S.box) {
      ctx.strokeStyle = '#00e676';
      ctx.lineWidth = 2 * px;
      ctx.strokeRect(S.box[0], S.box[1], S.box[2] - S.box[0], S.box[3] - S.box[1]);
    }
    if (drag && drag.kind === 'box' && drag.moved) {
      ctx.setLineDash([6 * px, 4 * px]);
      ctx.strokeStyle = '#ffffff';
      ctx.lineWidth = 1.5 * px;
      const [x0, y0] = drag.start;
      const [x1, y1] = drag.now;
      ctx.strokeRect(Math.min(x0, x1), Math.min(y0, y1), Math.abs(x1 - x0), Math.abs(y1 - y0));
      ctx.setLineDash([]);
    }
    S.points.forEach(([x, y], i) => {
      ctx.beginPath();
      ctx.arc(x, y, 5 * px, 0, 2 * Math.PI);
      ctx.fillStyle = S.labels[i] ? '#00c853' : '#ff1744';
      ctx.fill();
      ctx.lineWidth = 1.5 * px;
      ctx.strokeStyle = '#ffffff';
      ctx.stroke();
    });
    if (polygonCache) {
      ctx.strokeStyle = '#ffeb3b';
      ctx.lineWidth = 2 * px;
      for (const poly of polygonCache) {
        ctx.beginPath();
        poly.forEach(([x, y], i) => (i ? ctx.lineTo(x + 0.5, y + 0.5) : ctx.moveTo(x + 0.5, y + 0.5)));
        ctx.closePath();
        ctx.stroke();
        ctx.fillStyle = '#ffeb3b';
        for (const [x, y] of poly) ctx.fillRect(x + 0.5 - 2 * px, y + 0.5 - 2 * px, 4 * px, 4 * px);
      }
    }
    if (hover && (S.tool === 'brush' || S.tool === 'eraser')) {
      ctx.beginPath();
      ctx.arc(hover[0], hover[1], S.brushR, 0, 2 * Math.PI);
      ctx.strokeStyle = S.tool === 'brush' ? '#ffffff' : '#ff1744';
      ctx.lineWidth = px;
      ctx.stroke();
    }
  }

  function renderSide() {
    for (const [name, b] of Object.entries(toolButtons)) b.classList.toggle('active', S.tool === name);
    if (document.activeElement !== textPrompt) textPrompt.value = S.text;
    candInfo.textContent = S.cands.length
      ? `${S.candIdx + 1}/${S.cands.length} (score ${(S.scores[S.candIdx] ?? 0).toFixed(2)})` : '';
    statusInfo.textContent = STATUS_NAMES[image.status] || image.status;
    statusInfo.className = `status s-${image.status}`;
    document.getElementById('mark-done').textContent = image.status === 'done' ? 'Reopen' : 'Mark done';
    document.getElementById('accept').textContent = S.editing ? `Save #${S.editing.id} (Enter)` : 'Accept (Enter)';
  }

  function renderLabels() {
    labelListEl.replaceChildren(...labels.map((lab, i) => h('li.label', {
      'data-label-id': lab.id, onclick: () => selectLabel(lab.id, true),
      className: `label${S.labelId === lab.id ? ' selected' : ''}`,
    }, h('span.swatch', { style: `background:${lab.color || PALETTE[lab.id % PALETTE.length]}` }),
    i < 9 ? h('kbd', {}, String(i + 1)) : null, ` ${lab.name}`)));
  }

  function labelName(id) {
    const lab = labels.find((l) => l.id === id);
    return lab ? lab.name : '—';
  }

  function annColor(a) {
    const lab = labels.find((l) => l.id === a.label_id);
    return (lab && lab.color) || PALETTE[(a.label_id || a.id) % PALETTE.length];
  }

  function renderMaskList() {
    maskListEl.replaceChildren(...S.anns.map((a) => {
      const pending = a.status === 'pending';
      const hidden = S.hidden.has(a.id);
      const labelSelect = h('select.ann-label', { title: 'label', onchange() { changeLabel(a, this.value); } },
        h('option', { value: '' }, '(no label)'),
        labels.map((l) => h('option', { value: l.id, selected: l.id === a.label_id }, l.name)));
      return h(`li.mask-row${pending ? '.pending' : ''}`, { 'data-ann-id': a.id, 'data-status': a.status,
        'data-source': a.source },
      h('span.swatch', { style: `background:${pending ? '#ffaa00' : annColor(a)}` }),
      h('span.ann-id', {}, `#${a.id}`), labelSelect,
      h('span.tag', {}, pending ? `${a.source}: to review` : a.source),
      h('span.muted', {}, `${a.area} px`),
      h('span.buttons', {},
        pending ? h('button.review-accept', { onclick: () => review(a, 'accepted') }, 'Accept') : null,
        pending ? h('button.review-fix', { onclick: () => edit(a) }, 'Fix') : null,
        pending ? h('button.review-reject', { onclick: () => review(a, 'rejected') }, 'Reject') : null,
        pending ? null : h('button.edit', { onclick: () => edit(a) }, 'Edit'),
        h('button.toggle-visible', { onclick: () => toggleHidden(a.id) }, hidden ? 'Show' : 'Hide'),
        h('button.poly', { onclick: () => showPolygon(a.id) }, 'Polygon'),
        h('button.delete', { onclick: () => removeAnn(a) }, 'Delete')));
    }));
  }

  // ---- polygon view ---------------------------------------------------------------------------------
  let polygonCache = null;
  function showPolygon(which) {
    S.polygonOf = which;
    updatePolygon();
  }

  function updatePolygon() {
    polygonCache = null;
    let mask = null;
    if (S.polygonOf === 'current') mask = currentMask();
    else if (S.polygonOf !== null) {
      const a = S.anns.find((x) => x.id === S.polygonOf);
      mask = a ? a.mask : null;
    }
    polyPanel.classList.toggle('hidden', !mask);
    if (mask) {
      polygonCache = polygons(mask, S.eps);
      const n = polygonCache.reduce((t, p) => t + p.length, 0);
      polyCount.textContent = ` ${n} vertices in ${polygonCache.length} polygon(s)`;
      polyCount.dataset.vertices = String(n);
    }
    renderPrompts();
  }

  // ---- history --------------------------------------------------------------------------------------
  function snapshot() {
    return { points: S.points.slice(), labels: S.labels.slice(), box: S.box, text: S.text, cands: S.cands,
      scores: S.scores, candIdx: S.candIdx, lowRes: S.lowRes, strokes: S.strokes.slice(), base: S.base, editing: S.editing };
  }

  function restore(snap) {
    decodeSeq += 1; // a decode still running belongs to another state
    Object.assign(S, snap);
    S.points = snap.points.slice();
    S.labels = snap.labels.slice();
    S.strokes = snap.strokes.slice();
    changed();
    if (S.polygonOf === 'current') updatePolygon();
  }

  function remember() {
    undoStack.push(snapshot());
    if (undoStack.length > HISTORY_LIMIT) undoStack.shift();
    redoStack = [];
    if (!S.startedAt) S.startedAt = new Date();
  }

  function undo() {
    if (!undoStack.length) { banner('Nothing to undo on the current mask', 'info'); return; }
    redoStack.push(snapshot());
    restore(undoStack.pop());
  }

  function redo() {
    if (!redoStack.length) { banner('Nothing to redo', 'info'); return; }
    undoStack.push(snapshot());
    restore(redoStack.pop());
  }

  function resetEditor() {
    decodeSeq += 1;
    Object.assign(S, { points: [], labels: [], box: null, text: '', cands: [], scores: [], candIdx: 0, lowRes: null,
      strokes: [], base: null, editing: null, clicks: 0, kinds: new Set(), startedAt: null });
    undoStack = [];
    redoStack = [];
    if (S.polygonOf === 'current') S.polygonOf = null;
    hideConflict();
    changed();
    updatePolygon();
  }

  function clearCurrent() {
    if (!S.points.length && !S.box && !S.text && !S.strokes.length && !S.base) return;
    remember();
    Object.assign(S, { points: [], labels: [], box: null, text: '', cands: [], scores: [], candIdx: 0, lowRes: null,
      strokes: [], base: null, editing: null });
    changed();
  }

  // ---- prompts and decoding -------------------------------------------------------------------------
  /** list[order[k]] at k, each read only when asked for (decoder.js's masks are lazy getters). */
  function reordered(list, order) {
    const out = [];
    order.forEach((i, k) => Object.defineProperty(out, k, { enumerable: true, get: () => list[i] }));
    return out;
  }

  function maskInput() {
    return S.cands.length && S.lowRes ? S.lowRes[S.candIdx] ?? null : null;
  }

  async function decode() {
    const seq = ++decodeSeq;
    if (!S.points.length && !S.box && !S.text) {
      Object.assign(S, { cands: [], scores: [], candIdx: 0, lowRes: null });
      changed();
      return;
    }
    maskLayer.dataset.busy = '1';
    try {
      // one prompt is ambiguous: the three candidates; more prompts: the single refined mask (as in SAM)
      const multimask = S.points.length + (S.box ? 1 : 0) <= 1;
      const [pts, labs] = S.points.length ? [S.points, S.labels] : [null, null]; // a box alone: no points
      const r = S.text ? await textDecode(pts, labs)
        : await decoder.decode(imageId, pts, labs, S.box, maskInput(), { multimask });
      if (seq !== decodeSeq) return;
      const order = r.scores.map((_, i) => i).sort((a, b) => r.scores[b] - r.scores[a]);
      const feedback = r.feedback || [];
      S.cands = reordered(r.masks, order); // read lazily: decoder.js upsamples a candidate when first shown
      S.scores = order.map((i) => r.scores[i]);
      S.lowRes = order.map((i) => feedback[i] ?? null); // what to feed back for each candidate
      S.candIdx = 0;
      changed();
      if (S.polygonOf === 'current') updatePolygon();
    } catch (err) {
      if (seq === decodeSeq) banner(`Could not decode the click: ${err.message}`);
    } finally {
      if (seq === decodeSeq) {
        decodes += 1;
        maskLayer.dataset.decodes = String(decodes);
        maskLayer.dataset.busy = '0';
      }
    }
  }

  /** Prompts with text go to the server (text models run there), answers as decoder.js gives them. */
  async function textDecode(points, labels) {
    const fed = maskInput();
    const r = await api('POST', `${base}/images/${imageId}/predict`, { points, labels, box: S.box, text: S.text,
      mask_input: fed && fed.prediction_id !== undefined ? fed : null });
    return { masks: r.masks.map((m) => decodeRle(m.rle)), scores: r.masks.map((m) => m.score),
      feedback: r.masks.map((m) => ({ prediction_id: r.prediction_id, index: m.index })) };
  }

  function setText(value) {
    remember();
    S.text = value.trim();
    S.clicks += 1;
    S.kinds.add('text');
    decode();
  }

  function addPoint(p, label) {
    remember();
    S.points.push(clampPoint(p));
    S.labels.push(label);
    S.clicks += 1;
    S.kinds.add('point');
    renderPrompts();
    decode();
  }

  function setBox(a, b) {
    const [x0, y0] = clampPoint(a);
    const [x1, y1] = clampPoint(b);
    remember();
    S.box = [Math.min(x0, x1), Math.min(y0, y1), Math.max(x0, x1), Math.max(y0, y1)];
    S.clicks += 1;
    S.kinds.add('box');
    renderPrompts();
    decode();
  }

  function cycle() {
    if (S.cands.length < 2) return;
    remember();
    S.candIdx = (S.candIdx + 1) % S.cands.length;
    changed();
    if (S.polygonOf === 'current') updatePolygon();
  }

  function setTool(name) {
    S.tool = name;
    dropPreview();
    promptLayer.dataset.tool = name;
    renderSide();
    renderPrompts();
  }

  // ---- hover preview --------------------------------------------------------------------------------
  function previewAllowed() {
    return previewOn && S.tool === 'point' && !drag && !spaceDown && !S.points.length && !S.box && !S.text
      && !S.base && !S.strokes.length && !S.editing;
  }

  function dropPreview(redraw = true) {
    previewSeq += 1; // a preview decode still running is stale
    clearTimeout(previewTimer);
    previewTimer = null;
    if (preview) {
      preview = null;
      if (redraw) renderMasks();
    }
  }

  function schedulePreview(e) {
    dropPreview();
    if (!previewAllowed()) return;
    const [x, y] = toImage(e);
    if (x < 0 || y < 0 || x >= W || y >= H) return;
    const seq = previewSeq;
    previewTimer = setTimeout(async () => {
      try {
        const r = await decoder.decode(imageId, [[x, y]], [1], null, null, { multimask: true, prepare: false });
        if (seq !== previewSeq || !previewAllowed()) return;
        preview = { canvas: maskCanvas(r.masks[0], PREVIEW_RGBA), area: maskArea(r.masks[0]) };
        previews += 1;
        maskLayer.dataset.previews = String(previews);
        renderMasks();
      } catch { /* a preview is a convenience: a click still decodes and reports its own errors */ }
    }, PREVIEW_DELAY_MS);
  }

  function setPreview(on) {
    previewOn = on && decoder.kind === 'browser';
    previewBox.checked = previewOn;
    dropPreview();
  }

  // ---- mouse ----------------------------------------------------------------------------------------
  function onDown(e) {
    promptLayer.focus();
    dropPreview();
    const p = toImage(e);
    if (e.button === 1 || (e.button === 0 && spaceDown)) {
      e.preventDefault();
      drag = { kind: 'pan', x: e.clientX, y: e.clientY, ox: view.ox, oy: view.oy };
    } else if (e.button === 2) {
      drag = { kind: 'negative', start: p };
    } else if (e.button === 0 && (S.tool === 'brush' || S.tool === 'eraser')) {
      remember();
      const stroke = { mode: S.tool, r: S.brushR, pts: [p] };
      S.strokes = [...S.strokes, stroke];
      S.clicks += 1;
      S.kinds.add('brush');
      drag = { kind: 'stroke', stroke };
      const m = currentMask() || emptyMask(W, H);
      applyStroke(m, { ...stroke, pts: [p] });
      current = m;
      currentCanvas = maskCanvas(m, CURRENT_RGBA);
      renderMasks();
    } else if (e.button === 0) {
      drag = { kind: (e.shiftKey || S.tool === 'box') ? 'box' : 'click', start: p, now: p, x: e.clientX,
        y: e.clientY, alt: e.altKey, moved: false };
    }
    if (drag) {
      window.addEventListener('mousemove', onMove);
      window.addEventListener('mouseup', onUp);
    }
  }

  function onMove(e) {
    if (!drag) return;
    if (drag.kind === 'pan') {
      view.ox = drag.ox + e.clientX - drag.x;
      view.oy = drag.oy + e.clientY - drag.y;
      render();
    } else if (drag.kind === 'stroke') {
      const p = toImage(e);
      const pts = drag.stroke.pts;
      const last = pts[pts.length - 1];
      pts.push(p);
      applyStroke(current, { ...drag.stroke, pts: [last, p] });
      currentCanvas = maskCanvas(current, CURRENT_RGBA);
      hover = p;
      renderMasks();
      renderPrompts();
    } else if (drag.kind === 'click' || drag.kind === 'box') {
      drag.now = toImage(e);
      if (Math.hypot(e.clientX - drag.x, e.clientY - drag.y) > 5) {
        drag.moved = true;
        drag.kind = 'box';
      }
      renderPrompts();
    }
  }

  function onUp(e) {
    window.removeEventListener('mousemove', onMove);
    window.removeEventListener('mouseup', onUp);
    const d = drag;
    drag = null;
    if (!d) return;
    if (d.kind === 'negative') addPoint(d.start, 0);
    else if (d.kind === 'click') addPoint(d.start, d.alt || e.altKey ? 0 : 1);
    else if (d.kind === 'box') {
      if (d.moved) setBox(d.start, d.now); else addPoint(d.start, d.alt || e.altKey ? 0 : 1);
    } else if (d.kind === 'stroke') {
      current = undefined; // recomposed from the strokes
      changed();
      if (S.polygonOf === 'current') updatePolygon();
    }
  }

  function onWheel(e) {
    e.preventDefault();
    const r = promptLayer.getBoundingClientRect();
    const sx = e.clientX - r.left;
    const sy = e.clientY - r.top;
    const factor = Math.exp(-e.deltaY * 0.0015);
    const scale = Math.min(Math.max(view.scale * factor, 0.05), 40);
    view = { scale, ox: sx - ((sx - view.ox) * scale) / view.scale, oy: sy - ((sy - view.oy) * scale) / view.scale };
    promptLayer.dataset.scale = scale.toFixed(4);
    render();
  }

  promptLayer.addEventListener('mousedown', onDown);
  promptLayer.addEventListener('contextmenu', (e) => e.preventDefault());
  promptLayer.addEventListener('wheel', onWheel, { passive: false });
  promptLayer.addEventListener('mousemove', (e) => {
    if (!drag && (S.tool === 'brush' || S.tool === 'eraser')) { hover = toImage(e); renderPrompts(); }
    if (!drag) schedulePreview(e);
  });
  promptLayer.addEventListener('mouseleave', () => dropPreview());

  // ---- keys -----------------------------------------------------------------------------------------
  function onKey(e) {
    if (inField(e)) return;
    const key = e.key;
    const ctrl = e.ctrlKey || e.metaKey;
    if (key === ' ') { spaceDown = true; e.preventDefault(); return; }
    if (ctrl && (key === 'z' || key === 'Z')) { e.preventDefault(); if (e.shiftKey) redo(); else undo(); return; }
    if (ctrl && (key === 'y' || key === 'Y')) { e.preventDefault(); redo(); return; }
    if (ctrl || e.altKey) return;
    if (key === 'c' || key === 'Tab') { e.preventDefault(); cycle(); }
    else if (key === 'Enter') { e.preventDefault(); accept(); }
    else if (key === 'Escape') clearCurrent();
    else if (key === 'b') setTool('brush');
    else if (key === 'e') setTool('eraser');
    else if (key === 'v') setTool('point');
    else if (key === 'x') setTool('box');
    else if (key === '[') { S.brushR = Math.max(1, S.brushR - 2); brushSize.value = S.brushR; renderPrompts(); }
    else if (key === ']') { S.brushR = Math.min(60, S.brushR + 2); brushSize.value = S.brushR; renderPrompts(); }
    else if (key === 'f') { fit(); render(); }
    else if (key === 'h') setPreview(!previewOn);
    else if (key === 'n') nextImage();
    else if (/^[1-9]$/.test(key)) {
      const lab = labels[+key - 1];
      if (lab) selectLabel(lab.id);
    }
  }
  function onKeyUp(e) { if (e.key === ' ') spaceDown = false; }
  document.addEventListener('keydown', onKey);
  document.addEventListener('keyup', onKeyUp);

  // ---- labels ---------------------------------------------------------------------------------------
  function selectLabel(id, toggle = false) {
    S.labelId = toggle && S.labelId === id ? null : id;
    renderLabels();
  }

  async function addLabel(e) {
    e.preventDefault();
    const name = newLabel.value.trim();
    if (!name) return;
    try {
      const lab = await api('POST', `${base}/labels`, { name });
      labels = [...labels, lab];
      newLabel.value = '';
      S.labelId = lab.id;
      renderLabels();
      renderMaskList();
    } catch (err) { banner(`Label not added: ${err.message}`); }
  }

  // ---- saved masks ----------------------------------------------------------------------------------
  async function loadAnnotations() {
    const anns = await api('GET', `${base}/images/${imageId}/annotations`);
    S.anns = anns.filter((a) => a.status !== 'rejected');
    annCanvas.clear();
    for (const a of S.anns) {
      a.mask = decodeRle(a.rle);
      const pending = a.status === 'pending';
      annCanvas.set(a.id, maskCanvas(a.mask, pending ? PENDING_RGBA : hexRgba(annColor(a), 110), pending));
    }
    renderMaskList();
    renderMasks();
    if (S.polygonOf !== null && S.polygonOf !== 'current') updatePolygon();
  }

  function toggleHidden(id) {
    if (S.hidden.has(id)) S.hidden.delete(id); else S.hidden.add(id);
    renderMaskList();
    renderMasks();
  }

  async function onConflictless(action, what) {
    try {
      await action();
    } catch (err) {
      if (err.status === 409) banner(`${what}: ${err.message} — the list is reloaded, look again and retry.`);
      else banner(`${what}: ${err.message}`);
    }
    await loadAnnotations();
  }

  function review(a, status) {
    return onConflictless(() => api('PATCH', `${base}/annotations/${a.id}`, { version: a.version, status }),
      status === 'accepted' ? `Accept #${a.id}` : `Reject #${a.id}`);
  }

  function changeLabel(a, value) {
    const body = { version: a.version };
    if (value) body.label_id = +value; else body.label_id = null;
    return onConflictless(() => api('PATCH', `${base}/annotations/${a.id}`, body), `Label of #${a.id}`);
  }

  function removeAnn(a) {
    if (S.editing && S.editing.id === a.id) resetEditor();
    return onConflictless(() => api('DELETE', `${base}/annotations/${a.id}?version=${a.version}`), `Delete #${a.id}`);
  }

  async function undoSaved() {
    try {
      const r = await api('POST', `${base}/images/${imageId}/undo`);
      banner(`Undone: ${r.undone} of mask #${r.annotation.id}`, 'info');
    } catch (err) { banner(`Undo: ${err.message}`, err.status === 404 ? 'info' : 'error'); }
    await loadAnnotations();
  }

  function edit(a) {
    remember();
    Object.assign(S, { points: [], labels: [], box: null, text: '', cands: [], scores: [], candIdx: 0, lowRes: null,
      strokes: [], base: a.mask, editing: { id: a.id, version: a.version, status: a.status } });
    if (a.label_id) S.labelId = a.label_id;
    renderLabels();
    changed();
  }

  // ---- saving ---------------------------------------------------------------------------------------
  function hideConflict() {
    conflict = null;
    conflictBox.classList.add('hidden');
    conflictBox.replaceChildren();
  }

  function showConflict(err) {
    const theirs = err.body && err.body.current;
    conflict = theirs;
    conflictBox.classList.remove('hidden');
    conflictBox.replaceChildren(
      h('strong', {}, 'Not saved: conflict. '),
      h('span', {}, `${err.message}${theirs ? ` (mask #${theirs.id} is now at version ${theirs.version})` : ''}. `,
        'Your mask is still here, nothing is lost.'),
      theirs ? h('button#conflict-overwrite', { onclick: overwrite }, 'Save mine over theirs') : null,
      h('button#conflict-discard', { onclick: discardMine }, 'Discard mine, show theirs'));
  }

  async function overwrite() {
    if (!conflict || !S.editing) return;
    S.editing = { ...S.editing, version: conflict.version };
    await accept();
  }

  async function discardMine() {
    resetEditor();
    await loadAnnotations();
  }

  async function accept() {
    const m = currentMask();
    if (!m || maskArea(m) === 0) { banner('Nothing to save: click on an object first', 'info'); return; }
    const event = { started_at: (S.startedAt || new Date()).toISOString(), ended_at: new Date().toISOString(),
      clicks: S.clicks, prompt_kinds: [...S.kinds] };
    const body = { rle: encodeRle(m), event };
    if (S.labelId) body.label_id = S.labelId;
    let saved;
    try {
      if (S.editing) {
        saved = await api('PATCH', `${base}/annotations/${S.editing.id}`,
          { ...body, version: S.editing.version, status: 'accepted' });
      } else {
        saved = await api('POST', `${base}/images/${imageId}/annotations`, { ...body, source: 'manual' });
      }
    } catch (err) {
      if (err.status === 409) showConflict(err);
      else banner(`Not saved: ${err.message}. Your mask is still here: try again.`);
      return;
    }
    resetEditor();
    banner(`Saved mask #${saved.id}${S.labelId ? ` as ${labelName(S.labelId)}` : ''}`, 'info');
    if (image.status === 'new') await setStatus('in_progress');
    await loadAnnotations();
  }

  async function setStatus(status) {
    try {
      Object.assign(image, await api('PUT', `${base}/images/${imageId}/status`, { status }));
    } catch (err) { banner(`Status not changed: ${err.message}`); }
    renderSide();
  }

  function toggleDone() { return setStatus(image.status === 'done' ? 'in_progress' : 'done'); }

  async function nextImage() {
    try {
      const queue = await api('GET', `${base}/queue?limit=3`);
      const next = queue.find((i) => i.id !== imageId);
      if (next) window.location.hash = `#/p/${projectId}/image/${next.id}`;
      else banner('No other image left to annotate', 'info');
    } catch (err) { banner(err.message); }
  }

  // ---- start ----------------------------------------------------------------------------------------
  const observer = new ResizeObserver(() => { resize(); });
  resize();
  observer.observe(stage);
  setTool('point');
  renderLabels();
  await loadAnnotations();
  restoreDraft();
  promptLayer.focus();
  promptLayer.dataset.ready = '1';
  if (me.role === 'viewer') banner('You are a viewer: you can look, not save', 'info');

  return () => {
    observer.disconnect();
    dropPreview();
    document.removeEventListener('keydown', onKey);
    document.removeEventListener('keyup', onKeyUp);
    window.removeEventListener('mousemove', onMove);
    window.removeEventListener('mouseup', onUp);
  };
}
