// Small DOM helpers. Every value from the API becomes text (textContent), never markup:
// the page's Content-Security-Policy enforces Trusted Types, so an HTML sink would throw.

export const $ = (id) => document.getElementById(id);

// el('td', {class: 'num', data: {shard: 3}}, 'text', child, ...)
export function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs)) {
    if (value === undefined || value === null || value === false) continue;
    if (name === 'class') node.className = value;
    else if (name === 'data') Object.assign(node.dataset, value);
    else node.setAttribute(name, value === true ? '' : String(value));
  }
  for (const child of children.flat()) {
    if (child === null || child === undefined) continue;
    node.append(child instanceof Node ? child : String(child));
  }
  return node;
}

export function setText(id, text) {
  const node = $(id);
  if (node.textContent !== text) node.textContent = text;
}

const integer = new Intl.NumberFormat('en-US', { maximumFractionDigits: 0 });
const decimal = new Intl.NumberFormat('en-US', { maximumFractionDigits: 1 });

export function num(value) {
  if (value === null || value === undefined) return '–';
  return Math.abs(value) >= 100 || Number.isInteger(value) ? integer.format(value) : decimal.format(value);
}

export function ms(value) {
  if (value === null || value === undefined) return '–';
  if (value >= 10_000) return `${decimal.format(value / 1000)} s`;
  return `${value >= 100 ? integer.format(value) : decimal.format(value)} ms`;
}

export function ago(atMs, nowMs = Date.now()) {
  if (!atMs) return '–';
  const s = Math.max(0, (nowMs - atMs) / 1000);
  if (s < 60) return `${s.toFixed(s < 10 ? 1 : 0)} s ago`;
  if (s < 3600) return `${Math.floor(s / 60)} min ago`;
  if (s < 86400) return `${Math.floor(s / 3600)} h ago`;
  return `${Math.floor(s / 86400)} d ago`;
}

export function clock(atMs) {
  return new Date(atMs).toLocaleTimeString('en-GB', { hour12: false });
}
