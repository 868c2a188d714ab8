// Traces overview: filters (time range, model, agent, service, status, min
// duration, text), sorting by start or duration, and keyset paging: one page
// of `limit` traces per request, whatever the store holds.

import { get } from '../api.js';
import { field, fill, fmtInt, fmtMs, fmtTime, h, rangeOf, rangeSelect, table } from '../ui.js';

const PAGE = 50;
const FILTERS = ['range', 'from', 'to', 'model', 'agent', 'service', 'status', 'min_duration_ms', 'q', 'sort'];
// Cursors of the pages before this one, per filter set (Previous pops one).
const history = { key: '', cursors: [] };

export default async function traces({ main, params, signal, go }) {
  const current = Object.fromEntries(FILTERS.map((k) => [k, params.get(k) || '']));
  const cursor = params.get('cursor') || '';
  const key = JSON.stringify(current);
  if (history.key !== key || !cursor) { history.key = key; history.cursors = []; }
  const range = rangeOf(params, 'all');
  sessionStorage.setItem('memlayer.dashboard.traces', window.location.hash || '#/traces');
  const sort = current.sort || '-start_time';

  const form = h('form.filters', {
    onsubmit: (e) => {
      e.preventDefault();
      const d = new FormData(e.target);
      const next = Object.fromEntries([...d.entries()].map(([k, v]) => [k, String(v).trim()]));
      if (next.range === 'all') delete next.range;
      go('traces', { ...next, sort: current.sort });
    },
  },
  field('Time range', rangeSelect(current.range || (range.label === 'custom' ? 'all' : range.label), ['15m', '1h', '6h', '24h', '7d', '30d', 'all'])),
  field('Model', h('input', { name: 'model', value: current.model, placeholder: 'gpt-4o', size: 12 })),
  field('Agent', h('input', { name: 'agent', value: current.agent, placeholder: 'any', size: 10 })),
  field('Service', h('input', { name: 'service', value: current.service, placeholder: 'any', size: 10 })),
  field('Status', h('select', { name: 'status' }, ['', 'ok', 'error', 'unset'].map((s) => h('option', { value: s, selected: s === current.status }, s || 'any')))),
  field('Min duration (ms)', h('input', { name: 'min_duration_ms', type: 'number', min: 0, step: 'any', value: current.min_duration_ms, size: 7 })),
  field('Text', h('input', { name: 'q', type: 'search', value: current.q, placeholder: 'in names and attributes', size: 18 })),
  h('button', { type: 'submit' }, 'Apply'),
  h('button', { type: 'button', onclick: () => go('traces', {}) }, 'Reset'));

  const results = h('section.panel', null, h('p.loading', null, 'Loading…'));
  fill(main, h('h2', null, 'Traces'), form, results);

  const page = await get('/api/observability/traces', {
    from: range.from, to: range.to, model: current.model, agent: current.agent, service: current.service,
    status: current.status, min_duration_ms: current.min_duration_ms, q: current.q, sort, limit: PAGE, cursor,
  }, signal);

  const sortBy = (col) => () => {
    const next = sort === `-${col}` ? col : `-${col}`;
    go('traces', { ...current, sort: next });
  };
  const arrow = (col) => (sort === `-${col}` ? ' ▼' : sort === col ? ' ▲' : '');
  const open = (t) => go('trace', {}, [t.trace_id]);
  const rows = page.items;
  const tbl = table([
    [`Start (UTC)${arrow('start_time')}`, (t) => fmtTime(t.start_time), 'nowrap', sortBy('start_time')],
    ['Name', (t) => h('a', { href: `#/trace/${t.trace_id}`, class: 'trace-link' }, t.name || '(unnamed)')],
    ['Service', (t) => t.service || '—'],
    ['Agent', (t) => t.agent || '—'],
    ['Model', (t) => t.model || '—'],
    ['Status', (t) => h(`span.badge.${t.status}`, null, t.status)],
    ['Spans', (t) => (t.error_count ? `${fmtInt(t.span_count)} (${fmtInt(t.error_count)} err)` : fmtInt(t.span_count)), 'num'],
    [`Duration${arrow('duration')}`, (t) => fmtMs(t.duration_ms), 'num', sortBy('duration')],
    ['Tokens in / out', (t) => (t.input_tokens || t.output_tokens ? `${fmtInt(t.input_tokens)} / ${fmtInt(t.output_tokens)}` : '—'), 'num'],
  ], rows, { className: 'data traces', rowProps: (t) => ({ class: 'clickable', dataset: { traceId: t.trace_id }, ondblclick: () => open(t) }) });

  const pageNo = history.cursors.length + 1;
  const pager = h('div.pager', null,
    h('button', {
      type: 'button', id: 'prev-page', disabled: !cursor,
      onclick: () => { const prev = history.cursors.pop(); go('traces', { ...current, cursor: prev || '' }); },
    }, '← Previous'),
    h('span', { id: 'page-no' }, `Page ${pageNo} · ${rows.length} trace${rows.length === 1 ? '' : 's'}`),
    h('button', {
      type: 'button', id: 'next-page', disabled: !page.next_cursor,
      onclick: () => { history.cursors.push(cursor); go('traces', { ...current, cursor: page.next_cursor }); },
    }, 'Next →'));
  // A page of a filter no index serves (text, service, status ok/unset)
  // looks into a bounded window of traces: an empty one may not be the end.
  const empty = page.next_cursor
    ? 'No match among the traces this page looked into; Next → looks further.'
    : 'No trace matches these filters.';
  fill(results, rows.length ? tbl : h('p.empty', null, empty), pager);
}
