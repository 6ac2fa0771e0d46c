// The mask decoder in the browser: samkit's prompt-encoder + mask-decoder ONNX graphs (the decoder info's
// image_graph_url, graph_url and rest_graph_url: GET /api/projects/{pid}/decoder_*.onnx) on onnxruntime-web
// (WASM, SIMD; threads when the page is cross-origin isolated, as the server serves it, and the embedding
// grid is large), fed the server's fp16 image
// embedding (GET .../images/{iid}/embedding, cached per image). Same arithmetic as samkit.Predictor:
// prompts mapped to the model's input frame. The decoder is split where its work depends on less than the
// whole prompt: decoder_image.onnx runs once per image (the image tokens' products with the weights that every
// click reads, samkit.models.factored_decoder; again for a mask fed back), decoder_lowres.onnx per click
// (the transformer as low-rank updates of those products: the image tokens are never formed), up to the
// low-res logits of the image tokens the upsampling reads (upscaleGrid: a landscape photo's padding rows
// are skipped),
// and upsampleMask() brings each mask shown to the original image (samkit.predict.transforms'
// bilinear chain, at most 3 taps per axis); masks are logits > the model's threshold (0). The best mask
// is upsampled at once, the other candidates when first read (out.masks[i] is a lazy getter). A mask
// fed back needs its whole low-res grid: decoder_rest.onnx computes the skipped tokens' logits in the
// background, just after decode() returns (out.feedback[i] are Promises), and then decoder_image.onnx the
// per-image work for the best mask, which the next click most often feeds back (out.ready).
// dec.prepare(imageId) fetches an image's embedding and runs its per-image graph ahead of the first click.
// When onnxruntime-web cannot start, decode() asks the server (POST .../images/{iid}/predict) instead
// and the decoder says why (kind 'server', reason).
//
//   const dec = await createDecoder(projectId, token);      // dec.kind: 'browser' | 'server', dec.reason
//   const out = await dec.decode(imageId, [[x, y]], [1], null, null);
//   out.masks[0].data  // Uint8Array, 0/1 per pixel, row-major, original image size; masks best-scored first
//   out.scores         // predicted IoU per mask
//   out.lowRes         // Promise of a Float32Array: the best mask's low-res logits (browser); null (server)
//   out.feedback[i]    // what to pass back as maskInput to refine masks[i]: a Promise of its low-res
//                      // logits (browser) or {prediction_id, index} (server)
//   out.ready          // a Promise settled when the background work for the next click is done: the
//                      // feedback grids and the best mask's per-image work (browser; the server's: at once)
//
// decode(imageId, points, labels, box, maskInput, {multimask}): points [[x, y], ...] in original image
// pixels, labels 1 (object) / 0 (background), box [x0, y0, x1, y1] or null, maskInput an earlier result's
// lowRes or feedback[i] (or their values), or null; multimask (default true): the 3 candidates, else the
// single-mask output; prepare (default true): start the background work for a next click that feeds a
// mask back (out.ready) at once; false (a hover preview) leaves it to when out.feedback is read.

import { decodeRle } from './rle.js';

const VENDOR = new URL('./vendor/', import.meta.url).href;
const START_TIMEOUT_MS = 90000; // a slower start is given up for the server
const THREADED_TOKENS = 1024; // image tokens from which the decoder runs on several threads (wasmThreads)
const TAPS = 3; // low-res cells an upsampled pixel reads per axis, at most (axisTaps: the low-res grid is a
// quarter of the input frame, so the two input-frame rows an output reads fall in 3 adjacent low-res rows)
const EMBEDDINGS_KEPT = 4; // images whose embeddings and per-image graph outputs stay in memory (~45 MB each for ViTs)

/** Error with the server's one-line detail. */
async function failure(response, what) {
  let detail = response.statusText;
  try {
    detail = (await response.json()).detail ?? detail;
  } catch {
    // not JSON: keep the status text
  }
  return new Error(`${what}: HTTP ${response.status} ${typeof detail === 'string' ? detail : JSON.stringify(detail)}`);
}

let halfTable = null;

