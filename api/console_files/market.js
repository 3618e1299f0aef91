// The market view of one symbol, from the public routes once a second: the book
// (GET /v1/book/{symbol}) and the recent trades (GET /v1/trades/{symbol}), newest first,
// each with the symbol's seq. Polling, not the market-data WebSocket: a WebSocket pushes
// every trade and depth change to every console (20 consoles watching a busy symbol took
// ~8% of a core of the API), where two short requests a second take under 1%.
//
// 1-minute candles are made here from the trades this page has seen (a trade carries no
// time: each is stamped when first seen; at most the last 100 a second are seen).

import { publicJson } from './api.js';
import { candleChart, depthChart } from './charts.js';
import { $, clock, el, num, setText } from './dom.js';

const POLL_MS = 1000;
const TRADES_READ = 100; // what GET /v1/trades gives at most
const TRADES_SHOWN = 50;
const CANDLES_KEPT = 60;

export class Market {
  constructor() {
    this.symbol = null;
    this.timer = null;
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
  }

  open(symbols) {
    const select = $('market-symbol');
    select.replaceChildren(...symbols.map((s) => el('option', { value: s }, s)));
    if (symbols.length) this.show(symbols[0]);
  }

  close() {
    clearTimeout(this.timer);
    this.timer = null;
    this.generation += 1;
    this.symbol = null;
    this.reset();
  }

  show(symbol) {
    clearTimeout(this.timer);
    this.generation += 1;
    this.symbol = symbol;
    $('market-symbol').value = symbol;
    this.reset();
    this.render();
    this.poll(this.generation);
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
    candleChart($('candles-chart'), this.candles);
    $('candles-empty').hidden = this.candles.length > 0;
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
