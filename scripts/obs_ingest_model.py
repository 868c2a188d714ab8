# A model of the libSQL OTLP write path in Python's sqlite3 (migration 21's
# tables, bench_observability's shape: 8 spans a trace, random trace ids and
# start times, 3 model calls with an event each, 64 traces a batch, batches
# committed in groups), to compare writer settings and schemas without a
# release build. Not the benchmark: no HTTP, protobuf or JSON work, a fixed
# group size, one thread. Its CPU seconds are the signal; its wall time
# follows the machine's other load.
#
#   python3 scripts/obs_ingest_model.py VARIANT SPANS [GROUP]
#   python3 scripts/obs_ingest_model.py frames SPANS    # WAL frames of one batch, per table
#
# VARIANT: main (SQLite's wal_autocheckpoint of 1,000 pages, every batch of a
# group in a savepoint, plain inserts, the trace upsert); ckpt (main with
# wal_autocheckpoint = 16384, as main is since session 13); nojournal (ckpt,
# the group's first batch without a savepoint, INSERT OR FAIL, traces
# inserted and not upserted); bg (nojournal plus a thread running PRAGMA
# wal_checkpoint(PASSIVE) every 250 ms on its own connection); bg2 (ckpt with
# a checkpointer thread after every commit, the writer waiting for it once the
# WAL passes 16,384 frames so the WAL restarts); cache, cache16, cache256,
# ckptcache (a writer page cache of 64, 16, 256, 64 MiB); mmap (1 GiB
# mmap_size); normal (synchronous = NORMAL); noidx (no secondary index on
# obs_traces); fewidx (without the service and end indexes); nocalls
# (without the model-call index); lean, leancache (events as JSON in their
# span's row instead of obs_events; obs_traces without the service, end and
# status indexes, with a partial index of the failed traces; leancache with a
# 64 MiB cache). The database goes to /tmp/obs3/m-VARIANT.db.
# Since migration 26 main's schema is the lean one (its events JSON keys
# differ: time_ns, name, attributes, dropped_attributes); the other variants
# model the schema before it (migration 21 alone).
import sqlite3, os, sys, json, random, time, threading, re
variant = sys.argv[1]; n_spans = int(sys.argv[2]); group = int(sys.argv[3]) if len(sys.argv) > 3 else 3
frames_mode = variant == 'frames'
if frames_mode:
    variant = 'ckpt'
root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
mig = open(os.path.join(root, 'crates/adapters-libsql/migrations/0021_observability.up.sql')).read()
os.makedirs('/tmp/obs3', exist_ok=True)
path = f'/tmp/obs3/m-{variant}.db'
for suf in ('', '-wal', '-shm'):
    try: os.remove(path + suf)
    except FileNotFoundError: pass
con = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
con.execute('PRAGMA journal_mode=WAL'); con.execute('PRAGMA synchronous=FULL'); con.execute('PRAGMA foreign_keys=ON')
con.executescript(mig)
lean = variant.startswith('lean')
if lean:
    for ix in ['service','end','status']: con.execute(f'DROP INDEX obs_traces_{ix}')
    con.execute("CREATE INDEX obs_traces_errors ON obs_traces (tenant, start_ns, trace_id) WHERE status = 'error'")
    con.execute('ALTER TABLE obs_spans ADD COLUMN events TEXT')
# The writer's page cache of the cache variants, in KiB (SQLite's own is 2 MiB).
cache_kib = {'cache': 65536, 'ckptcache': 65536, 'leancache': 65536, 'cache16': 16384, 'cache256': 262144}
if variant in cache_kib:
    con.execute(f'PRAGMA cache_size=-{cache_kib[variant]}')
if variant == 'normal':
    con.execute('PRAGMA synchronous=NORMAL')
if variant == 'noidx':
    for ix in ['start','duration','model','agent','service','status','end']: con.execute(f'DROP INDEX obs_traces_{ix}')
if variant == 'fewidx':
    for ix in ['service','end']: con.execute(f'DROP INDEX obs_traces_{ix}')