/** Little-endian IEEE fp16 bytes -> Float32Array (a 64 K entry table, built once). */
export function halfToFloat(buffer) {
  if (halfTable === null) {
    halfTable = new Float32Array(65536);
    for (let h = 0; h < 65536; h++) {
      const sign = h & 0x8000 ? -1 : 1;
      const exp = (h >> 10) & 0x1f;
      const frac = h & 0x3ff;
      halfTable[h] = exp === 0 ? sign * frac * 2 ** -24
        : exp === 31 ? (frac ? NaN : sign * Infinity)
          : sign * (1 + frac / 1024) * 2 ** (exp - 15);
    }
  }
  const half = new Uint16Array(buffer);
  const out = new Float32Array(half.length);
  for (let i = 0; i < half.length; i++) out[i] = halfTable[half[i]];
  return out;
}

/** Per output pixel along one axis, the low-res cells it reads and their weights: the bilinear resize
 * low -> img (the padded input frame), cropped to the first `inp` cells, then resized to `out`, as
 * samkit.predict.transforms.upsample_operators (align_corners=False, source coordinates clamped at 0).
 * Equal cells are merged (at most TAPS remain) and the list is padded with zero weights to TAPS.
 * Returns {index: Int32Array(out * TAPS), weight: Float32Array(out * TAPS), used: low-res cells read}. */
export function axisTaps(out, inp, low, img) {
  const index = new Int32Array(out * TAPS);
  const weight = new Float32Array(out * TAPS);
  let used = 0;
  const bilinear = (o, outLen, inLen) => { // [i0, i1, frac] of one output position
    const src = Math.max(0, (o + 0.5) * (inLen / outLen) - 0.5);
    const i0 = Math.min(Math.floor(src), inLen - 1);
    return [i0, Math.min(i0 + 1, inLen - 1), src - i0];
  };
  for (let o = 0; o < out; o++) {
    const [r0, r1, f] = bilinear(o, out, inp);
    const cells = new Map(); // low-res cell -> weight (float64 until stored)
    for (const [r, wr] of [[r0, 1 - f], [r1, f]]) {
      const [j0, j1, g] = bilinear(r, img, low);
      for (const [j, wj] of [[j0, 1 - g], [j1, g]]) cells.set(j, (cells.get(j) ?? 0) + wr * wj);
    }
    if (cells.size > TAPS) throw new Error(`a low-res grid of ${low} for an input frame of ${img}: unsupported`);
    let k = 0;
    for (const [j, w] of cells) {
      index[o * TAPS + k] = j;
      weight[o * TAPS + k] = w;
      used = Math.max(used, j + 1);
      k += 1;
    }
    for (; k < TAPS; k++) index[o * TAPS + k] = index[o * TAPS]; // zero weight on a cell already read
  }
  return { index, weight, used };
}

/** Rows and columns of image tokens (of a grid x grid embedding, each token `low / grid` low-res cells
 * a side) that hold the low-res cells `rows` / `cols` (axisTaps) read: the decoder computes only those
 * (samkit.predict.transforms.upscale_grid). */
export function upscaleGrid(rows, cols, low, grid) {
  const cell = low / grid;
  return [rows, cols].map((taps) => Math.min(grid, Math.ceil(taps.used / cell)));
}

/** One mask of low-res logits (row-major, `stride` cells a row: the low-res grid's width or the part of
 * it decoded) -> {width, height, data}, data a Uint8Array of 0/1 (logit > threshold) at the original
 * size. `rows` / `cols`: axisTaps of each axis. */
export function upsampleMask(logits, stride, rows, cols, threshold) {
  const height = rows.index.length / TAPS;
  const width = cols.index.length / TAPS;
  const ci = cols.index;
  const cw = cols.weight;
  const tmp = new Float32Array(rows.used * width); // low-res rows resized along x
  for (let j = 0; j < rows.used; j++) {
    const base = j * stride;
    const out = j * width;
    for (let x = 0, t = 0; x < width; x++, t += TAPS) {
      tmp[out + x] = cw[t] * logits[base + ci[t]] + cw[t + 1] * logits[base + ci[t + 1]]
        + cw[t + 2] * logits[base + ci[t + 2]];
    }
  }
  const data = new Uint8Array(height * width);
  for (let y = 0, t = 0; y < height; y++, t += TAPS) {
    const a = rows.index[t] * width;
    const b = rows.index[t + 1] * width;
    const c = rows.index[t + 2] * width;
    const wa = rows.weight[t];
    const wb = rows.weight[t + 1];
    const wc = rows.weight[t + 2];
    const row = y * width;
    for (let x = 0; x < width; x++) {
      data[row + x] = wa * tmp[a + x] + wb * tmp[b + x] + wc * tmp[c + x] > threshold ? 1 : 0;
    }
  }
  return { width, height, data };
}

