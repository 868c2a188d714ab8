// The Mastra side of scripts/bench_peers: Mastra's memory (`@mastra/memory`'s Memory on
// `@mastra/libsql`'s LibSQLStore, and LibSQLVector) called in-process, as an agent built on
// Mastra calls it, on the same work as crates/app/examples/bench_peers.rs. Prints one JSON
// object (see scripts/bench_peers.py for the fields). Run by scripts/bench_peers, which
// installs the pinned packages (scripts/peers/package-lock.json) next to a copy of this file.
//
//   node mastra.mjs --dir DIR --texts FILE --vectors FILE [--key value ...]
//
// Memory is used with its defaults and no vector store or embedder (no semantic recall),
// as memlayer runs with embeddings off for the message lines; the vector lines use
// LibSQLVector directly with the precomputed vectors (createIndex, upsert, query with a
// metadata filter), as Memory's semantic recall does with the vectors its embedder makes.
import { randomUUID } from 'node:crypto';
import { mkdirSync, rmSync } from 'node:fs';
import { join } from 'node:path';

import { LibSQLStore, LibSQLVector } from '@mastra/libsql';
import { Memory } from '@mastra/memory';

import { installedVersion, loadTexts, median, messageWork, now, parseParams, secs, vectorRows } from './common.mjs';

const params = parseParams(process.argv.slice(2));
const texts = loadTexts(params.texts);

rmSync(params.dir, { recursive: true, force: true });
mkdirSync(params.dir, { recursive: true });
const storage = new LibSQLStore({ id: 'peers', url: `file:${join(params.dir, 'mastra.db')}` });
const memory = new Memory({ storage });
const resourceId = 'bench-user';

let created = 0;
// Messages of a thread are ordered by createdAt: each gets the next millisecond.
let clock = Date.now();
const asc = { field: 'createdAt', direction: 'ASC' };
const textOf = (m) => m.content.parts[0].text;
const store = {
  async newThread() {
    const threadId = `thread-${++created}`;
    await memory.createThread({ resourceId, threadId });
    return threadId;
  },
  async save(threadId, rows) {
    const messages = rows.map((i) => ({
      id: randomUUID(),
      threadId,
      resourceId,
      role: i % 2 === 0 ? 'user' : 'assistant',
      type: 'v2',
      content: { format: 2, parts: [{ type: 'text', text: texts[i % texts.length] }] },
      createdAt: new Date(++clock),
    }));
    await memory.saveMessages({ messages });
  },
  async last10(threadId) {
    return (await memory.recall({ threadId, perPage: 10 })).messages.map(textOf);
  },
  page(threadId, n) {
    return memory.recall({ threadId, perPage: 100, page: n, orderBy: asc });
  },
  async walk(threadId, onPage) {
    let n = 0;
    for (;;) {
      const { messages, hasMore } = await this.page(threadId, n);
      onPage(messages.map(textOf));
      if (!hasMore) return n;
      n++;
    }
  },
  async firstPage(threadId) {
    return (await this.page(threadId, 0)).messages.map(textOf);
  },
  async lastPage(threadId, n) {
    return (await this.page(threadId, n)).messages.map(textOf);
  },
};
const { lines, checks } = await messageWork(params, texts, store);

// Vectors: upsert the precomputed vectors, then thread-filtered top-10 queries.
const vector = {};
{
  const row = vectorRows(params.vectors, params.dim);
  const vectors = new LibSQLVector({ id: 'peers-vectors', url: `file:${join(params.dir, 'vectors.db')}` });
  const indexName = 'peers';
  await vectors.createIndex({ indexName, dimension: params.dim, metric: 'cosine' });
  const n = params['vector-data'];
  const threadOf = (i) => Math.floor((i * params['vector-threads']) / n);
  const data = [];
  const metadata = [];
  const ids = [];
  for (let i = 0; i < n; i++) {
    data.push(row(i));
    metadata.push({ thread_id: `conv-${threadOf(i)}`, row: i });
    ids.push(`row-${i}`);
  }
  const t0 = now();
  await vectors.upsert({ indexName, vectors: data, metadata, ids });
  vector.upsert_s = secs(t0);
  const results = [];
  const times = [];
  for (let q = 0; q < params['vector-queries']; q++) {
    const queryVector = row(n + q);
    const filter = { thread_id: `conv-${q % params['vector-threads']}` };
    const t1 = now();
    const hits = await vectors.query({ indexName, queryVector, topK: 10, filter });
    times.push(Number(now() - t1) / 1e3);
    results.push(hits.map((h) => h.metadata.row));
  }
  vector.query_us = median(times);
  vector.results = results;
}

console.log(
  JSON.stringify({
    side: 'mastra',
    label: 'Mastra (in process)',
    versions: {
      node: process.version,
      '@mastra/core': installedVersion('@mastra/core'),
      '@mastra/memory': installedVersion('@mastra/memory'),
      '@mastra/libsql': installedVersion('@mastra/libsql'),
      '@libsql/client': installedVersion('@libsql/client'),
    },
    settings: 'LibSQLStore defaults (WAL, synchronous=NORMAL); LibSQLVector defaults (libsql_vector_idx)',
    params,
    lines,
    vector,
    checks,
  }),
);
