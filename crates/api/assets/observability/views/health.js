// System health: gauges of the server's latest samples (CPU, memory) and
// cards with the latest value and the range's history of the others (data
// directory, database, connections, embedding queue, vector index), from
// GET /api/observability/metrics (admin scope), bucketed by the server.

import { get } from '../api.js';
import { box, gauge, sparkline } from '../charts.js';
import { field, fill, fmtBytes, fmtInt, fmtPct, fmtTime, h, rangeOf, rangeSelect } from '../ui.js';
import { timeMs } from './trace.js';

const GAUGES = [
  { name: 'process.cpu.utilization', title: 'Process CPU', ratio: true },
  { name: 'system.cpu.utilization', title: 'Host CPU', ratio: true },
  { name: 'system.memory.usage', title: 'Host memory', limit: 'system.memory.limit' },
];
const CARDS = [
  { name: 'process.memory.usage', title: 'Process memory (RSS)', fmt: fmtBytes },
  { name: 'memlayer.data_dir.usage', title: 'Data directory', fmt: fmtBytes },
  { name: 'memlayer.database.size', title: 'Database', fmt: fmtBytes },
  { name: 'memlayer.server.connections', title: 'Open connections', fmt: fmtInt },
  { name: 'memlayer.embedding.queue', title: 'Embedding queue', fmt: fmtInt, unit: 'messages waiting' },
  { name: 'memlayer.index.vector.entries', title: 'Vector index', fmt: fmtInt, unit: 'entries' },
];

function colorFor(ratio) {
  if (ratio >= 0.9) return '#dc2626';
  if (ratio >= 0.7) return '#d97706';
  return '#16a34a';
}

export default async function health({ main, params, signal, go }) {
  const rangeName = params.get('range') || '1h';
  const range = rangeOf(params, '1h');
  const form = h('form.filters', {
    onsubmit: (e) => { e.preventDefault(); go('health', Object.fromEntries(new FormData(e.target).entries())); },
  }, field('Time range', rangeSelect(rangeName, ['15m', '1h', '6h', '24h', '7d'])), h('button', { type: 'submit' }, 'Apply'));
  const body = h('div', null, h('p.loading', null, 'Loading…'));
  fill(main, h('h2', null, 'System health'), form, body);

  const data = await get('/api/observability/metrics', { from: range.from, to: range.to }, signal);
  const instances = [...new Set(data.series.map((s) => s.instance))];
  if (!instances.length) {
    fill(body, h('section.panel', null, h('p.empty', null, 'No sample in this range yet (the server samples itself every observability.metrics.interval_secs).')));
    return;
  }
  const instance = instances.includes(params.get('instance')) ? params.get('instance') : instances[0];
  const of = (name) => data.series.find((s) => s.name === name && s.instance === instance);
  const last = (s) => (s && s.points.length ? s.points[s.points.length - 1] : null);
  // A bucket's figure: its mean (the newest bucket's is the "now" shown).
  const value = (p) => (p.last ?? p.avg);
  const history = (s) => (s ? s.points.map((p) => [timeMs(p.start), p.avg]) : []);
  const draws = [];

  const gauges = GAUGES.map((g) => {
    const s = of(g.name);
    const p = last(s);
    const limit = g.limit ? last(of(g.limit)) : null;
    const max = g.ratio ? 1 : limit ? value(limit) : null;
    const ratio = p && max ? value(p) / max : null;
    const c = box('gauge');
    const text = p === null ? '—' : g.ratio ? fmtPct(value(p)) : fmtBytes(value(p));
    const sub = g.ratio ? (p ? `mean of the newest ${data.bucket_secs} s; max ${fmtPct(p.max)}` : 'no sample') : (limit ? `of ${fmtBytes(value(limit))} (${fmtPct(ratio)})` : 'no limit known');
    if (ratio !== null) draws.push(() => gauge(c.canvas, ratio, 1, colorFor(ratio)));
    return h('section.panel.gauge-card', { dataset: { metric: g.name } }, h('h3', null, g.title), c.wrap,
      h('div.gauge-value', null, text), h('div.dim', null, sub));
  });

  const cards = CARDS.map((card) => {
    const s = of(card.name);
    const p = last(s);
    const c = box('spark');
    if (s && s.points.length > 1) draws.push(() => sparkline(c.canvas, history(s), '#2563eb'));
    return h('section.panel.metric-card', { dataset: { metric: card.name } },
      h('h3', null, card.title),
      h('div.metric-value', null, p ? card.fmt(value(p)) : '—'),
      h('div.dim', null, p ? `${card.unit ? `${card.unit}; ` : ''}min ${card.fmt(minOf(s))}, max ${card.fmt(maxOf(s))}` : 'not sampled'),
      c.wrap);
  });

  const latest = data.series.reduce((acc, s) => {
    const p = last(s);
    return p && (!acc || p.start > acc) ? p.start : acc;
  }, null);
  fill(body,
    h('div.instance', null,
      instances.length > 1
        ? field('Instance', h('select', { onchange: (e) => go('health', { range: rangeName, instance: e.target.value }) }, instances.map((i) => h('option', { value: i, selected: i === instance }, i))))
        : h('span', null, 'Instance ', h('strong', { id: 'instance' }, instance)),
      h('span.dim', null, ` · last sample bucket ${fmtTime(latest)} UTC · buckets of ${data.bucket_secs} s`)),
    h('div.grid3', null, gauges),
    h('div.grid3', null, cards));
  draws.forEach((d) => d());
}

function minOf(s) { return Math.min(...s.points.map((p) => p.min)); }
function maxOf(s) { return Math.max(...s.points.map((p) => p.max)); }
