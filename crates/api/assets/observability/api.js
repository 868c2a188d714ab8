// The API client: every call carries the credential the user gave (an API
// key or a JWT, sent as `Authorization: Bearer`) and the tenant it named
// (`X-Tenant-Id`), both kept in this tab's sessionStorage only: closing the
// tab forgets them, and no other page of the origin's tabs sees them.

const KEY = 'memlayer.dashboard.key';
const TENANT = 'memlayer.dashboard.tenant';

export const credentials = {
  get key() { return sessionStorage.getItem(KEY) || ''; },
  get tenant() { return sessionStorage.getItem(TENANT) || ''; },
  set(key, tenant) {
    if (key) sessionStorage.setItem(KEY, key); else sessionStorage.removeItem(KEY);
    if (tenant) sessionStorage.setItem(TENANT, tenant); else sessionStorage.removeItem(TENANT);
  },
  forget() { sessionStorage.removeItem(KEY); sessionStorage.removeItem(TENANT); },
};

/** An error the API answered: `status`, and its body's `code` and `message`. */
export class ApiError extends Error {
  constructor(status, code, message) {
    super(message);
    this.status = status;
    this.code = code;
  }
}

const listeners = new Set();
/** Calls `fn(error)` for each 401/403 answer (the page shows a notice). */
export function onAuthProblem(fn) { listeners.add(fn); }

/** GET `path` with `params` (entries whose value is empty are left out). */
export async function get(path, params = {}, signal = undefined) {
  const url = new URL(path, window.location.origin);
  for (const [k, v] of Object.entries(params)) {
    if (v === undefined || v === null || v === '') continue;
    if (Array.isArray(v)) v.forEach((x) => url.searchParams.append(k, x));
    else url.searchParams.set(k, String(v));
  }
  const headers = { Accept: 'application/json' };
  if (credentials.key) headers.Authorization = `Bearer ${credentials.key}`;
  if (credentials.tenant) headers['X-Tenant-Id'] = credentials.tenant;
  let response;
  try {
    response = await fetch(url, { headers, signal, credentials: 'omit', cache: 'no-store' });
  } catch (e) {
    if (e.name === 'AbortError') throw e;
    throw new ApiError(0, 'network', `the server did not answer (${e.message})`);
  }
  const text = await response.text();
  let body = null;
  try { body = text ? JSON.parse(text) : null; } catch { body = null; }
  if (!response.ok) {
    const err = body && body.error
      ? new ApiError(response.status, body.error.code, body.error.message)
      : new ApiError(response.status, `http_${response.status}`, text.slice(0, 200) || response.statusText);
    if (response.status === 401 || response.status === 403) listeners.forEach((fn) => fn(err));
    throw err;
  }
  return body;
}
