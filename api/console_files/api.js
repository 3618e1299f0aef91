// The console's calls to the API. The admin token lives in this module's memory only:
// never in the address, localStorage, sessionStorage or a cookie, so a reload signs out
// and nothing of it outlives the tab. Public market data is fetched without it.

let token = null;

export function signIn(value) {
  token = value;
}

export function signOut() {
  token = null;
}

export function signedIn() {
  return token !== null;
}

// {status, data, headers}: data is the decoded JSON body, or the text when it is not JSON.
async function call(method, path, { body, signal } = {}) {
  if (token === null) throw new Error('signed out');
  const headers = { Authorization: `Bearer ${token}` };
  const init = { method, headers, signal, cache: 'no-store', credentials: 'omit' };
  if (body !== undefined) {
    headers['Content-Type'] = 'application/json';
    init.body = JSON.stringify(body);
  }
  const reply = await fetch(path, init);
  const text = await reply.text();
  let data = text;
  try {
    data = JSON.parse(text);
  } catch {
    // not JSON: shown as the text it is
  }
  return { status: reply.status, data, headers: reply.headers };
}

// The next snapshot after the one made at `after` (ms): the API answers a newer one at
// once, or holds the request until it has one (api/console.py).
export function snapshot(after, signal) {
  return call('GET', `/v1/admin/console?after=${after}`, { signal });
}

// How long until the API makes its next snapshot (its x-next-snapshot-ms header), plus a
// margin for making it: asking then finds it made, and the request is short.
export function untilNext(reply) {
  const next = Number(reply.headers?.get('x-next-snapshot-ms'));
  return Number.isFinite(next) ? Math.min(next + 60, 2000) : 0;
}

export function startMigration(symbol, toShard) {
  return call('POST', '/v1/admin/migrations', { body: { symbol, to_shard: toShard } });
}

export async function publicJson(path) {
  const reply = await fetch(path, { cache: 'no-store', credentials: 'omit' });
  if (!reply.ok) throw new Error(`${path}: ${reply.status}`);
  return reply.json();
}

// "403 FORBIDDEN: an admin token is needed", as the API said it.
export function refusal({ status, data }) {
  if (data && typeof data === 'object' && 'error' in data) {
    return `${status} ${data.error}: ${data.message ?? ''}`;
  }
  return `${status} ${typeof data === 'string' ? data : JSON.stringify(data)}`;
}
