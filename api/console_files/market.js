// The market view of one symbol, from public data only: the recent trades over HTTP,
// then trades and depth over the market-data WebSocket (/v1/ws, api/market_data.py).
// 1-minute candles are made here from the trades this page sees (a trade carries no
// time, so each is stamped when it arrives).

import { publicJson } from './api.js';
import { candleChart, depthChart } from './charts.js';
import { $, clock, el, num, setText } from './dom.js';

const TRADES_SHOWN = 50;
const CANDLES_KEPT = 60;
const RECONNECT_MS = 1000;
// A busy symbol sends hundreds of trades and 20 depth updates a second: each only updates
// the state, and the view is drawn at most this often (drawing each one kept the page's
// one thread so busy under load that its snapshot polls went out seconds late).
const DRAW_MS = 250;

export class Market {
  constructor() {
    this.symbol = null;
    this.socket = null;
    this.closed = true;
    this.drawing = null; // the timer of the next draw, if one is due
    this.reset();
    $('market-symbol').addEventListener('change', (e) => this.show(e.target.value));
  }

  reset() {
    this.trades = [];
    this.candles = [];
    this.bids = [];
    this.asks = [];
    this.last = null;
  }

  async open(symbols) {
    this.closed = false;
    const select = $('market-symbol');
    select.replaceChildren(...symbols.map((s) => el('option', { value: s }, s)));
    if (symbols.length) await this.show(symbols[0]);
  }

  close() {
    this.closed = true;
    clearTimeout(this.drawing);
    this.drawing = null;
    if (this.socket) this.socket.close();
    this.socket = null;
    this.symbol = null;
    this.reset();
  }

  async show(symbol) {
    if (this.socket && this.symbol) {
      this.send({ op: 'unsubscribe', channels: [`trades:${this.symbol}`, `depth:${this.symbol}`] });
    }
    this.symbol = symbol;
    $('market-symbol').value = symbol;
    this.reset();
    this.render();
    try {
      const recent = await publicJson(`/v1/trades/${encodeURIComponent(symbol)}?limit=${TRADES_SHOWN}`);
      if (this.symbol !== symbol) return;
      // Older than the page: no time is known for these, and they make no candle.
      this.trades = recent.trades.map((t) => ({ ...t, seen: null })).concat(this.trades);
      this.last ??= recent.trades[0]?.price ?? null;
    } catch (err) {
      setText('market-state', `recent trades unavailable: ${err.message}`);
    }
    this.render();
    if (this.socket && this.socket.readyState === WebSocket.OPEN) this.subscribe();
    else this.connect();
  }

  connect() {
    if (this.closed || this.socket) return;
    const scheme = location.protocol === 'https:' ? 'wss:' : 'ws:';
    const socket = new WebSocket(`${scheme}//${location.host}/v1/ws`);
    this.socket = socket;
    socket.addEventListener('open', () => this.subscribe());
    socket.addEventListener('message', (e) => this.receive(JSON.parse(e.data)));
    socket.addEventListener('close', () => {
      if (this.socket !== socket) return;
      this.socket = null;
      setText('market-state', 'market data disconnected, reconnecting');
      if (!this.closed) setTimeout(() => this.connect(), RECONNECT_MS);
    });
  }

  send(message) {
    if (this.socket && this.socket.readyState === WebSocket.OPEN) this.socket.send(JSON.stringify(message));
  }

  subscribe() {
    if (this.symbol) this.send({ op: 'subscribe', channels: [`trades:${this.symbol}`, `depth:${this.symbol}`] });
  }

  receive(message) {
    if (message.symbol !== undefined && message.symbol !== this.symbol) return;
    if (message.type === 'subscribed') setText('market-state', 'live');
    else if (message.type === 'error') setText('market-state', `${message.error}: ${message.message}`);
    else if (message.type === 'depth') {
      this.bids = message.bids;
      this.asks = message.asks;
      this.draw();
    } else if (message.type === 'trade') {
      this.trade(message, Date.now());
      this.draw();
    }
  }

  draw() {
    if (this.drawing === null) {
      this.drawing = setTimeout(() => {
        this.drawing = null;
        this.render();
      }, DRAW_MS);
    }
  }

  trade(t, now) {
    this.last = t.price;
    this.trades.unshift({ seq: t.seq, price: t.price, quantity: t.quantity, taker_side: t.taker_side, seen: now });
    this.trades.length = Math.min(this.trades.length, TRADES_SHOWN);
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
