// One trace: its figures, a waterfall of its spans (the server's depth-first
// order and depths; bars placed by start and duration on the trace's time
// axis, events as ticks on their span's bar) and the selected span's
// attributes, events, links and model-call figures.

import { get } from '../api.js';
import { fill, fmtInt, fmtMs, fmtTime, fmtValue, h, stat, table } from '../ui.js';

const ROWS = 300; // rows drawn at first; more on demand (a trace may have 10,000 spans)

/** Nanosecond-precise RFC 3339 → milliseconds since the epoch, as a float. */
export function timeMs(iso) {
  const m = /^(.*T\d\d:\d\d:\d\d)(?:\.(\d+))?Z$/.exec(iso || '');
  if (!m) return Date.parse(iso);
  const frac = (m[2] || '').padEnd(9, '0').slice(0, 9);
  return Date.parse(`${m[1]}Z`) + Number(frac) / 1e6;
}

export default async function trace({ main, args, signal, go }) {
  const id = args[0] || '';
  fill(main, h('p.loading', null, 'Loading…'));
  const data = await get(`/api/observability/traces/${encodeURIComponent(id)}`, {}, signal);
  const t = data.trace;
  const spans = data.spans;
  const t0 = timeMs(t.start_time);
  const total = Math.max(timeMs(t.end_time) - t0, 1e-6);
  let selected = spans.find((s) => s.status && s.status.code === 'error') || spans[0];
  let shown = Math.min(ROWS, spans.length);

  const head = h('section.panel.trace-head', null,
    h('div.crumbs', null, h('a', { href: sessionStorage.getItem('memlayer.dashboard.traces') || '#/traces' }, '← Traces')),
    h('h2', null, t.name || '(unnamed trace)', ' ', h(`span.badge.${t.status}`, null, t.status)),
    h('div.mono.dim', { id: 'trace-id' }, t.trace_id),
    h('div.stats', null,
      stat('Duration', fmtMs(t.duration_ms)),
      stat('Spans', fmtInt(t.span_count), t.error_count ? `${fmtInt(t.error_count)} with errors` : null),
      stat('Started (UTC)', fmtTime(t.start_time)),
      stat('Service', t.service || '—'),
      stat('Agent · model', `${t.agent || '—'} · ${t.model || '—'}`),
      stat('Tokens in / out', `${fmtInt(t.input_tokens)} / ${fmtInt(t.output_tokens)}`)),
    data.orphans ? h('p.warn', null, `${data.orphans} span(s) arrived before their parent and are shown as orphans at depth 0.`) : null,
    data.truncated ? h('p.warn', null, `Only the first ${fmtInt(spans.length)} spans are returned (observability.max_trace_spans).`) : null);

  const waterfall = h('section.panel.waterfall');
  const details = h('section.panel.span-details');
  fill(main, head, waterfall, details);

  function axis() {
    return h('div.wf-row.wf-axis', null, h('div.wf-label', null, 'Span'),
      h('div.wf-track', null, [0, 0.25, 0.5, 0.75, 1].map((f) => h('span.tick', { style: { left: `${f * 100}%` } }, fmtMs(total * f)))));
  }

  function row(s) {
    const start = timeMs(s.start_time) - t0;
    const left = Math.min(100, (start / total) * 100);
    const width = Math.max(0.3, Math.min(100 - left, (s.duration_ms / total) * 100));
    const err = s.status && s.status.code === 'error';
    const bar = h(`div.wf-bar${err ? '.error' : ''}${s.gen_ai && s.gen_ai.model ? '.genai' : ''}`, { style: { left: `${left}%`, width: `${width}%` }, title: `${s.name}: ${fmtMs(s.duration_ms)}` });
    const events = (s.events || []).map((ev) => h('div.wf-event', {
      style: { left: `${Math.min(100, ((timeMs(ev.time) - t0) / total) * 100)}%` },
      title: `${ev.name} at +${fmtMs(timeMs(ev.time) - t0)}`,
    }));
    const label = h('div.wf-label', { title: s.name },
      h('span.indent', { style: { width: `${Math.min(s.depth, 20) * 14}px` } }),
      s.orphan ? h('span.badge.orphan', { title: 'parent not stored' }, 'orphan') : null,
      h('span.wf-name', null, s.name || '(unnamed)'),
      h('span.dim', null, s.kind));
    return h(`div.wf-row.span-row${s === selected ? '.selected' : ''}`, {
      dataset: { spanId: s.span_id },
      onclick: () => { selected = s; draw(); },
    }, label, h('div.wf-track', null, bar, events, h('span.wf-dur', { style: { left: `${left + width}%` } }, fmtMs(s.duration_ms))));
  }

  function draw() {
    const rows = spans.slice(0, shown).map(row);
    const more = shown < spans.length
      ? h('button', { type: 'button', onclick: () => { shown = Math.min(spans.length, shown + ROWS); draw(); } }, `Show ${Math.min(ROWS, spans.length - shown)} more of ${fmtInt(spans.length - shown)} spans`)
      : null;
    fill(waterfall, h('h3', null, 'Timeline'), h('div.wf', null, axis(), rows), more);
    drawDetails();
  }

  function kv(obj) {
    const entries = Object.entries(obj || {});
    if (!entries.length) return h('p.dim', null, 'none');
    return table([['Key', ([k]) => k, 'mono'], ['Value', ([, v]) => fmtValue(v), 'mono wrap']], entries, { className: 'kv' });
  }

  function drawDetails() {
    const s = selected;
    if (!s) { fill(details, h('p.dim', null, 'No span.')); return; }
    const start = timeMs(s.start_time) - t0;
    const g = s.gen_ai;
    fill(details,
      h('h3', null, 'Span ', h('span.mono', null, s.name || '(unnamed)')),
      h('div.stats', null,
        stat('Duration', fmtMs(s.duration_ms), `starts at +${fmtMs(start)}`),
        stat('Status', s.status.code, s.status.message || null),
        stat('Kind', s.kind),
        stat('Span id', h('span.mono', null, s.span_id), s.parent_span_id ? `parent ${s.parent_span_id}` : 'root')),
      g ? h('div.stats.genai-stats', null,
        stat('Model', g.model || '—', g.operation || null),
        stat('Tokens in / out', `${fmtInt(g.input_tokens)} / ${fmtInt(g.output_tokens)}`),
        stat('Time to first token', g.time_to_first_token_ms === null || g.time_to_first_token_ms === undefined ? '—' : fmtMs(g.time_to_first_token_ms)),
        stat('Agent', g.agent || '—')) : null,
      (s.truncated_attributes || s.dropped_attributes_count || s.dropped_events_count || s.dropped_links_count)
        ? h('p.warn', null, `Cut at ingest: ${s.truncated_attributes} truncated attribute(s), ${s.dropped_attributes_count} dropped attribute(s), ${s.dropped_events_count} dropped event(s), ${s.dropped_links_count} dropped link(s).`)
        : null,
      h('div.cols', null,
        h('div', null, h('h4', null, 'Attributes'), kv(s.attributes)),
        h('div', null, h('h4', null, 'Resource'), kv(s.resource),
          h('h4', null, 'Scope'), h('p.mono', null, s.scope ? `${s.scope.name || ''} ${s.scope.version || ''}` : '—'))),
      h('h4', null, `Events (${(s.events || []).length})`),
      (s.events || []).length
        ? table([
          ['At', (e) => `+${fmtMs(timeMs(e.time) - t0)}`, 'num nowrap'],
          ['Name', (e) => e.name, 'mono'],
          ['Attributes', (e) => Object.entries(e.attributes || {}).map(([k, v]) => `${k}=${fmtValue(v)}`).join('  '), 'mono wrap'],
        ], s.events, { className: 'data events' })
        : h('p.dim', null, 'none'),
      (s.links || []).length ? [h('h4', null, `Links (${s.links.length})`), table([
        ['Trace', (l) => h('a', { href: `#/trace/${l.trace_id}`, onclick: (e) => { e.preventDefault(); go('trace', {}, [l.trace_id]); } }, l.trace_id), 'mono'],
        ['Span', (l) => l.span_id, 'mono'],
        ['Attributes', (l) => JSON.stringify(l.attributes || {}), 'mono wrap'],
      ], s.links, { className: 'data' })] : null);
  }

  draw();
}
