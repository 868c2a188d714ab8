// memlayer over HTTP for scripts/bench_peers: the message work of scripts/peers/common.mjs
// sent from Node (its built-in fetch, connections kept alive) to a `memlayer serve` on
// loopback, as an agent written in Node would use memlayer as a service. Prints one JSON
// object like the other sides; the vector lines are not run (memlayer takes no
// precomputed vectors over HTTP: it embeds messages itself).
//
//   node memlayer-http.mjs --url http://127.0.0.1:PORT --label LABEL --settings TEXT
//                          --dir DIR --texts FILE [--key value ...]
import { loadTexts, messageWork, parseParams } from './common.mjs';

const params = parseParams(process.argv.slice(2), { url: '', label: 'memlayer-http', settings: '' });
const texts = loadTexts(params.texts);

async function call(method, path, body) {
  const res = await fetch(`${params.url}${path}`, {
    method,
    headers: body === undefined ? {} : { 'content-type': 'application/json' },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const json = await res.json();
  if (!res.ok) throw new Error(`${method} ${path}: ${res.status} ${JSON.stringify(json)}`);
  return json;
}
const message = (i) => ({ role: i % 2 === 0 ? 'user' : 'assistant', content: texts[i % texts.length] });
const contents = (items) => items.map((m) => m.content);
const page = (thread, cursor) =>
  call('GET', `/api/threads/${thread}/messages?limit=100${cursor ? `&cursor=${encodeURIComponent(cursor)}` : ''}`);

const store = {
  async newThread() {
    return (await call('POST', '/api/threads', {})).id;
  },
  async save(thread, rows) {
    const body = rows.length === 1 ? message(rows[0]) : { messages: rows.map(message) };
    await call('POST', `/api/threads/${thread}/messages`, body);
  },
  async last10(thread) {
    const { items } = await call('GET', `/api/threads/${thread}/messages?limit=10&direction=backward`);
    return contents(items).reverse();
  },
  async walk(thread, onPage) {
    // The handle of the last page that held messages (the end may be an empty page).
    let [cursor, last] = [null, null];
    for (;;) {
      const got = await page(thread, cursor);
      onPage(contents(got.items));
      if (got.items.length > 0) last = cursor;
      if (!got.next_cursor) return last;
      cursor = got.next_cursor;
    }
  },
  async firstPage(thread) {
    return contents((await page(thread, null)).items);
  },
  async lastPage(thread, cursor) {
    return contents((await page(thread, cursor)).items);
  },
};
const { lines, checks } = await messageWork(params, texts, store);
const health = await call('GET', '/health');
checks.push(['the server stayed up', health.status === 'ok']);

console.log(
  JSON.stringify({
    side: params.label,
    label: `memlayer over HTTP (Node fetch, loopback; ${params.label.replace(/^memlayer-http-/, 'synchronous=').toUpperCase()})`,
    versions: { node: process.version },
    settings: params.settings,
    params,
    lines,
    vector: {},
    checks,
  }),
);
