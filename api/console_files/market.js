// The market view of one symbol, from the public routes once a second: the book
// (GET /v1/book/{symbol}) and the recent trades (GET /v1/trades/{symbol}), newest first,
// each with the symbol's seq. Polling, not the market-data WebSocket: a WebSocket pushes
// every trade and depth change to every console (20 consoles watching a busy symbol took
// ~8% of a core of the API), where two short requests a second take under 1%.
//
// 1-minute candles: the batcher's, read from GET /api/v3/klines (the Binance-shaped API:
// decimal strings in whole units, turned back into minor units by the symbol's tick as
// exchangeInfo and /v1/symbols each state it) every CANDLES_MS; where that has none (no
// database), made here from the trades this page has seen (a trade carries no time: each
// is stamped when first seen; at most the last 100 a second are seen).

import { publicJson } from './api.js';
import { candleChart, depthChart } from './charts.js';
import { $, clock, el, num, setText } from './dom.js';

const POLL_MS = 1000;
const TRADES_READ = 100; // what GET /v1/trades gives at most
const TRADES_SHOWN = 50;
const CANDLES_KEPT = 60;
const CANDLES_MS = 5000;
const CANDLES_SHOWN = 30; // minutes

export class Market {
  constructor() {
    this.symbol = null;
    this.specs = new Map(); // symbol -> its /v1/symbols spec
    this.timer = null;
    this.candleTimer = null;
    this.generation = 0; // a poll answered after the symbol changed is dropped
    this.reset();
    $('market-symbol').addEventListener('change', (e) => this.show(e.target.value));
  }

  reset() {
    this.trades = [];
    this.candles = [];
    this.bids = [];
    this.asks = [];
    this.last = null;
    this.seenSeq = null; // the newest trade's seq seen; null: none read yet
    this.stored = null; // the batcher's candles; null: none read (yet, or none to read)
    this.unit = null; // minor price units per whole unit of the klines' prices
  }

  open(specs) {
    this.specs = new Map(specs.map((s) => [s.symbol, s]));
    const select = $('market-symbol');
    select.replaceChildren(...specs.map((s) => el('option', { value: s.symbol }, s.symbol)));
    if (specs.length) this.show(specs[0].symbol);
  }

  close() {
    clearTimeout(this.timer);
    clearTimeout(this.candleTimer);
    this.timer = null;
    this.candleTimer = null;
    this.generation += 1;
    this.symbol = null;
    this.reset();
  }

  show(symbol) {
    clearTimeout(this.timer);
    clearTimeout(this.candleTimer);
    this.generation += 1;
    this.symbol = symbol;
    $('market-symbol').value = symbol;
    this.reset();
    this.render();
    this.poll(this.generation);
    this.pollCandles(this.generation);
  }

  async pollCandles(generation) {
    const symbol = encodeURIComponent(this.symbol);
    try {
      if (this.unit === null) {
        const info = await publicJson(`/api/v3/exchangeInfo?symbol=${symbol}`);
        const price = info.symbols[0].filters.find((f) => f.filterType === 'PRICE_FILTER');
        this.unit = this.specs.get(this.symbol).tick / Number(price.tickSize);
      }
      const rows = await publicJson(`/api/v3/klines?symbol=${symbol}&interval=1m&limit=${CANDLES_SHOWN}`);
      if (generation !== this.generation) return;
      const minor = (text) => Math.round(Number(text) * this.unit);
      this.stored = rows.map((r) => ({
        t: r[0], open: minor(r[1]), high: minor(r[2]), low: minor(r[3]), close: minor(r[4]), volume: Number(r[5]),
      }));
    } catch {
      if (generation !== this.generation) return;
      this.stored = null; // no database behind the API, or no such route: the page's own
    }
    this.render();
    this.candleTimer = setTimeout(() => this.pollCandles(generation), CANDLES_MS);
  }

  async poll(generation) {
    const symbol = encodeURIComponent(this.symbol);
    try {
      const [book, recent] = await Promise.all([
        publicJson(`/v1/book/${symbol}?depth=50`),
        publicJson(`/v1/trades/${symbol}?limit=${TRADES_READ}`),
      ]);
      if (generation !== this.generation) return;
      this.bids = book.bids;
      this.asks = book.asks;
      this.add(recent.trades, Date.now());
      setText('market-state', `updated ${clock(Date.now())}`);
      this.render();
    } catch (err) {
      if (generation !== this.generation) return;
      setText('market-state', `market data unavailable, retrying (${err.message})`);
    }
    this.timer = setTimeout(() => this.poll(generation), POLL_MS);
  }

  // `recent`: newest first. Those read before anything was seen are shown but make no
  // candle: when they happened is not known.
  add(recent, now) {
    const first = this.seenSeq === null;
    const fresh = recent.filter((t) => first || t.seq > this.seenSeq).reverse(); // oldest first
    if (recent.length) this.seenSeq = Math.max(this.seenSeq ?? 0, recent[0].seq);
    for (const t of fresh) {
      this.last = t.price;
      this.trades.unshift({ ...t, seen: first ? null : now });
      if (!first) this.candle(t, now);
    }
    this.trades.length = Math.min(this.trades.length, TRADES_SHOWN);
  }

  candle(t, now) {
    const minute = Math.floor(now / 60_000) * 60_000;
    const candle = this.candles.at(-1);
    if (candle && candle.t === minute) {
      candle.high = Math.max(candle.high, t.price);
      candle.low = Math.min(candle.low, t.price);
      candle.close = t.price;
      candle.volume += t.quantity;
    } else {
      this.candles.push({ t: minute, open: t.price, high: t.price, low: t.price, close: t.price, volume: t.quantity });
      if (this.candles.length > CANDLES_KEPT) this.candles.shift();
    }
  }

  render() {
    const bid = this.bids[0];
    const ask = this.asks[0];
    setText('best-bid', bid ? `${num(bid[0])} × ${num(bid[1])}` : '–');
    setText('best-ask', ask ? `${num(ask[0])} × ${num(ask[1])}` : '–');
    setText('spread', bid && ask ? num(ask[0] - bid[0]) : '–');
    setText('last-price', this.last === null ? '–' : num(this.last));
    depthChart($('depth-chart'), this.bids, this.asks);
    const candles = this.stored ?? this.candles;
    candleChart($('candles-chart'), candles);
    $('candles-empty').hidden = candles.length > 0;
    $('candles-chart').dataset.source = this.stored ? 'stored' : 'seen';
    setText('candles-source', this.stored ? 'as the batcher stored them' : 'from the trades this page has seen');
    $('trades').tBodies[0].replaceChildren(
      ...this.trades.map((t) =>
        el(
          'tr',
          { class: t.taker_side === 'BUY' ? 'buy' : 'sell' },
          el('td', {}, t.seq),
          el('td', { class: 'num' }, num(t.price)),
          el('td', { class: 'num' }, num(t.quantity)),
          el('td', {}, t.taker_side),
          el('td', { class: 'muted' }, t.seen ? clock(t.seen) : 'earlier'),
        ),
      ),
    );
  }
}