/** The prompts checked as the server checks them; one-line errors. */
function checkPrompts(points, labels, box, size) {
  const [height, width] = size;
  if ((points == null) !== (labels == null)) throw new Error('points and labels go together: pass both');
  if (points != null) {
    if (!Array.isArray(points) || points.length === 0 || points.length !== labels.length) {
      throw new Error(`${points?.length} points but ${labels?.length} labels`);
    }
    points.forEach(([x, y], i) => {
      if (!Number.isFinite(x) || !Number.isFinite(y)) throw new Error(`point ${i} is not two numbers`);
      if (x < 0 || x > width || y < 0 || y > height) {
        throw new Error(`point (${x}, ${y}) is outside the image (${width} x ${height} pixels)`);
      }
      if (labels[i] !== 0 && labels[i] !== 1) throw new Error(`labels must be 1 or 0, got ${labels[i]}`);
    });
  }
  if (box != null) {
    if (box.length !== 4 || !box.every(Number.isFinite)) throw new Error('box must be 4 numbers x0, y0, x1, y1');
    if (box[2] < box[0] || box[3] < box[1]) throw new Error('box has x1 < x0 or y1 < y0 (expected x0, y0, x1, y1)');
  }
  if (points == null && box == null) return false;
  return true;
}

function parseSize(header) {
  const size = (header ?? '').split(',').map(Number);
  if (size.length !== 2 || !size.every((v) => v > 0)) throw new Error(`bad size header ${header}`);
  return size;
}

/** [points, labels] with no points as nulls (an empty list is no points). */
function pointPrompts(points, labels) {
  return points == null || points.length === 0 ? [null, labels?.length ? labels : null] : [points, labels];
}

/** Runs one call at a time (an onnxruntime-web session runs one at a time). */
function serial() {
  let last = Promise.resolve();
  return (fn) => {
    const next = last.then(fn, fn);
    last = next.catch(() => {});
    return next;
  };
}

/** WebAssembly threads for a decoder over `tokens` image tokens: every core (up to 4) in a cross-origin
 * isolated page for the large grids of the SAM ViT models (64 x 64: 116 -> 65 ms per click on 2 cores);
 * one for small grids, whose many small operations lose more to the threads' hand-offs than they gain
 * (samkit_tiny's 16 x 16: 19 ms on one thread, 25 ms on two). */
function wasmThreads(tokens) {
  if (!globalThis.crossOriginIsolated || tokens < THREADED_TOKENS) return 1;
  return Math.max(1, Math.min(4, navigator.hardwareConcurrency || 1));
}