if variant == 'mmap':
    con.execute('PRAGMA mmap_size=1073741824')
if variant == 'nocalls':
    con.execute('DROP INDEX obs_spans_calls')
ckpt = 1000 if variant == 'main' else 16384
con.execute(f'PRAGMA wal_autocheckpoint={ckpt}')
orfail = variant in ('nojournal', 'bg')
bare_head = variant in ('nojournal', 'bg')
rnd = random.Random(7)
now = 1_770_000_000_000_000_000
def trace_rows(t):
    tid = rnd.randbytes(16); start = now - rnd.randrange(7*86400*10**9); total = 2*10**9 + rnd.randrange(6*10**9)
    spans = []; events = []
    for k in range(8):
        attrs = json.dumps({f'k{j}': f'value-{t}-{k}-{j}' for j in range(9)})
        model = ['gpt-4o','gpt-4o-mini','claude','llama'][rnd.randrange(4)] if 1 <= k <= 3 else None
        s0 = start + k * total // 10
        spans.append(('bench', tid, t*8+k+1, None if k == 0 else t*8+1, f'span {k}', 'internal', s0, s0 + total//5, 'ok', None, None,
                      attrs, '{"service.name":"agent-runtime","host.name":"worker-7"}', 'scope', '1.0', 0, 0, 0, 0,
                      model, 'support' if k == 0 else None, 'chat' if model else None, 100 if model else None, 10 if model else None, None, 0))
        if model: events.append(('bench', tid, t*8+k+1, 0, s0 + 5, 'gen_ai.choice', '{"finish_reason":"stop","index":0}', 0))
    trace = ('bench', tid, 'invoke_agent support', t*8+1, 'agent-runtime', 'ok', 'ok', start, start+total, total, 8, 0, 'gpt-4o', 'support', 300, 30)
    return spans, events, trace
