// The operator console: sign in with an admin token, then follow GET /v1/admin/console
// (one snapshot a second, each asked for just after the API made it), start migrations,
// and watch one symbol's market.

import * as api from './api.js';
import { $, el, setText } from './dom.js';
import { Market } from './market.js';
import { View } from './view.js';

const RETRY_MS = 1000;
const STALE_MS = 3000;

const view = new View();
const market = new Market();
let session = null; // {abort: AbortController, receivedAt}

function status(state, text) {
  const node = $('status');
  node.dataset.state = state;
  setText('status', text);
}

const sleep = (delay) => new Promise((resolve) => setTimeout(resolve, delay));

async function signIn(event) {
  event.preventDefault();
  const input = $('token');
  const token = input.value.trim();
  input.value = ''; // not left in the page either
  if (!token) return;
  api.signIn(token);
  status('connecting', 'signing in…');
  let reply;
  try {
    reply = await api.snapshot(0);
  } catch (err) {
    reply = { status: 0, data: `the API cannot be reached (${err.message})` };
  }
  if (reply.status !== 200) {
    api.signOut();
    showRefusal(reply);
    status('signed-out', 'signed out');
    return;
  }
  $('login-error').hidden = true;
  start(reply);
}

function showRefusal(reply) {
  const node = $('login-error');
  node.textContent = reply.status ? api.refusal(reply) : reply.data;
  node.hidden = false;
}

function start(reply) {
  const first = reply.data;
  session = { abort: new AbortController(), receivedAt: Date.now(), at: first.at_ms };
  $('login').hidden = true;
  $('console').hidden = false;
  $('sign-out').hidden = false;
  view.reset();
  freshness();
  view.render(first);
  fillSymbols(first);
  follow(session, reply);
  api.publicJson('/v1/symbols')
    .then(({ symbols }) => market.open(symbols))
    .catch((err) => setText('market-state', `symbols unavailable: ${err.message}`));
}

function stop(reason) {
  if (session) session.abort.abort();
  session = null;
  api.signOut();
  market.close();
  view.reset();
  $('console').hidden = true;
  $('sign-out').hidden = true;
  $('login').hidden = false;
  $('migrate-result').hidden = true;
  if (reason) showRefusal(reason);
  status('signed-out', 'signed out');
}

async function follow(current, first) {
  const { signal } = current.abort;
  let wait = api.untilNext(first);
  while (!signal.aborted) {
    await sleep(wait);
    if (signal.aborted) return;
    let reply;
    try {
      reply = await api.snapshot(current.at, signal);
    } catch (err) {
      if (signal.aborted) return;
      status('offline', `API unreachable, retrying (${err.message})`);
      wait = RETRY_MS;
      continue;
    }
    if (signal.aborted) return;
    if (reply.status === 401 || reply.status === 403) {
      stop(reply); // the token expired or lost its role
      return;
    }
    if (reply.status !== 200) {
      status('error', api.refusal(reply));
      wait = RETRY_MS;
      continue;
    }
    current.at = reply.data.at_ms;
    current.receivedAt = Date.now();
    wait = api.untilNext(reply);
    freshness();
    view.render(reply.data);
    fillSymbols(reply.data);
  }
}

// How fresh the page is, four times a second (an error or an outage says why instead).
function freshness() {
  if (!session) return;
  const age = Date.now() - session.receivedAt;
  if (age > STALE_MS) status('stale', `no snapshot for ${(age / 1000).toFixed(0)} s`);
  else status('live', `live · updated ${(age / 1000).toFixed(1)} s ago`);
}

setInterval(() => {
  const state = $('status').dataset.state;
  if (state !== 'error' && state !== 'offline') freshness();
}, 250);

// The migration form's symbols: every symbol on a shard, with where it is now.
function fillSymbols(snap) {
  const select = $('migrate-symbol');
  const on = snap.shards.flatMap((s) => s.symbols.map((sym) => [sym.symbol, s.shard]));
  on.sort(([a], [b]) => (a < b ? -1 : 1));
  const labels = on.map(([symbol, shard]) => `${symbol} (on ${shard})`);
  const current = [...select.options].map((o) => o.textContent);
  if (labels.join() === current.join()) return;
  const chosen = select.value;
  select.replaceChildren(...on.map(([symbol], i) => el('option', { value: symbol }, labels[i])));
  if (on.some(([symbol]) => symbol === chosen)) select.value = chosen;
}

async function startMigration(event) {
  event.preventDefault();
  const symbol = $('migrate-symbol').value;
  const toShard = Number($('migrate-shard').value);
  const result = $('migrate-result');
  result.hidden = false;
  result.dataset.state = 'waiting';
  result.replaceChildren(el('p', {}, `POST /v1/admin/migrations {"symbol": "${symbol}", "to_shard": ${toShard}} …`));
  let reply;
  try {
    reply = await api.startMigration(symbol, toShard);
  } catch (err) {
    reply = { status: 0, data: `the API cannot be reached (${err.message})` };
  }
  const accepted = reply.status === 202;
  result.dataset.state = accepted ? 'accepted' : 'refused';
  const line = accepted
    ? `${reply.status}: migration ${reply.data.id} of ${reply.data.symbol}, shard ${reply.data.from_shard} → ${reply.data.to_shard}, started`
    : reply.status ? api.refusal(reply) : reply.data;
  result.replaceChildren(
    el('p', { class: accepted ? 'ok' : 'refusal' }, line),
    el('pre', {}, typeof reply.data === 'string' ? reply.data : JSON.stringify(reply.data, null, 1)),
  );
}

$('login-form').addEventListener('submit', signIn);
$('sign-out').addEventListener('click', () => stop(null));
$('migrate-form').addEventListener('submit', startMigration);
