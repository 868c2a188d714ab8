// Evaluations: the runs (filtered, paged), a comparison of runs (the newest
// run of each model and agent on a dataset, or the runs ticked) as a radar
// (3 metrics or more) or grouped bars, each metric scaled to the largest
// value among the runs, with the raw values in a table; and one run's
// examples.

import { get } from '../api.js';
import { bars, box, radar } from '../charts.js';
import { field, fill, fmtInt, fmtNum, fmtTime, fmtValue, h, table } from '../ui.js';

const PAGE = 50;

export function runLabel(r) {
  return [r.model, r.agent].filter(Boolean).join(' · ') + (r.name ? ` (${r.name})` : '');
}

function metricsText(m) {
  return Object.entries(m || {}).map(([k, v]) => `${k} ${fmtNum(v, 3)}`).join(' · ');
}

export default async function evaluations({ main, params, signal, go }) {
  const current = { dataset: params.get('dataset') || '', model: params.get('model') || '', agent: params.get('agent') || '' };
  const cursor = params.get('cursor') || '';
  const form = h('form.filters', {
    onsubmit: (e) => {
      e.preventDefault();
      go('evaluations', Object.fromEntries([...new FormData(e.target).entries()].map(([k, v]) => [k, String(v).trim()])));
    },
  },
  field('Dataset', h('input', { name: 'dataset', value: current.dataset, placeholder: 'any', size: 14 })),
  field('Model', h('input', { name: 'model', value: current.model, placeholder: 'any', size: 12 })),
  field('Agent', h('input', { name: 'agent', value: current.agent, placeholder: 'any', size: 10 })),
  h('button', { type: 'submit' }, 'Apply'));
  const compareBox = h('div');
  const runBox = h('div');
  const list = h('section.panel', null, h('p.loading', null, 'Loading…'));
  fill(main, h('h2', null, 'Evaluations'), form, compareBox, runBox, list);

  const page = await get('/api/observability/evaluations', { ...current, limit: PAGE, cursor }, signal);
  const runs = page.items;
  const picked = new Set();
  const compareBtn = h('button', { type: 'button', id: 'compare-selected', disabled: true, onclick: () => go('evaluations', { ...current, compare: [...picked].join(',') }) }, 'Compare ticked runs');
  const tick = (r) => h('input', {
    type: 'checkbox',
    'aria-label': `compare ${runLabel(r)}`,
    onchange: (e) => { if (e.target.checked) picked.add(r.id); else picked.delete(r.id); compareBtn.disabled = picked.size < 2 || picked.size > 20; },
  });
  const datasets = [...new Set(runs.map((r) => r.dataset))];
  fill(list,
    h('h3', null, 'Runs'),
    runs.length ? table([
      ['', tick],
      ['At (UTC)', (r) => fmtTime(r.at), 'nowrap'],
      ['Model', (r) => r.model || '—', 'mono'],
      ['Agent', (r) => r.agent || '—'],
      ['Dataset', (r) => h('a', { href: '#', onclick: (e) => { e.preventDefault(); go('evaluations', { ...current, cmp_dataset: r.dataset }); }, title: 'Compare the newest run of each model on this dataset' }, r.dataset)],
      ['Name', (r) => r.name || '—'],
      ['Metrics', (r) => metricsText(r.metrics), 'wrap'],
      ['Examples', (r) => (r.example_count ? h('a', { href: '#', onclick: (e) => { e.preventDefault(); go('evaluations', { ...current, run: r.id }); } }, fmtInt(r.example_count)) : '0'), 'num'],
    ], runs, { className: 'data runs' }) : h('p.empty', null, 'No evaluation run recorded (POST /api/observability/evaluations).'),
    h('div.pager', null, compareBtn,
      cursor ? h('button', { type: 'button', onclick: () => go('evaluations', current) }, '⟲ First page') : null,
      page.next_cursor ? h('button', { type: 'button', id: 'next-page', onclick: () => go('evaluations', { ...current, cursor: page.next_cursor }) }, 'Next →') : null));

  const ids = params.get('compare');
  const cmpDataset = params.get('cmp_dataset') || (!ids && runs.length ? (current.dataset || runs[0].dataset) : '');
  if (ids || cmpDataset) {
    const cmp = await get('/api/observability/evaluations/compare', ids ? { ids } : { dataset: cmpDataset }, signal);
    fill(compareBox, comparison(cmp, ids ? null : cmpDataset, datasets, (d) => go('evaluations', { ...current, cmp_dataset: d })));
  }
  const runId = params.get('run');
  if (runId) {
    const [run, examples] = await Promise.all([
      get(`/api/observability/evaluations/${encodeURIComponent(runId)}`, {}, signal),
      get(`/api/observability/evaluations/${encodeURIComponent(runId)}/examples`, { limit: 100 }, signal),
    ]);
    fill(runBox, h('section.panel.run-examples', null,
      h('h3', null, `Examples of ${runLabel(run)} on ${run.dataset}`),
      h('p.dim', null, `${fmtTime(run.at)} UTC · ${metricsText(run.metrics)}${examples.next_cursor ? ' · first 100 shown' : ''}`),
      table([
        ['#', (x) => String(x.index), 'num'],
        ['Input', (x) => fmtValue(x.input), 'wrap'],
        ['Expected', (x) => (x.expected === undefined ? '—' : fmtValue(x.expected)), 'wrap'],
        ['Output', (x) => fmtValue(x.output), 'wrap'],
        ['Scores', (x) => metricsText(x.scores), 'wrap'],
      ], examples.items, { className: 'data examples' })));
  }
}

function comparison(cmp, dataset, datasets, pickDataset) {
  const runs = cmp.runs;
  const metrics = cmp.metrics;
  const labels = runs.map(runLabel);
  const scaled = (m, v) => {
    const top = Math.max(...m.values.filter((x) => x !== null).map(Math.abs));
    return v === null ? null : top ? v / top : 0;
  };
  const c = box(metrics.length >= 3 ? 'chart.radar' : 'chart');
  const head = h('div.cmp-head', null,
    h('h3', null, dataset ? `Comparison on ${dataset}` : 'Comparison of the ticked runs'),
    datasets.length > 1 && dataset
      ? field('Dataset', h('select', { onchange: (e) => pickDataset(e.target.value) }, datasets.map((d) => h('option', { value: d, selected: d === dataset }, d))))
      : null);
  const raw = table([
    ['Metric', (m) => m.name, 'mono'],
    ...runs.map((r, i) => [labels[i], (m) => (m.values[i] === null ? '—' : fmtNum(m.values[i], 4)), 'num']),
  ], metrics, { className: 'data compare' });
  const panel = h('section.panel.comparison', null, head,
    h('div.cmp', null, c.wrap, h('div.cmp-table', null, raw, h('p.dim', null, 'Chart: each metric divided by its largest value among these runs (1 = the largest); the table has the values as recorded.'))));
  // Drawn once the canvas is in the document.
  queueMicrotask(() => {
    if (metrics.length >= 3) {
      radar(c.canvas, metrics.map((m) => m.name), runs.map((r, i) => ({ label: labels[i], data: metrics.map((m) => scaled(m, m.values[i])) })),
        runs.map((r, i) => metrics.map((m) => m.values[i])), (v) => fmtNum(v, 4));
    } else {
      bars(c.canvas, metrics.map((m) => m.name), runs.map((r, i) => ({ label: labels[i], data: metrics.map((m) => scaled(m, m.values[i])) })), { fmt: (v) => fmtNum(v, 3) });
    }
  });
  return panel;
}