async function browserDecoder(api, headers, options) {
  if (typeof WebAssembly !== 'object') throw new Error('this browser has no WebAssembly');
  const infoResponse = await fetch(`${api}/decoder`, { headers });
  if (!infoResponse.ok) throw await failure(infoResponse, 'decoder');
  const info = await infoResponse.json();

  const ort = await import(options.ortUrl ?? `${VENDOR}ort.wasm.min.mjs`);
  const threads = options.threads ?? wasmThreads(info.embedding_shape[2] * info.embedding_shape[3]);
  ort.env.wasm.wasmPaths = options.wasmPaths ?? VENDOR;
  ort.env.wasm.numThreads = threads;
  ort.env.wasm.proxy = false;
  ort.env.logLevel = 'error';
  async function load(url, what) {
    const r = await fetch(url, { headers });
    if (!r.ok) throw await failure(r, what);
    return ort.InferenceSession.create(new Uint8Array(await r.arrayBuffer()), {
      executionProviders: ['wasm'], graphOptimizationLevel: 'all',
    });
  }
  const imageSession = await load(info.image_graph_url, 'decoder image graph');
  const session = await load(info.graph_url, 'decoder graph');
  const rest = await load(info.rest_graph_url, 'decoder rest graph');
  const low = info.low_res;
  const grid = info.embedding_shape[2]; // tokens a side (the embedding is square)
  const run = serial();
  const embeddings = new Map(); // imageId -> Promise<{tensor, originalSize, inputSize, cache}>, oldest first

  /** The per-image graph's outputs (named products of the image tokens that every click reads, see
   * samkit.models.factored_decoder) for an embedding tensor and a mask fed back (low x low logits) or none. */
  function imageWork(tensor, maskInput) {
    if (maskInput != null && maskInput.length !== low * low) {
      throw new Error(`maskInput must be ${low} x ${low} low-res logits (an earlier result's lowRes or feedback)`);
    }
    return run(() => imageSession.run({
      image_embeddings: tensor,
      // without a mask, a 4 x 4 one (the graph broadcasts its embedding: the mask branch costs nothing)
      mask_input: maskInput == null ? new ort.Tensor('float32', new Float32Array(16), [1, 1, 4, 4])
        : new ort.Tensor('float32', Float32Array.from(maskInput), [1, 1, low, low]),
      has_mask_input: new ort.Tensor('float32', Float32Array.of(maskInput == null ? 0 : 1), [1]),
    }));
  }

  function embedding(imageId) {
    const key = String(imageId);
    let entry = embeddings.get(key);
    if (entry === undefined) {
      entry = (async () => {
        const r = await fetch(`${api}/images/${imageId}/embedding`, { headers });
        if (!r.ok) throw await failure(r, `embedding of image ${imageId}`);
        if (r.headers.get('X-Model-Version') !== info.model_version) {
          throw new Error(`image ${imageId}'s embedding is from model ${r.headers.get('X-Model-Version')}, `
            + `the decoder from ${info.model_version}: reload the page`);
        }
        const shape = r.headers.get('X-Embedding-Shape').split(',').map(Number);
        const tensor = new ort.Tensor('float32', halfToFloat(await r.arrayBuffer()), shape);
        return {
          tensor,
          originalSize: parseSize(r.headers.get('X-Original-Size')),
          inputSize: parseSize(r.headers.get('X-Input-Size')),
          cache: await imageWork(tensor, null), // what every click without a mask fed back starts from
        };
      })();
      entry.catch(() => embeddings.delete(key)); // a failed fetch is retried next time
    } else {
      embeddings.delete(key); // most recently used last
    }
    embeddings.set(key, entry);
    while (embeddings.size > EMBEDDINGS_KEPT) embeddings.delete(embeddings.keys().next().value);
    return entry;
  }

  function feeds(emb, cache, points, labels, box, upscale) {
    const [height, width] = emb.originalSize;
    const sx = emb.inputSize[1] / width; // as samkit.predict.transforms.scale_coords
    const sy = emb.inputSize[0] / height;
    const coords = [];
    const labs = [];
    (points ?? []).forEach(([x, y], i) => {
      coords.push(x * sx, y * sy);
      labs.push(labels[i]);
    });
    if (box != null) {
      coords.push(box[0] * sx, box[1] * sy, box[2] * sx, box[3] * sy);
      labs.push(2, 3);
    } else {
      coords.push(0, 0); // SAM pads point-only prompts with one "not a point"
      labs.push(-1);
    }
    const n = labs.length;
    return {
      ...cache,
      point_coords: new ort.Tensor('float32', Float32Array.from(coords), [1, n, 2]),
      point_labels: new ort.Tensor('float32', Float32Array.from(labs), [1, n]),
      upscale_grid: new ort.Tensor('int64', BigInt64Array.from(upscale.map(BigInt)), [2]),
    };
  }

  let taps = { key: '', rows: null, cols: null, upscale: null }; // axisTaps of the last image size decoded
  function tapsFor(emb) {
    const key = `${emb.originalSize}/${emb.inputSize}`;
    if (taps.key !== key) {
      const rows = axisTaps(emb.originalSize[0], emb.inputSize[0], low, info.img_size);
      const cols = axisTaps(emb.originalSize[1], emb.inputSize[1], low, info.img_size);
      taps = { key, rows, cols, upscale: upscaleGrid(rows, cols, low, grid) };
    }
    return taps;
  }

  /** The rest graph's inputs: the per-image `ct1`, a click's factors, and the tokens wanted. */
  function restFeeds(cache, out, tokens) {
    return {
      ct1: cache.ct1, row_scale: out.row_scale, factors: out.factors, ct1_factor: out.ct1_factor,
      mask_weights: out.mask_weights,
      token_index: new ort.Tensor('int64', BigInt64Array.from(tokens.map(BigInt)), [tokens.length]),
    };
  }

  /** The whole low-res grids (low x low each) of masks `order` from a decode's outputs: the decoded
   * tokens' part (th x tw tokens) copied, the other tokens' logits from the rest graph. */
  async function completeGrids(order, part, [th, tw], cache, clickOut) {
    const cell = low / grid;
    const missing = [];
    for (let i = 0; i < grid; i++) for (let j = 0; j < grid; j++) if (i >= th || j >= tw) missing.push(i * grid + j);
    const out = await run(() => rest.run(restFeeds(cache, clickOut, missing)));
    const patches = out.token_masks.data; // (1, M, n, cell, cell)
    out.token_masks.dispose?.();
    const width = tw * cell;
    const size = th * cell * width;
    return order.map((m) => {
      const full = new Float32Array(low * low);
      for (let r = 0; r < th * cell; r++) {
        full.set(part.subarray(m * size + r * width, m * size + (r + 1) * width), r * low);
      }
      missing.forEach((t, k) => {
        const [i, j] = [Math.floor(t / grid), t % grid];
        const base = (m * missing.length + k) * cell * cell;
        for (let a = 0; a < cell; a++) {
          full.set(patches.subarray(base + a * cell, base + (a + 1) * cell), (i * cell + a) * low + j * cell);
        }
      });
      return full;
    });
  }

  async function decode(imageId, pointsIn, labelsIn, box, maskInputIn, { multimask = true, prepare = true } = {}) {
    const [points, labels] = pointPrompts(pointsIn, labelsIn);
    const emb = await embedding(imageId);
    const maskInput = await maskInputIn; // an earlier result's feedback is a Promise
    if (!checkPrompts(points, labels, box, emb.originalSize) && maskInput == null) {
      throw new Error('give at least one prompt: points, box or maskInput');
    }
    const { rows, cols, upscale } = tapsFor(emb);
    let cache = emb.cache;
    if (maskInput != null) { // the best mask of the last result was prepared in the background
      cache = await (emb.next?.mask === maskInput ? emb.next.work : imageWork(emb.tensor, maskInput));
    }
    const out = await run(() => session.run(feeds(emb, cache, points, labels, box, upscale)));
    const iou = out.iou_predictions.data;
    const order = (multimask ? [1, 2, 3] : [0]).sort((a, b) => iou[b] - iou[a]);
    const part = out.low_res_masks.data; // (1, 4, th * cell, tw * cell)
    const [, , ph, pw] = out.low_res_masks.dims;
    const lowResList = order.map((k) => part.subarray(k * ph * pw, (k + 1) * ph * pw));
    const scores = order.map((k) => iou[k]);
    // the whole low-res grids, for a mask fed back: completed after this task (the page draws the mask
    // first), when the first feedback is read or, with `prepare`, at once
    let gridsPromise = null;
    const grids = () => (gridsPromise ??= ph === low && pw === low ? Promise.resolve(lowResList)
      : new Promise((resolve) => { setTimeout(resolve, 0); })
        .then(() => completeGrids(order, part, upscale, cache, out)));
    const masks = [];
    const made = [];
    lowResList.forEach((logits, i) => Object.defineProperty(masks, i, {
      enumerable: true,
      get: () => (made[i] ??= upsampleMask(logits, pw, rows, cols, info.mask_threshold)),
    }));
    void masks[0]; // the best mask now; the other candidates when first read
    const feedback = [];
    order.forEach((_, i) => Object.defineProperty(feedback, i, {
      enumerable: true,
      get: () => {
        const one = grids().then((all) => all[i]);
        one.catch(() => {}); // a failure is the feedback's, where it is awaited
        return one;
      },
    }));
    // the next click most often feeds the best mask back: with `prepare`, its per-image work is done now,
    // in the background (a hover preview, whose masks are never fed back, asks for none of it)
    const ready = !prepare ? Promise.resolve() : grids().then((all) => {
      const next = { mask: all[0], work: imageWork(emb.tensor, all[0]) };
      emb.next = next;
      return next.work;
    }).then(() => {}, () => {});
    return { masks, scores, get lowRes() { return feedback[0]; }, feedback, ready };
  }

  // one run on a blank embedding: the first click does not pay for the kernels' set-up, and a runtime
  // that cannot run the graph is found now (and the server asked instead)
  const size = info.embedding_shape.reduce((a, b) => a * b, 1);
  const blank = { tensor: new ort.Tensor('float32', new Float32Array(size), info.embedding_shape),
    originalSize: [info.img_size, info.img_size], inputSize: [info.img_size, info.img_size] };
  const warmImage = await imageWork(blank.tensor, null);
  const warm = await session.run(feeds(blank, warmImage, [[1, 1]], [1], null, [grid, grid]));
  const warmRest = await rest.run(restFeeds(warmImage, warm, [0]));
  [...Object.values(warmImage), ...Object.values(warm), ...Object.values(warmRest)].forEach((t) => t.dispose?.());

  const simd = 'WASM SIMD';
  const threadNote = threads > 1 ? `${threads} threads` : `1 thread${globalThis.crossOriginIsolated ? ''
    : ' (the page is not cross-origin isolated)'}`;
  // (an isolated page with a small grid runs one thread by choice: see wasmThreads)
  return {
    kind: 'browser',
    reason: `decoding in the browser: onnxruntime-web ${ort.env.versions?.web ?? ''} (${simd}, ${threadNote}), `
      + `${info.arch} decoder`,
    info,
    decode,
    /** Fetch an image's embedding and run its per-image graph now (when the image is opened), so that
     * the first click waits for neither. */
    prepare: (imageId) => embedding(imageId).then(() => {}),
  };
}

