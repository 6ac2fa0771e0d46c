// The server's HTTP API: bearer token kept in localStorage (a reload stays signed in), errors as ApiError.
const KEY = 'samkit.token';

export class ApiError extends Error {
  constructor(status, message, body) {
    super(message);
    this.status = status;
    this.body = body;
  }
}

export function getToken() { return localStorage.getItem(KEY); }
export function setToken(token) {
  if (token) localStorage.setItem(KEY, token); else localStorage.removeItem(KEY);
}

/** A FastAPI error body's detail as one line (validation errors: "field: message; ..."). */
export function detailText(detail, fallback) {
  if (typeof detail === 'string') return detail;
  if (Array.isArray(detail)) {
    return detail.map((d) => `${(d.loc || []).filter((x) => x !== 'body').join('.')}: ${d.msg}`).join('; ');
  }
  return fallback;
}

/** fetch with the token; JSON body and answer; a non-2xx answer throws ApiError with the server's message. */
export async function api(method, url, body, { raw = false } = {}) {
  const headers = {};
  const token = getToken();
  if (token) headers.Authorization = `Bearer ${token}`;
  const init = { method, headers };
  if (body !== undefined) {
    headers['Content-Type'] = 'application/json';
    init.body = JSON.stringify(body);
  }
  let r;
  try {
    r = await fetch(url, init);
  } catch (err) {
    throw new ApiError(0, `the server cannot be reached (${err.message})`, null);
  }
  if (!r.ok) {
    let data = null;
    try { data = await r.json(); } catch { /* not JSON */ }
    const message = detailText(data && data.detail, `${r.status} ${r.statusText}`);
    if (r.status === 401 && url !== '/api/auth/login') {
      setToken(null);
      window.dispatchEvent(new CustomEvent('samkit-signed-out', { detail: message }));
    }
    throw new ApiError(r.status, message, data);
  }
  return raw ? r : r.json();
}

/** An image file (needs the token, so not a plain <img src>) as an HTMLImageElement. */
export async function loadImage(projectId, imageId) {
  const r = await api('GET', `/api/projects/${projectId}/images/${imageId}/file`, undefined, { raw: true });
  const url = URL.createObjectURL(await r.blob());
  const img = new Image();
  img.src = url;
  await img.decode();
  return img;
}
