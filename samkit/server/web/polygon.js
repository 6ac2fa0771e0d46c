// Polygon view of a mask: outer contours of its connected parts (Moore-neighbour tracing), simplified
// with Douglas-Peucker (like cv2.findContours + cv2.approxPolyDP).

const DIRS = [[1, 0], [1, 1], [0, 1], [-1, 1], [-1, 0], [-1, -1], [0, -1], [1, -1]]; // clockwise from east (y down)

/** Outer contours [[x, y], ...] (pixel centres) of the 8-connected parts of at least minArea pixels. */
export function contours(mask, minArea = 4) {
  const { width, height, data } = mask;
  const seen = new Uint8Array(width * height);
  const out = [];
  const at = (x, y) => x >= 0 && y >= 0 && x < width && y < height && data[y * width + x] === 1;
  const stack = [];
  for (let start = 0; start < data.length; start += 1) {
    if (!data[start] || seen[start]) continue;
    let area = 0; // flood fill the part (its first pixel in raster order is on its outer boundary)
    stack.push(start);
    seen[start] = 1;
    while (stack.length) {
      const i = stack.pop();
      area += 1;
      const x = i % width;
      const y = (i - x) / width;
      for (const [dx, dy] of DIRS) {
        const j = (y + dy) * width + x + dx;
        if (at(x + dx, y + dy) && !seen[j]) { seen[j] = 1; stack.push(j); }
      }
    }
    if (area >= minArea) out.push(trace(at, start % width, Math.floor(start / width)));
  }
  return out;
}

function trace(at, sx, sy) {
  // Moore-neighbour tracing, clockwise on screen; stops on re-entering the start the way it first left
  // (Jacob's criterion), so one-pixel-wide necks are walked both ways.
  const pts = [[sx, sy]];
  let x = sx;
  let y = sy;
  let dir = 0; // as if we arrived moving east: nothing lies north or west of the first raster pixel
  let first = -1;
  for (let guard = 0; guard < 4e6; guard += 1) {
    let found = -1;
    for (let k = 0; k < 8; k += 1) {
      const d = (dir + 5 + k) % 8; // from back-left of the move that brought us here, clockwise
      if (at(x + DIRS[d][0], y + DIRS[d][1])) { found = d; break; }
    }
    if (found < 0) break; // a single pixel
    if (x === sx && y === sy) {
      if (first === found) break;
      if (first < 0) first = found;
    }
    x += DIRS[found][0];
    y += DIRS[found][1];
    dir = found;
    if (!(x === sx && y === sy)) pts.push([x, y]);
  }
  return pts;
}

function perpendicular(p, a, b) {
  const dx = b[0] - a[0];
  const dy = b[1] - a[1];
  const len = Math.hypot(dx, dy);
  if (len === 0) return Math.hypot(p[0] - a[0], p[1] - a[1]);
  return Math.abs(dy * p[0] - dx * p[1] + b[0] * a[1] - b[1] * a[0]) / len;
}

/** Douglas-Peucker on an open polyline. */
export function simplifyLine(pts, eps) {
  if (pts.length < 3) return pts.slice();
  const keep = new Uint8Array(pts.length);
  keep[0] = 1;
  keep[pts.length - 1] = 1;
  const stack = [[0, pts.length - 1]];
  while (stack.length) {
    const [i, j] = stack.pop();
    let best = -1;
    let dmax = 0;
    for (let k = i + 1; k < j; k += 1) {
      const d = perpendicular(pts[k], pts[i], pts[j]);
      if (d > dmax) { dmax = d; best = k; }
    }
    if (best >= 0 && dmax > eps) {
      keep[best] = 1;
      stack.push([i, best], [best, j]);
    }
  }
  return pts.filter((_, k) => keep[k]);
}

/** Douglas-Peucker on a closed contour: split at the point farthest from the first, simplify both halves. */
export function simplifyClosed(pts, eps) {
  if (pts.length < 4) return pts.slice();
  let far = 0;
  let dmax = -1;
  for (let k = 1; k < pts.length; k += 1) {
    const d = Math.hypot(pts[k][0] - pts[0][0], pts[k][1] - pts[0][1]);
    if (d > dmax) { dmax = d; far = k; }
  }
  const a = simplifyLine(pts.slice(0, far + 1), eps);
  const b = simplifyLine(pts.slice(far).concat([pts[0]]), eps);
  return a.slice(0, -1).concat(b.slice(0, -1));
}

/** The mask's simplified polygons at tolerance eps (pixels). */
export function polygons(mask, eps) {
  return contours(mask).map((c) => simplifyClosed(c, eps)).filter((p) => p.length >= 3);
}
