// Chart.js (vendor/chart.umd.min.js, a global) with the dashboard's
// defaults: no animation (a chart is drawn once per answer), a fixed
// palette, times on a linear axis in UTC (no date adapter needed).

import { fmtShortTime } from './ui.js';

export const PALETTE = ['#2563eb', '#dc2626', '#16a34a', '#d97706', '#7c3aed', '#0891b2', '#db2777', '#65a30d', '#475569', '#ea580c'];

/** A translucent version of a palette colour. */
export function alpha(hex, a) {
  const n = parseInt(hex.slice(1), 16);
  return `rgba(${(n >> 16) & 255}, ${(n >> 8) & 255}, ${n & 255}, ${a})`;
}

const live = new Set();

/** Destroys the charts of the previous view. */
export function destroyAll() {
  for (const c of live) c.destroy();
  live.clear();
}

function make(canvas, config) {
  const { Chart } = window;
  Chart.defaults.animation = false;
  Chart.defaults.font.family = 'system-ui, -apple-system, "Segoe UI", Roboto, sans-serif';
  Chart.defaults.font.size = 11;
  Chart.defaults.maintainAspectRatio = false;
  const chart = new Chart(canvas, config);
  live.add(chart);
  return chart;
}

/** A canvas in a sized box. */
export function box(cls = 'chart') {
  const wrap = document.createElement('div');
  wrap.className = cls;
  const canvas = document.createElement('canvas');
  wrap.append(canvas);
  return { wrap, canvas };
}

/**
 * A time-series line chart. `series`: [{label, points: [[ms, y|null], …]}];
 * `range`: [fromMs, toMs]; `fmt` formats y values.
 */
export function timeLines(canvas, series, { range, fmt = String, yTitle = '', min } = {}) {
  const span = range ? range[1] - range[0] : 0;
  return make(canvas, {
    type: 'line',
    data: {
      datasets: series.map((s, i) => ({
        label: s.label,
        data: s.points.map(([x, y]) => ({ x, y })),
        borderColor: s.color || PALETTE[i % PALETTE.length],
        backgroundColor: alpha(s.color || PALETTE[i % PALETTE.length], 0.15),
        borderDash: s.dash ? [6, 4] : undefined,
        pointRadius: s.points.length > 80 ? 0 : 2,
        spanGaps: false,
        borderWidth: 2,
        fill: Boolean(s.fill),
        tension: 0.15,
      })),
    },
    options: {
      parsing: false,
      normalized: true,
      interaction: { mode: 'nearest', intersect: false },
      scales: {
        x: {
          type: 'linear',
          min: range ? range[0] : undefined,
          max: range ? range[1] : undefined,
          ticks: { maxTicksLimit: 8, callback: (v) => fmtShortTime(v, span > 86400000 || span === 0) },
        },
        y: { beginAtZero: min === undefined, min, title: { display: Boolean(yTitle), text: yTitle }, ticks: { callback: (v) => fmt(v) } },
      },
      plugins: {
        legend: { display: series.length > 1, position: 'bottom', labels: { boxWidth: 12 } },
        tooltip: { callbacks: { title: (items) => (items.length ? `${new Date(items[0].parsed.x).toISOString().slice(0, 16).replace('T', ' ')} UTC` : ''), label: (c) => `${c.dataset.label}: ${fmt(c.parsed.y)}` } },
      },
    },
  });
}

/** Bars over categories. `datasets`: [{label, data, color?, stack?, type?, dash?}]. */
export function bars(canvas, labels, datasets, { fmt = String, tick = fmt, stacked = false, horizontal = false, yTitle = '' } = {}) {
  return make(canvas, {
    type: 'bar',
    data: {
      labels,
      datasets: datasets.map((d, i) => {
        const color = d.color || PALETTE[i % PALETTE.length];
        return {
          label: d.label,
          data: d.data,
          type: d.type,
          stack: d.stack,
          borderColor: color,
          backgroundColor: d.type === 'line' ? alpha(color, 0.1) : alpha(color, 0.75),
          borderDash: d.dash ? [6, 4] : undefined,
          borderWidth: d.type === 'line' ? 2 : 1,
          pointRadius: d.type === 'line' ? 0 : undefined,
          spanGaps: false,
          order: d.type === 'line' ? 0 : 1,
        };
      }),
    },
    options: {
      indexAxis: horizontal ? 'y' : 'x',
      interaction: { mode: 'index', intersect: false },
      scales: {
        x: { stacked, ticks: { maxRotation: 0, autoSkip: true, maxTicksLimit: 12 } },
        y: { stacked, beginAtZero: true, title: { display: Boolean(yTitle), text: yTitle }, ticks: { callback: (v) => tick(v) } },
      },
      plugins: {
        legend: { position: 'bottom', labels: { boxWidth: 12 } },
        tooltip: { callbacks: { label: (c) => `${c.dataset.label}: ${fmt(c.parsed[horizontal ? 'x' : 'y'])}` } },
      },
    },
  });
}

/** A radar of values scaled 0–1; `raw[i][j]` is shown in the tooltip. */
export function radar(canvas, labels, datasets, raw, fmt = String) {
  return make(canvas, {
    type: 'radar',
    data: {
      labels,
      datasets: datasets.map((d, i) => ({
        label: d.label,
        data: d.data,
        borderColor: PALETTE[i % PALETTE.length],
        backgroundColor: alpha(PALETTE[i % PALETTE.length], 0.15),
        pointRadius: 3,
        borderWidth: 2,
      })),
    },
    options: {
      scales: { r: { min: 0, max: 1, ticks: { stepSize: 0.25, display: false } } },
      plugins: {
        legend: { position: 'bottom', labels: { boxWidth: 12 } },
        tooltip: { callbacks: { label: (c) => `${c.dataset.label}: ${fmt(raw[c.datasetIndex][c.dataIndex])}` } },
      },
    },
  });
}

/** A half-circle gauge of `value` in [0, max]. */
export function gauge(canvas, value, max, color) {
  const v = Math.max(0, Math.min(value, max));
  return make(canvas, {
    type: 'doughnut',
    data: { datasets: [{ data: [v, max - v], backgroundColor: [color, '#e5e7eb'], borderWidth: 0 }] },
    options: {
      rotation: -90,
      circumference: 180,
      cutout: '72%',
      plugins: { legend: { display: false }, tooltip: { enabled: false } },
      events: [],
    },
  });
}

/** A small line without axes (a card's recent history). */
export function sparkline(canvas, points, color) {
  return make(canvas, {
    type: 'line',
    data: { datasets: [{ data: points.map(([x, y]) => ({ x, y })), borderColor: color, backgroundColor: alpha(color, 0.12), fill: true, pointRadius: 0, borderWidth: 1.5, tension: 0.2 }] },
    options: {
      parsing: false,
      scales: { x: { type: 'linear', display: false, bounds: 'data' }, y: { display: false, beginAtZero: true } },
      plugins: { legend: { display: false }, tooltip: { enabled: false } },
      events: [],
    },
  });
}
