// The dashboard's shell: a hash router (#/traces, #/trace/<id>, #/performance,
// #/costs, #/evaluations, #/health; filters in the hash's query), the
// credentials form, and the page state the browser test waits on:
// <html data-view="…" data-state="loading|ready|error" data-render="n">.

import { credentials, onAuthProblem } from './api.js';
import { destroyAll } from './charts.js';
import { errorBox, fill, h } from './ui.js';
import costs from './views/costs.js';
import evaluations from './views/evaluations.js';
import health from './views/health.js';
import performance from './views/performance.js';
import trace from './views/trace.js';
import traces from './views/traces.js';

const VIEWS = { traces, trace, performance, costs, evaluations, health };
const root = document.documentElement;
const main = document.getElementById('view');
const notice = document.getElementById('notice');
let renderId = 0;
let controller = null;

function parseHash() {
  const raw = window.location.hash.replace(/^#\/?/, '');
  const q = raw.indexOf('?');
  const path = q < 0 ? raw : raw.slice(0, q);
  const parts = path.split('/').filter(Boolean).map(decodeURIComponent);
  return { name: parts[0] || 'traces', args: parts.slice(1), params: new URLSearchParams(q < 0 ? '' : raw.slice(q + 1)) };
}

/** Navigates to a view; `params` entries with empty values are left out. */
export function go(name, params = {}, args = []) {
  const q = new URLSearchParams();
  for (const [k, v] of Object.entries(params)) if (v !== undefined && v !== null && v !== '') q.set(k, v);
  const qs = q.toString();
  const hash = `#/${[name, ...args.map(encodeURIComponent)].join('/')}${qs ? `?${qs}` : ''}`;
  if (window.location.hash === hash) render();
  else window.location.hash = hash;
}

function showNotice(text) {
  if (!text) { notice.hidden = true; notice.replaceChildren(); return; }
  fill(notice, text);
  notice.hidden = false;
}

async function render() {
  const { name, args, params } = parseHash();
  renderId += 1;
  const id = renderId;
  if (controller) controller.abort();
  controller = new AbortController();
  destroyAll();
  showNotice(null);
  root.dataset.view = name;
  root.dataset.state = 'loading';
  root.dataset.render = String(id);
  for (const a of document.querySelectorAll('#nav a')) {
    a.classList.toggle('active', a.dataset.view === name || (name === 'trace' && a.dataset.view === 'traces'));
  }
  const view = VIEWS[name];
  fill(main, h('p.loading', null, 'Loading…'));
  if (!view) {
    fill(main, errorBox({ code: 'not_found', message: `no view "${name}"` }));
    root.dataset.state = 'error';
    return;
  }
  try {
    await view({ main, args, params, signal: controller.signal, go, current: () => id === renderId });
    if (id === renderId) root.dataset.state = 'ready';
  } catch (e) {
    if (id !== renderId || (e && e.name === 'AbortError')) return;
    fill(main, errorBox(e));
    root.dataset.state = 'error';
  }
}

onAuthProblem((e) => {
  if (e.status === 401) {
    showNotice(credentials.key
      ? `The server refused the credential (${e.message}). Paste another API key above.`
      : 'This server requires a credential: paste an API key (or a JWT) above and press Use. It is kept in this tab only.');
    document.getElementById('api-key').focus();
  } else if (e.code === 'host_not_allowed') {
    showNotice(e.message);
  }
});

const form = document.getElementById('credentials');
const keyInput = document.getElementById('api-key');
const tenantInput = document.getElementById('tenant');
function showCredentials() {
  keyInput.value = '';
  keyInput.placeholder = credentials.key ? 'key set (hidden)' : 'ml_… or a JWT';
  tenantInput.value = credentials.tenant;
}
form.addEventListener('submit', (e) => {
  e.preventDefault();
  credentials.set(keyInput.value.trim() || credentials.key, tenantInput.value.trim());
  showCredentials();
  render();
});
document.getElementById('forget').addEventListener('click', () => {
  credentials.forget();
  showCredentials();
  render();
});

showCredentials();
window.addEventListener('hashchange', render);
render();
