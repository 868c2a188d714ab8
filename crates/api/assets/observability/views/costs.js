// Costs: daily cost per model (stacked bars) over the range, the server's
// 30-day projection after it (a dashed line; its method and basis stated),
// and the per-model prices and totals.

import { get } from '../api.js';
import { bars, box } from '../charts.js';
import { field, fill, fmtCost, fmtInt, fmtNum, h, rangeOf, rangeSelect, stat, table } from '../ui.js';

/** Whole UTC days: [from, to) of the last `days` days, `to` tomorrow 00:00. */
function lastDays(days) {
  const now = new Date();
  const to = Date.UTC(now.getUTCFullYear(), now.getUTCMonth(), now.getUTCDate() + 1);
  return { from: new Date(to - days * 86400000).toISOString(), to: new Date(to).toISOString() };
}

const DAYS = { '7d': 7, '14d': 14, '30d': 30, '90d': 90 };

export default async function costs({ main, params, signal, go }) {
  const rangeName = DAYS[params.get('range')] ? params.get('range') : '30d';
  const explicit = rangeOf(params, rangeName);
  const range = explicit.label === 'custom' ? explicit : lastDays(DAYS[rangeName]);
  const current = { model: params.get('model') || '', agent: params.get('agent') || '' };
  const form = h('form.filters', {
    onsubmit: (e) => {
      e.preventDefault();
      go('costs', Object.fromEntries([...new FormData(e.target).entries()].map(([k, v]) => [k, String(v).trim()])));
    },
  },
  field('Days', h('select', { name: 'range' }, Object.keys(DAYS).map((n) => h('option', { value: n, selected: n === rangeName }, `last ${DAYS[n]} days`)))),
  field('Model', h('input', { name: 'model', value: current.model, placeholder: 'any', size: 12 })),
  field('Agent', h('input', { name: 'agent', value: current.agent, placeholder: 'any', size: 10 })),
  h('button', { type: 'submit' }, 'Apply'));
  const body = h('div', null, h('p.loading', null, 'Loading…'));
  fill(main, h('h2', null, 'Costs'), form, body);

  const data = await get('/api/observability/costs', { from: range.from, to: range.to, ...current }, signal);
  const p = data.projection;
  const days = data.daily.map((d) => d.day);
  const projDays = p ? p.daily.map((d) => d.day) : [];
  const labels = [...days, ...projDays];
  // Priced models only: an unpriced one has no cost to draw (it is named above the chart).
  const models = [...new Set(data.rows.filter((r) => r.cost !== null).map((r) => r.model))].sort();
  const datasets = models.map((m) => {
    const perDay = new Map();
    for (const r of data.rows) if (r.model === m) perDay.set(r.day, (perDay.get(r.day) || 0) + (r.cost || 0));
    return { label: m, data: labels.map((d) => (perDay.has(d) ? perDay.get(d) : null)), stack: 'cost' };
  });
  if (p) {
    datasets.push({
      label: 'projection',
      type: 'line',
      stack: 'projection',
      dash: true,
      color: '#475569',
      data: [...days.map((d, i) => (i === days.length - 1 ? data.daily[i].cost : null)), ...p.daily.map((d) => d.cost)],
    });
  }

  const c = box('chart.tall');
  const method = p ? `${p.method === 'linear_least_squares' ? 'least-squares line' : p.method} through the last ${p.basis_days} day(s), slope ${fmtCost(p.slope_per_day)}/day` : '';
  fill(body,
    h('div.stats', null,
      stat('Cost in range', fmtCost(data.total.cost), `${fmtInt(data.total.calls)} calls`, { figure: 'total' }),
      stat('Tokens in / out', `${fmtInt(data.total.input_tokens)} / ${fmtInt(data.total.output_tokens)}`),
      p ? stat(`Projected next ${p.horizon_days} days`, fmtCost(p.total), method, { figure: 'projection' }) : null),
    data.unpriced_models.length
      ? h('p.warn', null, `No price in the catalog for: ${data.unpriced_models.join(', ')} (their calls count in tokens, not in cost; set input_price and output_price in /api/models).`)
      : null,
    h('section.panel', null, h('h3', null, 'Daily cost per model, and the projection'), c.wrap),
    h('section.panel', null, h('h3', null, 'Per model (catalog prices per million tokens)'), table([
      ['Model', (m) => m.model, 'mono'],
      ['Input price', (m) => fmtCost(m.input_price), 'num'],
      ['Output price', (m) => fmtCost(m.output_price), 'num'],
      ['Calls', (m) => fmtInt(m.calls), 'num'],
      ['Input tokens', (m) => fmtInt(m.input_tokens), 'num'],
      ['Output tokens', (m) => fmtInt(m.output_tokens), 'num'],
      ['Cost', (m) => fmtCost(m.cost), 'num'],
    ], data.by_model, { className: 'data by-model' })));
  bars(c.canvas, labels.map((d) => d.slice(5)), datasets, { stacked: true, fmt: (v) => (v === null ? '—' : fmtCost(v)), tick: (v) => `$${fmtNum(v, 4)}`, yTitle: 'cost' });
}
