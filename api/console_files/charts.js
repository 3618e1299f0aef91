// Hand-written SVG charts (no library: three small charts did not justify one). Each
// draws into an <svg> with a fixed viewBox, replacing what was there.

const NS = 'http://www.w3.org/2000/svg';
const PAD = { left: 52, right: 12, top: 10, bottom: 22 };

function svgEl(tag, attrs = {}, text) {
  const node = document.createElementNS(NS, tag);
  for (const [name, value] of Object.entries(attrs)) node.setAttribute(name, String(value));
  if (text !== undefined) node.textContent = text;
  return node;
}

function box(svg) {
  const [, , width, height] = svg.getAttribute('viewBox').split(' ').map(Number);
  return { width, height, x0: PAD.left, x1: width - PAD.right, y0: height - PAD.bottom, y1: PAD.top };
}

// 1, 2, 5 × 10^n at or above `value`: an axis top that reads well.
export function niceCeiling(value) {
  if (!(value > 0)) return 1;
  const power = 10 ** Math.floor(Math.log10(value));
  for (const step of [1, 2, 5, 10]) if (step * power >= value) return step * power;
  return 10 * power;
}

const short = new Intl.NumberFormat('en-US', { notation: 'compact', maximumFractionDigits: 1 });
const price = new Intl.NumberFormat('en-US', { maximumFractionDigits: 0 }); // integer minor units

function yAxis(svg, b, top, format = short) {
  // top is 1, 2 or 5 × 10^n: steps of 0.2, 0.5 and 1 × 10^n
  const lead = Math.round(top / 10 ** Math.floor(Math.log10(top)));
  const ticks = lead === 2 ? 4 : 5;
  for (let i = 0; i <= ticks; i += 1) {
    const value = (top * i) / ticks;
    const y = b.y0 - ((b.y0 - b.y1) * i) / ticks;
    svg.append(svgEl('line', { x1: b.x0, x2: b.x1, y1: y, y2: y, class: 'gridline' }));
    svg.append(svgEl('text', { x: b.x0 - 6, y: y + 4, class: 'axis', 'text-anchor': 'end' }, format.format(value)));
  }
}

// series: [{cls, points: [[t, value|null], ...]}], over the window [from, to] (ms).
export function lineChart(svg, series, from, to) {
  const b = box(svg);
  const peak = Math.max(0, ...series.flatMap((s) => s.points.map(([, v]) => v ?? 0)));
  const top = niceCeiling(peak);
  svg.replaceChildren();
  yAxis(svg, b, top);
  const span = to - from;
  for (let m = 0; m * 60_000 <= span; m += 1) {
    const x = b.x1 - ((b.x1 - b.x0) * m * 60_000) / span;
    svg.append(svgEl('line', { x1: x, x2: x, y1: b.y1, y2: b.y0, class: 'gridline' }));
    svg.append(svgEl('text', { x, y: b.height - 6, class: 'axis', 'text-anchor': 'middle' }, m ? `-${m} min` : 'now'));
  }
  const xOf = (t) => b.x0 + ((b.x1 - b.x0) * (t - from)) / span;
  const yOf = (v) => b.y0 - ((b.y0 - b.y1) * v) / top;
  for (const { cls, points } of series) {
    let d = '';
    let pen = 'M';
    for (const [t, v] of points) {
      if (t < from || v === null || v === undefined) {
        pen = 'M'; // a gap where the value is unknown
        continue;
      }
      d += `${pen}${xOf(t).toFixed(1)},${yOf(v).toFixed(1)}`;
      pen = 'L';
    }
    if (d) svg.append(svgEl('path', { d, class: `line ${cls}` }));
  }
}