function serverDecoder(api, headers, reason) {
  async function decode(imageId, pointsIn, labelsIn, box, maskInput, { multimask = true } = {}) {
    const [points, labels] = pointPrompts(pointsIn, labelsIn);
    const body = { points: points ?? null, labels: labels ?? null, box: box ?? null, multimask };
    if (maskInput != null) {
      if (maskInput.prediction_id === undefined) {
        throw new Error('maskInput on the server is an earlier result\'s feedback[i] ({prediction_id, index})');
      }
      body.mask_input = { prediction_id: maskInput.prediction_id, index: maskInput.index ?? 0 };
    }
    const r = await fetch(`${api}/images/${imageId}/predict`, {
      method: 'POST', headers: { ...headers, 'Content-Type': 'application/json' }, body: JSON.stringify(body),
    });
    if (!r.ok) throw await failure(r, 'predict');
    const answer = await r.json(); // masks best-scored first
    return {
      masks: answer.masks.map((m) => decodeRle(m.rle)),
      scores: answer.masks.map((m) => m.score),
      lowRes: null,
      feedback: answer.masks.map((m) => ({ prediction_id: answer.prediction_id, index: m.index })),
      ready: Promise.resolve(),
    };
  }
  return { kind: 'server', reason, info: null, decode, prepare: () => Promise.resolve() };
}

