// DOM building and formatting. Data from the server only ever reaches the
// page as text nodes (never innerHTML), so span names and attributes cannot
// inject markup; and the formats are fixed (UTC, '.' decimals), not the
// browser's locale, so a page reads the same everywhere.

/** h('div.card', {onclick}, child, ...) builds an element. */
export function h(tag, props, ...children) {
  const [name, ...classes] = tag.split('.');
  const el = document.createElement(name || 'div');
  if (classes.length) el.className = classes.join(' ');
  if (props) {
    for (const [k, v] of Object.entries(props)) {
      if (v === undefined || v === null || v === false) continue;
      if (k.startsWith('on')) el.addEventListener(k.slice(2), v);
      else if (k === 'dataset') Object.assign(el.dataset, v);
      else if (k === 'style') Object.assign(el.style, v);
      else if (k in el && typeof v !== 'string') el[k] = v;
      else el.setAttribute(k, v === true ? '' : String(v));
    }
  }
  append(el, children);
  return el;
}

function append(el, children) {
  for (const c of children) {
    if (c === null || c === undefined || c === false) continue;
    if (Array.isArray(c)) append(el, c);
    else el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
}

/** Replaces an element's children. */
export function fill(el, ...children) {
  el.replaceChildren();
  append(el, children);
  return el;
}

/** "2026-05-01T12:00:00.123456789Z" → "2026-05-01 12:00:00.123". */
export function fmtTime(iso) {
  if (!iso) return '—';
  const m = /^(\d{4}-\d\d-\d\d)T(\d\d:\d\d:\d\d)(\.\d{1,3})?/.exec(iso);
  return m ? `${m[1]} ${m[2]}${m[3] || ''}` : iso;
}

/** "2026-05-01T12:00:00Z" → "05-01 12:00" (chart ticks). */
export function fmtShortTime(ms, withDate = true) {
  const iso = new Date(ms).toISOString();
  return withDate ? `${iso.slice(5, 10)} ${iso.slice(11, 16)}` : iso.slice(11, 16);
}

/** A duration in milliseconds: "812.0 ms", "1.23 s", "2.5 min". */
export function fmtMs(ms) {
  if (ms === null || ms === undefined || Number.isNaN(ms)) return '—';
  if (ms === 0) return '0 ms';
  if (ms < 1) return `${ms.toFixed(3)} ms`;
  if (ms < 1000) return `${ms.toFixed(1)} ms`;
  if (ms < 120000) return `${(ms / 1000).toFixed(2)} s`;
  return `${(ms / 60000).toFixed(1)} min`;
}

/** 1234567 → "1,234,567". */
export function fmtInt(n) {
  if (n === null || n === undefined) return '—';
  const s = String(Math.round(n));
  return s.replace(/\B(?=(\d{3})+(?!\d))/g, ',');
}

/** A number with at most `digits` decimals, trailing zeros dropped. */
export function fmtNum(x, digits = 2) {
  if (x === null || x === undefined) return '—';
  if (typeof x !== 'number') return String(x);
  if (Number.isInteger(x)) return fmtInt(x);
  return String(Number(x.toFixed(digits)));
}

/** Money in the catalog's unit: "$0.0075", "$12.35". */
export function fmtCost(x) {
  if (x === null || x === undefined) return '—';
  const a = Math.abs(x);
  return `$${a !== 0 && a < 1 ? x.toFixed(4) : x.toFixed(2)}`;
}

/** 0.1 → "10.0%". */
export function fmtPct(x) {
  if (x === null || x === undefined) return '—';
  return `${(x * 100).toFixed(1)}%`;
}

/** Bytes in binary units: "1.5 GiB". */
export function fmtBytes(b) {
  if (b === null || b === undefined) return '—';
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  let i = 0;
  while (Math.abs(b) >= 1024 && i < units.length - 1) {
    b /= 1024;
    i += 1;
  }
  return i === 0 ? `${Math.round(b)} B` : `${b.toFixed(1)} ${units[i]}`;
}

/** Any JSON value as short text for a table cell. */
export function fmtValue(v) {
  if (v === null || v === undefined) return 'null';
  if (typeof v === 'string') return v;
  return JSON.stringify(v);
}

/** A table: `cols` are [header, cell(row) → node|string, className?, onSort?]. */
export function table(cols, rows, opts = {}) {
  const head = h('tr', null, cols.map(([name, , cls, sort]) =>
    h(`th${cls ? `.${cls}` : ''}`, sort ? { onclick: sort, class: `${cls || ''} sortable`.trim(), title: 'Sort' } : null, name)));
  const body = rows.map((r, i) => h('tr', opts.rowProps ? opts.rowProps(r, i) : null,
    cols.map(([, cell, cls]) => h(`td${cls ? `.${cls}` : ''}`, null, cell(r, i)))));
  return h(`table${opts.className ? `.${opts.className}` : ''}`, null, h('thead', null, head), h('tbody', null, body));
}

/** A labelled figure: big value, caption, optional sub-line. */
export function stat(label, value, sub, dataset) {
  return h('div.stat', { dataset }, h('div.stat-value', null, value), h('div.stat-label', null, label),
    sub ? h('div.stat-sub', null, sub) : null);
}

/** An error box for a failed call. */
export function errorBox(err) {
  const code = err && err.code ? err.code : 'error';
  return h('div.error-box', { role: 'alert' }, h('strong', null, code), ': ', err && err.message ? err.message : String(err));
}

/** Time-range presets: name → seconds (null: no bound). */
export const RANGES = {
  '15m': 900, '1h': 3600, '6h': 21600, '24h': 86400, '7d': 604800, '30d': 2592000, all: null,
};

/** The [from, to] ISO strings of a preset or of explicit params. */
export function rangeOf(params, fallback) {
  const from = params.get('from');
  const to = params.get('to');
  if (from || to) return { from: from || null, to: to || null, label: 'custom' };
  const name = params.get('range') || fallback;
  const secs = RANGES[name];
  if (!secs) return { from: null, to: null, label: name };
  const now = Date.now();
  return { from: new Date(now - secs * 1000).toISOString(), to: new Date(now + 1000).toISOString(), label: name };
}

/** A <select> of range presets (those in `names`). */
export function rangeSelect(current, names) {
  return h('select', { name: 'range' }, names.map((n) => h('option', { value: n, selected: n === current }, n === 'all' ? 'all time' : `last ${n}`)));
}

/** A labelled form control. */
export function field(label, control) {
  return h('label.field', null, h('span', null, label), control);
}
