// Draws one snapshot of GET /v1/admin/console (schema/console.py) into the page.

import { lineChart } from './charts.js';
import { $, ago, el, ms, num, setText } from './dom.js';

const HISTORY_MS = 5 * 60_000; // the moving chart's window, kept in this page

export class View {
  constructor() {
    this.history = []; // [{t, accepted, matched, persisted}], oldest first
    this.shardCount = 0;
  }

  reset() {
    this.history = [];
    this.shardCount = 0;
  }

  render(snap) {
    this.history.push({ t: snap.at_ms, ...snap.rates });
    while (this.history.length && this.history[0].t < snap.at_ms - HISTORY_MS) this.history.shift();
    this.tiles(snap);
    this.chart(snap.at_ms);
    this.shards(snap.shards);
    this.migrations(snap.migrations, snap.at_ms);
    this.rebalancer(snap.rebalancer, snap.at_ms);
  }

  tiles({ rates, batcher, at_ms: now }) {
    setText('t-accepted', num(rates.accepted));
    setText('t-matched', num(rates.matched));
    setText('t-persisted', num(rates.persisted));
    setText('t-p99', ms(rates.http_p99_ms));
    setText('t-requests', rates.http_requests_per_s === null ? 'requests/s' : `${num(rates.http_requests_per_s)} requests/s`);
    setText('t-batcher-lag', ms(batcher.lag_ms));
    setText('t-flush', ago(batcher.last_flush_ms, now));
    const detail = batcher.flushes === null
      ? 'no flush yet'
      : `${num(batcher.events)} events in ${ms(batcher.flush_ms)} · ${num(batcher.flushes)} flushes`;
    setText('t-flush-detail', batcher.held_streams ? `${detail} · ${batcher.held}` : detail);
  }

  chart(now) {
    const points = (name) => this.history.map((p) => [p.t, p[name]]);
    lineChart(
      $('rates-chart'),
      [
        { cls: 'accepted', points: points('accepted') },
        { cls: 'matched', points: points('matched') },
        { cls: 'persisted', points: points('persisted') },
      ],
      now - HISTORY_MS,
      now,
    );
    $('rates-chart').dataset.points = String(this.history.length);
  }

  shards(shards) {
    this.shardCount = shards.length;
    const owned = shards.filter((s) => s.owned).length;
    setText('shards-summary', `${shards.length} shards, ${owned} with a worker`);
    $('shards').tBodies[0].replaceChildren(...shards.map(shardRow));
    const select = $('migrate-shard');
    if (select.options.length !== shards.length) {
      select.replaceChildren(...shards.map((s) => el('option', { value: s.shard }, `shard ${s.shard}`)));
    }
  }

  migrations(migrations, now) {
    $('migrations-empty').hidden = migrations.length > 0;
    $('migrations').tBodies[0].replaceChildren(...migrations.map((m) => migrationRow(m, now)));
  }

  rebalancer(r, now) {
    if (r.at_ms === null) {
      setText('rebalancer-last', 'never ran (spot up runs it with SPOT_REBALANCER=1)');
      setText('rebalancer-counts', '');
    } else {
      const stale = now - r.at_ms > 5000 ? ' — stale: is it running?' : '';
      setText('rebalancer-last', `${r.dry_run ? 'dry run: ' : ''}${r.code}: ${r.reason} (${ago(r.at_ms, now)}${stale})`);
      setText('rebalancer-counts', `${num(r.evaluations)} evaluations, ${num(r.moves)} moves, ${num(r.moves_failed)} failed`);
    }
    $('decisions').replaceChildren(
      ...r.decisions.map((d) =>
        el(
          'li',
          {},
          el('time', {}, ago(d.at_ms, now)),
          el('span', { class: `code code-${d.code}` }, d.code),
          el('span', {}, d.reason),
        ),
      ),
    );
  }
}

function shardRow(s) {
  const lag = s.lag_capped ? `${num(s.lag)}+` : num(s.lag);
  const load = s.load === null
    ? '–'
    : el('span', { class: 'load' },
      el('meter', { min: 0, max: 1, low: 0.5, high: 0.85, optimum: 0, value: Math.min(s.load, 1) }),
      ` ${Math.round(s.load * 100)}%`);
  const capacity = s.capacity === null ? '–' : `${num(s.capacity)}${s.capacity_measured ? '' : ' (default)'}`;
  return el(
    'tr',
    { data: { shard: s.shard, level: s.level ?? 'NONE' }, class: s.owned ? '' : 'unowned' },
    el('td', {}, s.shard),
    el('td', {}, s.owned ? 'yes' : 'NONE'),
    el('td', { class: 'num orders' }, num(s.orders_per_s)),
    el('td', { class: 'num' }, num(s.applied_per_s)),
    el('td', { class: 'num' }, lag),
    el('td', { class: 'num' }, s.lag_ms === null ? '–' : ms(s.lag_ms)),
    el('td', {}, load),
    el('td', {}, s.level ? el('span', { class: `level level-${s.level}` }, s.level) : '–'),
    el('td', { class: 'num' }, capacity),
    el('td', { class: 'symbols' }, s.symbols.map((sym) =>
      el('span', { class: sym.migrating ? 'chip migrating' : 'chip', title: `${sym.orders_per_s} orders/s` },
        sym.migrating ? `${sym.symbol} (MIGRATING)` : sym.symbol))),
  );
}

function migrationRow(m, now) {
  let paused = '–';
  if (m.paused_for_ms !== null) paused = ms(m.paused_for_ms);
  else if (m.paused_ms !== null) paused = `${ms(now - m.paused_ms)}+`; // paused now
  const steps = m.steps.map((s) => `${s.step} ${s.duration_ms === null ? '…' : ms(s.duration_ms)}`).join(' · ');
  const step = m.state === 'ROLLED_BACK' && m.rolled_back_at ? `${m.step} (at ${m.rolled_back_at})` : m.step;
  return el(
    'tr',
    { data: { migration: m.id, state: m.state } },
    el('td', {}, m.id),
    el('td', {}, m.symbol),
    el('td', {}, `${m.from_shard} → ${m.to_shard}`),
    el('td', {}, el('span', { class: `state state-${m.state}` }, m.state)),
    el('td', {}, step),
    el('td', { class: 'steps' }, steps, m.rollback_reason ? ` — ${m.rollback_reason}` : ''),
    el('td', { class: 'num' }, paused),
    el('td', { class: 'num' }, m.pending === null ? '–' : num(m.pending)),
    el('td', {}, ago(m.created_ms, now)),
  );
}