// bids best (highest) first, asks best (lowest) first: [[price, quantity], ...].
export function depthChart(svg, bids, asks) {
  const b = box(svg);
  svg.replaceChildren();
  if (!bids.length && !asks.length) {
    svg.append(svgEl('text', { x: b.width / 2, y: b.height / 2, class: 'axis', 'text-anchor': 'middle' }, 'empty book'));
    return;
  }
  const cumulative = (levels) => {
    let total = 0;
    return levels.map(([price, quantity]) => [price, (total += quantity)]);
  };
  const bidSteps = cumulative(bids);
  const askSteps = cumulative(asks);
  const prices = [...bids, ...asks].map(([p]) => p);
  let low = Math.min(...prices);
  let high = Math.max(...prices);
  if (low === high) {
    low -= 1;
    high += 1;
  }
  const top = niceCeiling(Math.max(bidSteps.at(-1)?.[1] ?? 0, askSteps.at(-1)?.[1] ?? 0));
  yAxis(svg, b, top);
  const xOf = (p) => b.x0 + ((b.x1 - b.x0) * (p - low)) / (high - low);
  const yOf = (q) => b.y0 - ((b.y0 - b.y1) * q) / top;
  const area = (steps, toward) => {
    if (!steps.length) return null;
    let d = `M${xOf(steps[0][0]).toFixed(1)},${b.y0}`;
    let level = 0;
    for (const [price, total] of steps) {
      d += `L${xOf(price).toFixed(1)},${yOf(level).toFixed(1)}L${xOf(price).toFixed(1)},${yOf(total).toFixed(1)}`;
      level = total;
    }
    d += `L${toward.toFixed(1)},${yOf(level).toFixed(1)}L${toward.toFixed(1)},${b.y0}Z`;
    return d;
  };
  const bidArea = area(bidSteps, b.x0);
  const askArea = area(askSteps, b.x1);
  if (bidArea) svg.append(svgEl('path', { d: bidArea, class: 'depth bid' }));
  if (askArea) svg.append(svgEl('path', { d: askArea, class: 'depth ask' }));
  for (const [edge, anchor, x] of [[low, 'start', b.x0], [high, 'end', b.x1]]) {
    svg.append(svgEl('text', { x, y: b.height - 6, class: 'axis', 'text-anchor': anchor }, price.format(edge)));
  }
}

// candles: [{t, open, high, low, close, volume}], oldest first, one a minute.
export function candleChart(svg, candles) {
  const b = box(svg);
  svg.replaceChildren();
  if (!candles.length) return;
  let low = Math.min(...candles.map((c) => c.low));
  let high = Math.max(...candles.map((c) => c.high));
  if (low === high) {
    low -= 1;
    high += 1;
  }
  const pad = (high - low) * 0.05;
  low -= pad;
  high += pad;
  const yOf = (p) => b.y0 - ((b.y0 - b.y1) * (p - low)) / (high - low);
  for (let i = 0; i <= 4; i += 1) {
    const level = low + ((high - low) * i) / 4;
    const y = yOf(level);
    svg.append(svgEl('line', { x1: b.x0, x2: b.x1, y1: y, y2: y, class: 'gridline' }));
    svg.append(svgEl('text', { x: b.x0 - 6, y: y + 4, class: 'axis', 'text-anchor': 'end' }, price.format(level)));
  }
  const slots = 30; // the last 30 minutes
  const width = (b.x1 - b.x0) / slots;
  const newest = candles.at(-1).t;
  for (const c of candles) {
    const slot = slots - 1 - (newest - c.t) / 60_000;
    if (slot < 0) continue;
    const x = b.x0 + slot * width;
    const up = c.close >= c.open;
    const cls = up ? 'candle up' : 'candle down';
    svg.append(svgEl('line', { x1: x + width / 2, x2: x + width / 2, y1: yOf(c.high), y2: yOf(c.low), class: cls }));
    const top = yOf(Math.max(c.open, c.close));
    const height = Math.max(1, Math.abs(yOf(c.open) - yOf(c.close)));
    svg.append(svgEl('rect', { x: x + width * 0.15, y: top, width: width * 0.7, height, class: cls }));
  }
}