ntr = n_spans // 8
batches = []
for b in range(ntr // 64):
    sp, ev, tr = [], [], []
    for t in range(b*64, b*64+64):
        s, e, r = trace_rows(t); sp += s; ev += e; tr.append(r)
    batches.append((sp, ev, tr))
V = 'INSERT OR FAIL' if orfail else 'INSERT'
def ins(table, rows, ncol, tail=''):
    ph = '(' + ','.join('?'*ncol) + ')'
    out = []
    for i in range(0, len(rows), 400 if table == 'obs_spans' else 500):
        chunk = rows[i:i+(400 if table == 'obs_spans' else 500)]
        out.append((f'{V} INTO {table} VALUES ' + ','.join([ph]*len(chunk)) + tail, [x for r in chunk for x in r]))
    return out
merge = (" ON CONFLICT (tenant, trace_id) DO UPDATE SET span_count = obs_traces.span_count + excluded.span_count, "
         "start_ns = min(obs_traces.start_ns, excluded.start_ns), end_ns = max(obs_traces.end_ns, excluded.end_ns), "
         "duration_ns = max(obs_traces.end_ns, excluded.end_ns) - min(obs_traces.start_ns, excluded.start_ns)")
def write(batch):
    sp, ev, tr = batch
    if lean:
        evj = {}
        for e in ev: evj.setdefault((e[1], e[2]), []).append({'name': e[5], 'time': e[4], 'attributes': json.loads(e[6])})
        sp = [r + (json.dumps(evj[(r[1], r[2])]) if (r[1], r[2]) in evj else None,) for r in sp]
        for sql, args in ins('obs_spans', sp, 27, ' ON CONFLICT (tenant, trace_id, span_id) DO NOTHING RETURNING trace_id, span_id'):
            con.execute(sql, args).fetchall()
        for sql, args in ins('obs_traces', tr, 16, merge): con.execute(sql, args)
        return
    for sql, args in ins('obs_spans', sp, 26, ' ON CONFLICT (tenant, trace_id, span_id) DO NOTHING RETURNING trace_id, span_id'):
        con.execute(sql, args).fetchall()
    for sql, args in ins('obs_events', ev, 8): con.execute(sql, args)
    if orfail:
        for sql, args in ins('obs_traces', tr, 16, ' ON CONFLICT (tenant, trace_id) DO NOTHING RETURNING trace_id'):
            con.execute(sql, args).fetchall()
    else:
        for sql, args in ins('obs_traces', tr, 16, merge): con.execute(sql, args)
if frames_mode:
    head = batches[:-10]
    for g in range(0, len(head), group):
        con.execute('BEGIN IMMEDIATE')
        for b in head[g:g+group]: write(b)
        con.execute('COMMIT')
    con.execute('PRAGMA wal_checkpoint(TRUNCATE)'); con.execute('PRAGMA wal_autocheckpoint=0')
    walp = path + '-wal'
    def frames(): return max(0, (os.path.getsize(walp) - 32) // 4120) if os.path.exists(walp) else 0
    tot = {}
    for sp, ev, tr in batches[-10:]:
        for name, stmts in [('spans', ins('obs_spans', sp, 26, ' ON CONFLICT (tenant, trace_id, span_id) DO NOTHING RETURNING trace_id, span_id')),
                            ('events', ins('obs_events', ev, 8)), ('traces', ins('obs_traces', tr, 16, merge))]:
            f0 = frames(); con.execute('BEGIN IMMEDIATE')
            for sql, args in stmts: con.execute(sql, args).fetchall()
            con.execute('COMMIT'); tot[name] = tot.get(name, 0) + frames() - f0
    print('WAL frames per batch of 64 traces (mean of 10, each table committed alone):', {k: v / 10 for k, v in tot.items()})
    sys.exit(0)
stop = False
def bg():
    c2 = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    c2.execute('PRAGMA synchronous=FULL')
    while not stop:
        c2.execute('PRAGMA wal_checkpoint(PASSIVE)').fetchall(); time.sleep(0.25)
th = None
cv = threading.Condition(); state = {'commits': 0, 'done_for': 0, 'log': 0, 'full': True, 'waits': 0, 'wait_s': 0.0, 'ckpts': 0}
T = 16384
def bg2():
    c2 = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    c2.execute('PRAGMA synchronous=FULL')
    while True:
        with cv:
            while state['done_for'] == state['commits'] and not stop: cv.wait()
            if stop: return
            target = state['commits']
        busy, log, ck = c2.execute('PRAGMA wal_checkpoint(PASSIVE)').fetchone()
        with cv:
            state['done_for'] = target; state['log'] = log; state['full'] = (log == ck); state['ckpts'] += 1; cv.notify_all()
if variant == 'bg2':
    con.execute('PRAGMA wal_autocheckpoint=65536')
    th = threading.Thread(target=bg2); th.start()
if variant == 'bg':
    th = threading.Thread(target=bg); th.start()
t0 = time.time(); cpu0 = time.process_time()
for g in range(0, len(batches), group):
    if variant == 'bg2':
        with cv:
            if state['log'] > T:
                w0 = time.time(); state['waits'] += 1
                while state['done_for'] < state['commits']: cv.wait()
                state['wait_s'] += time.time() - w0
    con.execute('BEGIN IMMEDIATE')
    for i, b in enumerate(batches[g:g+group]):
        sp = not (bare_head and i == 0)
        if sp: con.execute('SAVEPOINT m')
        write(b)
        if sp: con.execute('RELEASE m')
    con.execute('COMMIT')
    if variant == 'bg2':
        with cv: state['commits'] += 1; cv.notify_all()
el = time.time() - t0; cpu = time.process_time() - cpu0
stop = True
if variant == 'bg2':
    with cv: cv.notify_all()
if th: th.join()
if variant == 'bg2': print(state, 'wal bytes', os.path.getsize(path + '-wal'))
print(f'{variant}: {len(batches)*512} spans in {el:.1f} s = {len(batches)*512/el:.0f} spans/s, cpu {cpu:.1f} s, db {os.path.getsize(path)/1e6:.0f} MB')
