// What the Node sides of scripts/bench_peers share (scripts/peers/mastra.mjs,
// scripts/peers/memlayer-http.mjs): the parameters (the same keys and defaults as
// crates/app/examples/bench_peers.rs), the texts and vectors, timing, and the message
// work itself, run against a `store` of five calls, so every side does the same work in
// the same order.
import { readFileSync } from 'node:fs';
import { join } from 'node:path';

export const defaults = {
  dir: '',
  texts: '',
  vectors: '',
  dim: 384,
  'vector-data': 5882,
  'vector-queries': 100,
  'vector-threads': 10,
  'batch-total': 10000,
  batch: 1000,
  single: 1000,
  clients: 8,
  long: 100000,
  'last-iters': 1000,
  'page-iters': 200,
  warmup: 100,
};

/** `--key value` pairs over `defaults` (plus `extra` keys this side takes). */
export function parseParams(argv, extra = {}) {
  const params = { ...defaults, ...extra };
  for (let i = 0; i < argv.length; i += 2) {
    const key = argv[i].replace(/^--/, '');
    if (!(key in params) || i + 1 >= argv.length) throw new Error(`unknown or valueless argument ${argv[i]}`);
    params[key] = typeof params[key] === 'number' ? Number(argv[i + 1]) : argv[i + 1];
  }
  if (!params.dir || !params.texts) throw new Error('--dir and --texts are required');
  return params;
}

export const loadTexts = (path) =>
  readFileSync(path, 'utf8')
    .split('\n')
    .filter((l) => l.length > 0)
    .map((l) => JSON.parse(l));

/** Row `i` of a raw little-endian f32 file of `dim` columns, as an array. */
export function vectorRows(path, dim) {
  const raw = readFileSync(path);
  const floats = new Float32Array(raw.buffer, raw.byteOffset, raw.byteLength / 4);
  return (i) => Array.from(floats.subarray(i * dim, (i + 1) * dim));
}

export const now = () => process.hrtime.bigint();
export const secs = (t0) => Number(now() - t0) / 1e9;
export const median = (xs) => {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.floor(s.length / 2)];
};

/** Median latency of `n` awaited calls of `f`, in microseconds. */
export async function latency(n, f) {
  const times = [];
  for (let i = 0; i < n; i++) {
    const t0 = now();
    await f(i);
    times.push(Number(now() - t0) / 1e3);
  }
  return median(times);
}

/** The version of an installed package, from next to this file. */
export function installedVersion(pkg) {
  const here = new URL('.', import.meta.url).pathname;
  return JSON.parse(readFileSync(join(here, 'node_modules', pkg, 'package.json'), 'utf8')).version;
}

/**
 * The message work, on `store`:
 *   newThread() -> id
 *   save(thread, [i, ...]) -> stores texts[i % n] in order (one call, any number of messages)
 *   last10(thread) -> the 10 newest texts, oldest first
 *   walk(thread, onPage(texts)) -> pages of 100 from the start to the end; returns a
 *     handle for the last page
 *   firstPage(thread), lastPage(thread, handle) -> the texts of that page of 100
 * Returns { lines, checks }.
 */
export async function messageWork(params, texts, store) {
  const lines = {};
  const checks = [];
  const range = (from, to) => Array.from({ length: to - from }, (_, k) => from + k);
  const text = (i) => texts[i % texts.length];

  // Warm-up (not measured): the same calls, on a thread of their own.
  {
    const t = await store.newThread();
    for (let i = 0; i < params.warmup; i++) await store.save(t, [i]);
    await store.last10(t);
  }

  const batched = async (t, total) => {
    const t0 = now();
    for (let start = 0; start < total; start += params.batch) await store.save(t, range(start, start + params.batch));
    return total / secs(t0);
  };

  // 1. Saves in batches.
  lines.batched = await batched(await store.newThread(), params['batch-total']);

  // 2. Single saves, one call at a time.
  {
    const t = await store.newThread();
    const t0 = now();
    for (let i = 0; i < params.single; i++) await store.save(t, [i]);
    lines.single = params.single / secs(t0);
  }

  // 3. The same from concurrent clients, each on its own thread.
  {
    const per = Math.floor(params.single / params.clients);
    const threads = [];
    for (let c = 0; c < params.clients; c++) threads.push(await store.newThread());
    const t0 = now();
    await Promise.all(
      threads.map(async (t, c) => {
        for (let i = 0; i < per; i++) await store.save(t, [c * per + i]);
      }),
    );
    lines.concurrent = (per * params.clients) / secs(t0);
  }

  // 4-6. A long thread: last 10, paging through all, pages of 100 at the start and the end.
  {
    const t = await store.newThread();
    lines.fill = await batched(t, params.long);
    lines.last10_us = await latency(params['last-iters'], async () => {
      const got = await store.last10(t);
      if (got.length !== 10) throw new Error(`last 10: got ${got.length}`);
    });
    const last = await store.last10(t);
    checks.push(['last 10 ends with the newest message', last[9] === text(params.long - 1)]);

    let seen = 0;
    let ordered = true;
    const w0 = now();
    const end = await store.walk(t, (page) => {
      for (const m of page) ordered &&= m === text(seen++);
    });
    lines.walk_s = secs(w0);
    checks.push(['paging through everything sees every message in order', ordered && seen === params.long]);

    lines.page_first_us = await latency(params['page-iters'], async () => {
      const got = await store.firstPage(t);
      if (got.length !== 100) throw new Error(`first page: got ${got.length}`);
    });
    lines.page_last_us = await latency(params['page-iters'], async () => {
      const got = await store.lastPage(t, end);
      if (got.length !== 100) throw new Error(`last page: got ${got.length}`);
    });
    const endPage = await store.lastPage(t, end);
    checks.push([
      'the page at the end holds the last 100 messages',
      endPage[99] === text(params.long - 1) && endPage[0] === text(params.long - 100),
    ]);
  }
  return { lines, checks };
}