/**
 * A decoder for project `projectId` signed in with bearer `token`: in the browser when
 * onnxruntime-web starts (kind 'browser'), else on the server (kind 'server'); `reason` says which and
 * why, for the page to show. Options (for tests and benchmarks): ortUrl, wasmPaths (where
 * onnxruntime-web's module and WASM files are; default ./vendor/), server (true: always the server),
 * threads (WebAssembly threads; default wasmThreads: several only in a cross-origin isolated page, for
 * large embedding grids), startTimeoutMs (default 90 s: a start that takes longer is given up for the server).
 */
export async function createDecoder(projectId, token, options = {}) {
  const api = `/api/projects/${projectId}`;
  const headers = { Authorization: `Bearer ${token}` };
  if (options.server) return serverDecoder(api, headers, 'decoding on the server (asked for)');
  const limitMs = options.startTimeoutMs ?? START_TIMEOUT_MS;
  let timer;
  try {
    return await Promise.race([browserDecoder(api, headers, options), new Promise((_, reject) => {
      timer = setTimeout(() => reject(new Error(`onnxruntime-web did not start within ${limitMs / 1000} s`)), limitMs);
    })]);
  } catch (err) {
    const why = String(err?.message ?? err).split('\n')[0];
    return serverDecoder(api, headers, `decoding on the server: the in-browser decoder could not start (${why})`);
  } finally {
    clearTimeout(timer);
  }
}
