// Masks in the page: {width, height, data: Uint8Array (row-major, 0/1)}; COCO RLE to and from them.

export function emptyMask(width, height) {
  return { width, height, data: new Uint8Array(width * height) };
}

export function cloneMask(mask) {
  return { width: mask.width, height: mask.height, data: new Uint8Array(mask.data) };
}

/** COCO compressed RLE counts string -> run lengths (pycocotools' rleFrString). */
export function countsFromString(s) {
  const counts = [];
  let p = 0;
  while (p < s.length) {
    let x = 0;
    let k = 0;
    let more = true;
    while (more) {
      const c = s.charCodeAt(p) - 48;
      x += (c & 0x1f) * 2 ** (5 * k);
      more = (c & 0x20) !== 0;
      p += 1;
      k += 1;
      if (!more && (c & 0x10)) x -= 2 ** (5 * k);
    }
    if (counts.length > 2) x += counts[counts.length - 2];
    counts.push(x);
  }
  return counts;
}

/** A COCO RLE ({size: [h, w], counts: string | number[]}, column-major runs from background) -> mask. */
export function decodeRle(rle) {
  const [height, width] = rle.size;
  const counts = typeof rle.counts === 'string' ? countsFromString(rle.counts) : rle.counts;
  const mask = emptyMask(width, height);
  let pos = 0;
  let value = 0;
  for (const run of counts) {
    if (value) {
      for (let i = pos; i < pos + run; i += 1) {
        const col = Math.floor(i / height);
        const row = i - col * height;
        mask.data[row * width + col] = 1;
      }
    }
    pos += run;
    value = 1 - value;
  }
  return mask;
}

/** mask -> uncompressed COCO RLE {size: [h, w], counts: number[]} (what the server accepts). */
export function encodeRle(mask) {
  const { width, height, data } = mask;
  const counts = [];
  let value = 0;
  let run = 0;
  for (let col = 0; col < width; col += 1) {
    for (let row = 0; row < height; row += 1) {
      const v = data[row * width + col] ? 1 : 0;
      if (v !== value) {
        counts.push(run);
        run = 0;
        value = v;
      }
      run += 1;
    }
  }
  counts.push(run);
  return { size: [height, width], counts };
}

export function maskArea(mask) {
  let n = 0;
  for (let i = 0; i < mask.data.length; i += 1) n += mask.data[i];
  return n;
}

/** Paint (value 1) or erase (value 0) a disk of radius r (image pixels) at (cx, cy). */
export function paintDisk(mask, cx, cy, r, value) {
  const { width, height, data } = mask;
  const r2 = r * r;
  const y0 = Math.max(0, Math.floor(cy - r));
  const y1 = Math.min(height - 1, Math.ceil(cy + r));
  const x0 = Math.max(0, Math.floor(cx - r));
  const x1 = Math.min(width - 1, Math.ceil(cx + r));
  for (let y = y0; y <= y1; y += 1) {
    for (let x = x0; x <= x1; x += 1) {
      const dx = x + 0.5 - cx;
      const dy = y + 0.5 - cy;
      if (dx * dx + dy * dy <= r2) data[y * width + x] = value;
    }
  }
}

/** A brush or eraser stroke {mode: 'brush' | 'eraser', r, pts: [[x, y], ...]} applied to mask (in place). */
export function applyStroke(mask, stroke) {
  const value = stroke.mode === 'brush' ? 1 : 0;
  const step = Math.max(0.5, stroke.r / 2);
  let prev = null;
  for (const [x, y] of stroke.pts) {
    if (prev) {
      const d = Math.hypot(x - prev[0], y - prev[1]);
      for (let t = step; t < d; t += step) {
        paintDisk(mask, prev[0] + ((x - prev[0]) * t) / d, prev[1] + ((y - prev[1]) * t) / d, stroke.r, value);
      }
    }
    paintDisk(mask, x, y, stroke.r, value);
    prev = [x, y];
  }
}

/** An ImageData-filled canvas of the mask in one colour ([r, g, b, a] 0-255), for drawing scaled;
 * striped: every other diagonal band of 4 pixels left out (pre-filled masks waiting for review). */
export function maskCanvas(mask, rgba, striped = false) {
  const canvas = document.createElement('canvas');
  canvas.width = mask.width;
  canvas.height = mask.height;
  const ctx = canvas.getContext('2d');
  const img = ctx.createImageData(mask.width, mask.height);
  const px = new Uint32Array(img.data.buffer);
  const [r, g, b, a] = rgba;
  const packed = ((a << 24) | (b << 16) | (g << 8) | r) >>> 0; // little-endian RGBA
  const w = mask.width;
  for (let i = 0; i < mask.data.length; i += 1) {
    if (mask.data[i] && (!striped || ((((i % w) + Math.floor(i / w)) >> 2) & 1))) px[i] = packed;
  }
  ctx.putImageData(img, 0, 0);
  return canvas;
}
