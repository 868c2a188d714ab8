// Model performance per (model, agent) over time: latency percentiles,
// tokens per second, error rate and calls, bucketed by the server (about 60
// buckets whatever the range), and each pair's totals.

import { get } from '../api.js';
import { box, timeLines } from '../charts.js';
import { field, fill, fmtInt, fmtMs, fmtNum, fmtPct, h, rangeOf, rangeSelect, table } from '../ui.js';
import { timeMs } from './trace.js';

const PCTS = ['p50', 'p90', 'p95', 'p99', 'max'];

export function seriesLabel(s) {
  return `${s.model} · ${s.agent === null || s.agent === undefined ? '(no agent)' : s.agent}`;
}

/** Every bucket start of the answer, so missing buckets are gaps, not slopes. */
export function bucketStarts(from, to, secs) {
  const out = [];
  const a = timeMs(from);
  const b = timeMs(to);
  const step = secs * 1000;
  for (let t = a; t < b && out.length < 5000; t += step) out.push(t);
  return out;
}

export default async function performance({ main, params, signal, go }) {
  const rangeName = params.get('range') || '24h';
  const range = rangeOf(params, '24h');
  const current = { model: params.get('model') || '', agent: params.get('agent') || '', operation: params.get('operation') || '' };
  const pct = PCTS.includes(params.get('pct')) ? params.get('pct') : 'p95';

  const form = h('form.filters', {
    onsubmit: (e) => {
      e.preventDefault();
      const d = Object.fromEntries([...new FormData(e.target).entries()].map(([k, v]) => [k, String(v).trim()]));
      go('performance', d);
    },
  },
  field('Time range', rangeSelect(rangeName, ['1h', '6h', '24h', '7d', '30d'])),
  field('Model', h('input', { name: 'model', value: current.model, placeholder: 'any', size: 12 })),
  field('Agent', h('input', { name: 'agent', value: current.agent, placeholder: 'any', size: 10 })),
  field('Operation', h('input', { name: 'operation', value: current.operation, placeholder: 'chat, …', size: 10 })),
  field('Latency', h('select', { name: 'pct' }, PCTS.map((p) => h('option', { value: p, selected: p === pct }, p)))),
  h('button', { type: 'submit' }, 'Apply'));
  const body = h('div', null, h('p.loading', null, 'Loading…'));
  fill(main, h('h2', null, 'Model performance'), form, body);

  const data = await get('/api/observability/performance', { from: range.from, to: range.to, ...current }, signal);
  const starts = bucketStarts(data.from, data.to, data.bucket_secs);
  const xr = [timeMs(data.from), timeMs(data.to)];
  const step = data.bucket_secs * 1000;
  const lines = (pick) => data.series.map((s) => {
    const byIndex = new Map(s.buckets.map((b) => [Math.round((timeMs(b.start) - xr[0]) / step), b]));
    return { label: seriesLabel(s), points: starts.map((t, i) => [t + step / 2, byIndex.has(i) ? pick(byIndex.get(i)) : null]) };
  });

  if (!data.series.length) {
    fill(body, h('section.panel', null, h('p.empty', null, 'No model call in this range. Model calls are spans with gen_ai.request.model (OpenTelemetry GenAI conventions).')));
    return;
  }

  const charts = [
    [`Latency ${pct}`, (b) => (b.latency_ms ? b.latency_ms[pct] : null), fmtMs],
    ['Tokens per second (output)', (b) => b.tokens_per_second, (v) => fmtNum(v, 1)],
    ['Error rate', (b) => b.error_rate, fmtPct],
    ['Calls', (b) => b.calls, fmtInt],
  ];
  const grid = h('div.grid2');
  const made = charts.map(([title, pick, fmt]) => {
    const c = box();
    grid.append(h('section.panel', null, h('h3', null, title), c.wrap));
    return () => timeLines(c.canvas, lines(pick), { range: xr, fmt });
  });

  const totals = table([
    ['Model', (s) => s.model, 'mono'],
    ['Agent', (s) => s.agent ?? '—'],
    ['Calls', (s) => fmtInt(s.total.calls), 'num'],
    ['Errors', (s) => fmtInt(s.total.errors), 'num'],
    ['Error rate', (s) => fmtPct(s.total.error_rate), 'num'],
    ['p50', (s) => fmtMs(s.total.latency_ms?.p50), 'num'],
    ['p90', (s) => fmtMs(s.total.latency_ms?.p90), 'num'],
    ['p95', (s) => fmtMs(s.total.latency_ms?.p95), 'num'],
    ['p99', (s) => fmtMs(s.total.latency_ms?.p99), 'num'],
    ['Tokens in / out', (s) => `${fmtInt(s.total.input_tokens)} / ${fmtInt(s.total.output_tokens)}`, 'num'],
    ['Tokens/s', (s) => fmtNum(s.total.tokens_per_second, 1), 'num'],
    ['TTFT p50', (s) => fmtMs(s.total.time_to_first_token_ms?.p50), 'num'],
  ], data.series, { className: 'data perf-totals', rowProps: (s) => ({ dataset: { model: s.model, agent: s.agent ?? '' } }) });

  fill(body,
    h('p.dim', null, `${fmtInt(data.spans_scanned)} model calls, buckets of ${fmtNum(data.bucket_secs / 60, 1)} min, times in UTC.`),
    data.truncated ? h('p.warn', null, 'The range holds more model calls than one request reads (observability.max_scan_spans): narrow it.') : null,
    grid,
    h('section.panel', null, h('h3', null, 'Totals per model and agent'), totals));
  made.forEach((draw) => draw());
}
