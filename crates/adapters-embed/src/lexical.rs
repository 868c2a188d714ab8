//! [`TantivyLexicalIndex`]: the in-process full-text index
//! ([`memlayer_ports::LexicalIndex`]) on tantivy, one index per tenant.
//!
//! Why tantivy: FTS5's `bm25()` scores every document that holds any query
//! word (a three-word query over a 20,000-message thread scores thousands),
//! where tantivy's top-k collector skips blocks of postings that cannot
//! enter the top k (block-max WAND) and reads document lengths from a flat
//! array instead of a B-tree (docs/BENCHMARKS.md, "Lexical search on
//! tantivy").
//!
//! Invariants:
//! - one tantivy index per tenant (a directory named by the tenant's hex
//!   bytes), so BM25's statistics (document count, average length, document
//!   frequencies) are the tenant's own; a search of some of the tenant's
//!   threads uses those threads' statistics alone (`ScopeStatistics`);
//! - what the feeding store calls a position (libSQL's rowid) is the key:
//!   an entry replaces any entry at its position, a removal names one;
//! - the indexes live in memory: a commit on disk costs a dozen file and
//!   directory `fsync`s (195 ms p50 for a one-entry commit on this machine,
//!   2.6 ms in memory; docs/BENCHMARKS.md), and every lexical search waits
//!   for the catch-up round that commits what was appended before it;
//! - `close` writes a snapshot (every tenant's files, the format and the
//!   position) that the next `open` loads and at once marks as taken, so a
//!   process that ends without `close` (a crash) leaves no snapshot and the
//!   next start rebuilds from the store: a snapshot is never older than the
//!   deletes the store has already forgotten; a snapshot of another format
//!   (another analyzer) is dropped and rebuilt the same way;
//! - searches and commits run on tokio's blocking pool, never on an async
//!   worker; the indexing and merge threads are tantivy's own (one each per
//!   tenant with an open writer).

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use async_trait::async_trait;
use memlayer_domain::{MessageId, TenantId, ThreadId};
use memlayer_ports::{LexicalDelta, LexicalEntry, LexicalIndex, ScoredHit, SearchFilter, StoreError, ThreadSelection};
use tantivy::Directory as _;
use tantivy::collector::{Count, DocSetCollector, TopDocs};
use tantivy::directory::{MmapDirectory, RamDirectory};
use tantivy::fieldnorm::FieldNormReader;
use tantivy::indexer::IndexWriterOptions;
use tantivy::query::{
    Bm25StatisticsProvider, Bm25Weight, BooleanQuery, ConstScoreQuery, EnableScoring, Occur, Query, TermQuery,
};
use tantivy::schema::{FAST, Field, INDEXED, IndexRecordOption, STRING, Schema, TextFieldIndexing, TextOptions};
use tantivy::tokenizer::{
    AsciiFoldingFilter, Language, LowerCaser, RemoveLongFilter, SimpleTokenizer, Stemmer, TextAnalyzer,
};
use tantivy::{Index, IndexReader, IndexWriter, ReloadPolicy, Searcher, TantivyDocument, Term};
use uuid::Uuid;

/// The analyzer's name in every index.
const TOKENIZER: &str = "memlayer";
/// The file holding a snapshot's format and position, beside the tenants'
/// directories; present only while the snapshot is whole and not taken.
const SNAPSHOT_FILE: &str = "snapshot";
/// What a snapshot's indexes hold: their schema and analyzer. A snapshot
/// of another format (or of none: format 1, a bare position, unstemmed
/// words) is not loaded, and the store feeds the index again, so an index
/// never mixes words cut two ways. Raise it with every change to
/// [`schema`] or [`analyzer`].
const SNAPSHOT_FORMAT: u32 = 2;
/// Tantivy's lock files, never part of a snapshot.
const LOCK_PREFIX: &str = ".tantivy-";
/// Memory an open writer may buffer before it writes a segment (tantivy's
/// minimum: the catch-up commits every round anyway).
const WRITER_MEMORY: usize = 15_000_000;

/// The schema's fields.
#[derive(Debug, Clone, Copy)]
struct Fields {
    text: Field,
    thread: Field,
    pos: Field,
    id_hi: Field,
    id_lo: Field,
    th_hi: Field,
    th_lo: Field,
}

fn schema() -> (Schema, Fields) {
    let mut b = Schema::builder();
    // Frequencies without positions: BM25 needs no more, and no phrase
    // query is ever asked.
    let text = b.add_text_field(
        "text",
        TextOptions::default().set_indexing_options(
            TextFieldIndexing::default().set_tokenizer(TOKENIZER).set_index_option(IndexRecordOption::WithFreqs),
        ),
    );
    let thread = b.add_text_field("thread", STRING);
    let pos = b.add_u64_field("pos", INDEXED | FAST);
    let id_hi = b.add_u64_field("id_hi", FAST);
    let id_lo = b.add_u64_field("id_lo", FAST);
    let th_hi = b.add_u64_field("th_hi", FAST);
    let th_lo = b.add_u64_field("th_lo", FAST);
    (b.build(), Fields { text, thread, pos, id_hi, id_lo, th_hi, th_lo })
}

/// Words as libSQL's FTS5 tables cut them (`porter unicode61
/// remove_diacritics 2`): runs of letters and digits, lowercased, accents
/// folded, then stemmed (Snowball English, so "running" and "runs" are one
/// word; no stop word is dropped). Queries go through the same analyzer.
fn analyzer() -> TextAnalyzer {
    TextAnalyzer::builder(SimpleTokenizer::default())
        .filter(RemoveLongFilter::limit(256))
        .filter(LowerCaser)
        .filter(AsciiFoldingFilter)
        .filter(Stemmer::new(Language::English))
        .build()
}

/// One tenant's index (in memory), its reader and its writer.
struct TenantIndex {
    dir: RamDirectory,
    reader: IndexReader,
    writer: Mutex<IndexWriter>,
}

/// Per-tenant tantivy indexes in a directory (or in memory), fed and
/// searched through [`LexicalIndex`].
#[derive(Clone)]
pub struct TantivyLexicalIndex {
    inner: Arc<Inner>,
}

struct Inner {
    /// Where `close` writes the snapshot; `None`: none.
    root: Option<PathBuf>,
    schema: Schema,
    fields: Fields,
    tenants: Mutex<HashMap<TenantId, Arc<TenantIndex>>>,
    position: AtomicI64,
    /// One `apply` (or `close`) at a time; holds whether a snapshot was
    /// written since the last `apply`.
    applying: Mutex<bool>,
}

impl fmt::Debug for TantivyLexicalIndex {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TantivyLexicalIndex")
            .field("root", &self.inner.root)
            .field("position", &self.inner.position.load(Ordering::SeqCst))
            .finish_non_exhaustive()
    }
}

fn backend(context: &str, e: impl fmt::Display) -> StoreError {
    StoreError::backend(format!("full-text index: {context}: {e}"))
}

impl TantivyLexicalIndex {
    /// Opens the indexes with `root` as their snapshot directory: loads
    /// the snapshot `close` wrote there and resumes from its position, then
    /// marks it taken (removes its position file), so that only another
    /// `close` makes a snapshot again. Without one (a first start, a crash)
    /// the indexes start empty at position 0 and the store feeds everything
    /// again.
    ///
    /// # Errors
    /// `Backend` when the directory cannot be created or a snapshot that is
    /// there cannot be read.
    pub fn open(root: impl Into<PathBuf>) -> Result<Self, StoreError> {
        let root = root.into();
        std::fs::create_dir_all(&root).map_err(|e| backend("create directory", e))?;
        let marker = root.join(SNAPSHOT_FILE);
        let position = std::fs::read_to_string(&marker).ok().and_then(|s| snapshot_position(&s));
        let this = Self::new(Some(root.clone()), position.unwrap_or(0));
        if position.is_none() {
            // No snapshot to trust (none, a crash, or another format): what
            // is left of one would only be loaded by mistake later.
            remove_tenant_dirs(&root)?;
            if marker.exists() {
                std::fs::remove_file(&marker).map_err(|e| backend("drop old snapshot", e))?;
                sync_dir(&root)?;
            }
        } else {
            let mut tenants = lock(&this.inner.tenants);
            for entry in std::fs::read_dir(&root).map_err(|e| backend("read snapshot", e))? {
                let entry = entry.map_err(|e| backend("read snapshot", e))?;
                let name = entry.file_name().to_string_lossy().into_owned();
                let Some(tenant) = name.strip_prefix("t-").and_then(tenant_of_hex) else { continue };
                let index = this.inner.load(&entry.path())?;
                tenants.insert(tenant, index);
            }
            drop(tenants);
            std::fs::remove_file(&marker).map_err(|e| backend("take snapshot", e))?;
            sync_dir(&root)?;
        }
        Ok(this)
    }

    /// Indexes kept in memory only (tests, `:memory:` databases).
    #[must_use]
    pub fn in_memory() -> Self {
        Self::new(None, 0)
    }

    fn new(root: Option<PathBuf>, position: i64) -> Self {
        let (schema, fields) = schema();
        Self {
            inner: Arc::new(Inner {
                root,
                schema,
                fields,
                tenants: Mutex::new(HashMap::new()),
                position: AtomicI64::new(position),
                applying: Mutex::new(false),
            }),
        }
    }
}

impl Inner {
    /// The tenant's index; created when `create`, else `None` when it has
    /// none yet.
    fn tenant(&self, tenant: &TenantId, create: bool) -> Result<Option<Arc<TenantIndex>>, StoreError> {
        let mut tenants = lock(&self.tenants);
        if let Some(t) = tenants.get(tenant) {
            return Ok(Some(t.clone()));
        }
        if !create {
            return Ok(None);
        }
        let dir = RamDirectory::create();
        let index = Index::create(dir.clone(), self.schema.clone(), tantivy::IndexSettings::default())
            .map_err(|e| backend("create tenant index", e))?;
        let t = Self::serve(dir, index)?;
        tenants.insert(tenant.clone(), t.clone());
        Ok(Some(t))
    }

    /// A tenant's index from its snapshot directory, copied into memory.
    fn load(&self, from: &Path) -> Result<Arc<TenantIndex>, StoreError> {
        let dir = RamDirectory::create();
        for file in std::fs::read_dir(from).map_err(|e| backend("read snapshot", e))? {
            let file = file.map_err(|e| backend("read snapshot", e))?;
            let name = file.file_name().to_string_lossy().into_owned();
            if name.starts_with(LOCK_PREFIX) {
                continue;
            }
            let bytes = std::fs::read(file.path()).map_err(|e| backend("read snapshot", e))?;
            dir.atomic_write(Path::new(&name), &bytes).map_err(|e| backend("read snapshot", e))?;
        }
        let index = Index::open(dir.clone()).map_err(|e| backend("open snapshot", e))?;
        Self::serve(dir, index)
    }

    /// A writer and a reader for a tenant's index.
    fn serve(dir: RamDirectory, index: Index) -> Result<Arc<TenantIndex>, StoreError> {
        index.tokenizers().register(TOKENIZER, analyzer());
        let options = IndexWriterOptions::builder()
            .memory_budget_per_thread(WRITER_MEMORY)
            .num_worker_threads(1)
            .num_merge_threads(1)
            .build();
        let writer = index.writer_with_options(options).map_err(|e| backend("open tenant writer", e))?;
        let reader = index
            .reader_builder()
            .reload_policy(ReloadPolicy::Manual)
            .try_into()
            .map_err(|e| backend("open tenant reader", e))?;
        Ok(Arc::new(TenantIndex { dir, reader, writer: Mutex::new(writer) }))
    }

    /// Writes the snapshot: every tenant's files into a fresh directory
    /// renamed over the old one, then the position file; an `apply` after
    /// it removes the position file first.
    fn snapshot(&self) -> Result<(), StoreError> {
        let Some(root) = &self.root else { return Ok(()) };
        let mut snapshotted = lock(&self.applying);
        let tenants: Vec<(TenantId, Arc<TenantIndex>)> =
            lock(&self.tenants).iter().map(|(k, v)| (k.clone(), v.clone())).collect();
        for (tenant, t) in tenants {
            let hex: String = tenant.as_str().bytes().map(|b| format!("{b:02x}")).collect();
            let (fresh, dest) = (root.join(format!("n-{hex}")), root.join(format!("t-{hex}")));
            let _ = std::fs::remove_dir_all(&fresh);
            std::fs::create_dir_all(&fresh).map_err(|e| backend("write snapshot", e))?;
            let out = MmapDirectory::open(&fresh).map_err(|e| backend("write snapshot", e))?;
            t.dir.persist(&out).map_err(|e| backend("write snapshot", e))?;
            drop(out);
            let _ = std::fs::remove_dir_all(&dest);
            std::fs::rename(&fresh, &dest).map_err(|e| backend("write snapshot", e))?;
        }
        sync_dir(root)?;
        write_position(root, self.position.load(Ordering::SeqCst))?;
        *snapshotted = true;
        Ok(())
    }

    /// Drops every tenant's index, and their snapshot directories (a later
    /// snapshot writes only the tenants it holds), and goes back to
    /// position 0.
    fn clear(&self) -> Result<(), StoreError> {
        let mut snapshotted = lock(&self.applying);
        lock(&self.tenants).clear();
        self.position.store(0, Ordering::SeqCst);
        if let Some(root) = &self.root {
            let _ = std::fs::remove_file(root.join(SNAPSHOT_FILE));
            for entry in std::fs::read_dir(root).map_err(|e| backend("clear snapshot", e))? {
                let entry = entry.map_err(|e| backend("clear snapshot", e))?;
                let name = entry.file_name().to_string_lossy().into_owned();
                if name.starts_with("t-") || name.starts_with("n-") {
                    std::fs::remove_dir_all(entry.path()).map_err(|e| backend("clear snapshot", e))?;
                }
            }
            sync_dir(root)?;
        }
        *snapshotted = false;
        Ok(())
    }

    fn apply(
        &self,
        removals: Vec<(TenantId, i64)>,
        entries: Vec<LexicalEntry>,
        through: Option<i64>,
    ) -> Result<(), StoreError> {
        let mut snapshotted = lock(&self.applying);
        if *snapshotted {
            // The snapshot no longer says what the index holds.
            if let Some(root) = &self.root {
                let _ = std::fs::remove_file(root.join(SNAPSHOT_FILE));
                sync_dir(root)?;
            }
            *snapshotted = false;
        }
        let f = self.fields;
        let mut touched: HashMap<TenantId, Arc<TenantIndex>> = HashMap::new();
        for (tenant, position) in removals {
            // A tenant without an index has nothing to remove.
            let Some(t) = self.tenant(&tenant, false)? else { continue };
            lock(&t.writer).delete_term(pos_term(f, position));
            touched.insert(tenant, t);
        }
        for e in entries {
            let t = match touched.get(&e.tenant) {
                Some(t) => t.clone(),
                None => {
                    let t = self.tenant(&e.tenant, true)?.ok_or_else(|| backend("open tenant index", "missing"))?;
                    touched.insert(e.tenant.clone(), t.clone());
                    t
                }
            };
            let writer = lock(&t.writer);
            writer.delete_term(pos_term(f, e.position));
            let (id_hi, id_lo) = e.id.as_uuid().as_u64_pair();
            let (th_hi, th_lo) = e.thread.as_uuid().as_u64_pair();
            let mut doc = TantivyDocument::default();
            doc.add_text(f.text, &e.text);
            doc.add_text(f.thread, e.thread.as_uuid().to_string());
            doc.add_u64(f.pos, position_u64(e.position));
            doc.add_u64(f.id_hi, id_hi);
            doc.add_u64(f.id_lo, id_lo);
            doc.add_u64(f.th_hi, th_hi);
            doc.add_u64(f.th_lo, th_lo);
            writer.add_document(doc).map_err(|e| backend("add entry", e))?;
        }
        for t in touched.values() {
            lock(&t.writer).commit().map_err(|e| backend("commit", e))?;
            t.reader.reload().map_err(|e| backend("reload reader", e))?;
        }
        if let Some(through) = through {
            self.position.store(through, Ordering::SeqCst);
        }
        Ok(())
    }

    fn search(
        &self,
        filter: &SearchFilter,
        terms: &[String],
        k: usize,
        delta: &LexicalDelta,
    ) -> Result<Vec<ScoredHit>, StoreError> {
        if k == 0 || filter.admits_nothing() {
            return Ok(Vec::new());
        }
        let f = self.fields;
        let mut analyzer = analyzer();
        let mut words: Vec<String> = Vec::new();
        for term in terms {
            let mut stream = analyzer.token_stream(term);
            while let Some(token) = stream.next() {
                if !words.contains(&token.text) {
                    words.push(token.text.clone());
                }
            }
        }
        if words.is_empty() {
            return Ok(Vec::new());
        }
        let mut pending = Pending::of(&delta.pending, filter, f.text, &words);
        let Some(t) = self.tenant(&filter.tenant, false)? else {
            // Nothing of the tenant is indexed yet: only what is pending,
            // its lengths counted as a search of some threads counts them.
            let quantized = filter.threads.listed().is_some();
            return pending.ranked(&pending.statistics(&NoEntries, quantized), Vec::new(), k);
        };
        let searcher = t.reader.searcher();
        pending.drop_fed(&searcher, f, &delta.positions)?;
        let should: Vec<(Occur, Box<dyn Query>)> = words
            .iter()
            .map(|w| {
                let q: Box<dyn Query> =
                    Box::new(TermQuery::new(Term::from_field_text(f.text, w), IndexRecordOption::WithFreqs));
                (Occur::Should, q)
            })
            .collect();
        let mut clauses: Vec<(Occur, Box<dyn Query>)> = Vec::new();
        // BM25's statistics: the tenant's, unless the filter names threads
        // that hold less than the tenant's whole index; then the collection
        // searched is those threads, and so are the statistics.
        let mut scope_statistics = None;
        if let ThreadSelection::These(threads) = &filter.threads {
            let thread_terms: Vec<Term> =
                threads.iter().map(|t| Term::from_field_text(f.thread, &t.as_uuid().to_string())).collect();
            // A filter every entry passes (one thread holding the tenant's
            // whole index) is left out: the words alone can then be
            // searched with block-max WAND, by the tenant's statistics.
            let max_doc: u64 = searcher.segment_readers().iter().map(|s| u64::from(s.max_doc())).sum();
            let everything = match thread_terms.as_slice() {
                [only] => searcher.doc_freq(only).map_err(|e| backend("read statistics", e))? == max_doc,
                _ => false,
            };
            if !everything {
                let any: Vec<(Occur, Box<dyn Query>)> = thread_terms
                    .into_iter()
                    .map(|t| {
                        let q: Box<dyn Query> = Box::new(TermQuery::new(t, IndexRecordOption::Basic));
                        (Occur::Should, q)
                    })
                    .collect();
                let scope = BooleanQuery::new(any);
                let statistics = ScopeStatistics::of(&searcher, f, &scope, &words)?;
                if statistics.tokens == 0 {
                    // The scope's indexed entries hold no word at all:
                    // only what is pending can match.
                    return pending.ranked(&pending.statistics(&statistics, true), Vec::new(), k);
                }
                scope_statistics = Some(statistics);
                clauses.push((Occur::Must, Box::new(ConstScoreQuery::new(Box::new(scope), 0.0))));
            }
        }
        for thread in &delta.threads {
            let term = Term::from_field_text(f.thread, &thread.as_uuid().to_string());
            clauses.push((Occur::MustNot, Box::new(TermQuery::new(term, IndexRecordOption::Basic))));
        }
        for &position in &delta.positions {
            clauses.push((Occur::MustNot, Box::new(TermQuery::new(pos_term(f, position), IndexRecordOption::Basic))));
        }
        let query: Box<dyn Query> = if clauses.is_empty() {
            Box::new(BooleanQuery::new(should))
        } else {
            clauses.push((Occur::Must, Box::new(BooleanQuery::new(should))));
            Box::new(BooleanQuery::new(clauses))
        };
        let base: &dyn Bm25StatisticsProvider = match &scope_statistics {
            Some(statistics) => statistics,
            None => &searcher,
        };
        let quantized = scope_statistics.is_some();
        if pending.entries.is_empty() {
            let top = searcher
                .search_with_statistics_provider(&*query, &TopDocs::with_limit(k).order_by_score(), base)
                .map_err(|e| backend("search", e))?;
            return hits(&searcher, top);
        }
        // The index's hits and the pending entries are different messages:
        // an entry the index holds is dropped from the pending ones, and a
        // message's older entry (an edit) is at a position left out.
        let statistics = pending.statistics(base, quantized);
        let collector = TopDocs::with_limit(k).order_by_score();
        let top = searcher
            .search_with_statistics_provider(&*query, &collector, &statistics)
            .map_err(|e| backend("search", e))?;
        pending.ranked(&statistics, hits(&searcher, top)?, k)
    }
}

/// The hits of a top-k search, with the ids its entries carry.
fn hits(searcher: &Searcher, top: Vec<(f32, tantivy::DocAddress)>) -> Result<Vec<ScoredHit>, StoreError> {
    let mut hits = Vec::with_capacity(top.len());
    let mut columns: HashMap<u32, [tantivy::columnar::Column<u64>; 4]> = HashMap::new();
    for (score, address) in top {
        let [a, b, c, d] = match columns.entry(address.segment_ord) {
            std::collections::hash_map::Entry::Occupied(e) => e.into_mut(),
            std::collections::hash_map::Entry::Vacant(e) => {
                let ff = searcher.segment_reader(address.segment_ord).fast_fields();
                let col = |name: &str| ff.u64(name).map_err(|e| backend("read fast field", e));
                e.insert([col("id_hi")?, col("id_lo")?, col("th_hi")?, col("th_lo")?])
            }
        };
        let v = |col: &tantivy::columnar::Column<u64>| {
            col.first(address.doc_id).ok_or_else(|| backend("read fast field", "an entry without its ids"))
        };
        hits.push(ScoredHit {
            id: MessageId::from_uuid(Uuid::from_u64_pair(v(a)?, v(b)?)),
            thread: ThreadId::from_uuid(Uuid::from_u64_pair(v(c)?, v(d)?)),
            score,
        });
    }
    Ok(hits)
}

/// A search's pending entries (`LexicalDelta::pending` admitted by its
/// filter), cut into words by the index's analyzer: each entry's length in
/// words and how often it holds each query word.
struct Pending<'a> {
    text: Field,
    /// The query's words in the text field.
    terms: Vec<Term>,
    entries: Vec<(&'a LexicalEntry, u32, Vec<u32>)>,
}

impl<'a> Pending<'a> {
    fn of(pending: &'a [LexicalEntry], filter: &SearchFilter, text: Field, words: &[String]) -> Self {
        let mut analyzer = analyzer();
        let entries = pending
            .iter()
            .filter(|e| filter.admits(&e.tenant, e.thread))
            .map(|e| {
                let (mut length, mut freqs) = (0u32, vec![0u32; words.len()]);
                let mut stream = analyzer.token_stream(&e.text);
                while let Some(token) = stream.next() {
                    length = length.saturating_add(1);
                    if let Some(i) = words.iter().position(|w| *w == token.text) {
                        freqs[i] += 1;
                    }
                }
                (e, length, freqs)
            })
            .collect();
        Self { text, terms: words.iter().map(|w| Term::from_field_text(text, w)).collect(), entries }
    }

    /// Drops the entries `searcher` holds already (fed since the store was
    /// read), so that none is counted twice in the statistics; an entry at a
    /// position left out (`left_out`: an edit, a rowid handed out again)
    /// stays, as the index's entry there is the message's older one.
    fn drop_fed(&mut self, searcher: &Searcher, f: Fields, left_out: &[i64]) -> Result<(), StoreError> {
        let left_out: HashSet<i64> = left_out.iter().copied().collect();
        let asked: Vec<(Occur, Box<dyn Query>)> = self
            .entries
            .iter()
            .filter(|(e, _, _)| !left_out.contains(&e.position))
            .map(|(e, _, _)| {
                let q: Box<dyn Query> = Box::new(TermQuery::new(pos_term(f, e.position), IndexRecordOption::Basic));
                (Occur::Should, q)
            })
            .collect();
        if asked.is_empty() {
            return Ok(());
        }
        let read = |e: tantivy::TantivyError| backend("read fed entries", e);
        let found = searcher.search(&BooleanQuery::new(asked), &DocSetCollector).map_err(read)?;
        let mut fed = HashSet::with_capacity(found.len());
        for address in found {
            let column = searcher.segment_reader(address.segment_ord).fast_fields().u64("pos").map_err(read)?;
            fed.extend(column.first(address.doc_id));
        }
        self.entries.retain(|(e, _, _)| left_out.contains(&e.position) || !fed.contains(&position_u64(e.position)));
        Ok(())
    }

    /// `base` (the index's statistics) plus the pending entries, as if the
    /// index held them. `quantized`: lengths count as tantivy stores them
    /// (what [`ScopeStatistics`] sums), else exactly (what the index's
    /// own statistics sum).
    fn statistics<'b>(&self, base: &'b dyn Bm25StatisticsProvider, quantized: bool) -> WithPending<'b> {
        let mut added = WithPending { base, text: self.text, docs: 0, tokens: 0, doc_freqs: HashMap::new() };
        for (_, length, freqs) in &self.entries {
            added.docs += 1;
            added.tokens += u64::from(if quantized {
                FieldNormReader::id_to_fieldnorm(FieldNormReader::fieldnorm_to_id(*length))
            } else {
                *length
            });
            for (i, &n) in freqs.iter().enumerate() {
                if n > 0 {
                    *added.doc_freqs.entry(self.terms[i].clone()).or_insert(0) += 1;
                }
            }
        }
        added
    }

    /// The best `k` of `indexed` (the index's hits, scored by
    /// `statistics`: these entries counted in) and of these entries, which
    /// win over a hit of their message should one slip through.
    fn ranked(
        &self,
        statistics: &WithPending<'_>,
        indexed: Vec<ScoredHit>,
        k: usize,
    ) -> Result<Vec<ScoredHit>, StoreError> {
        let weights = self
            .terms
            .iter()
            .map(|term| Bm25Weight::for_terms(statistics, std::slice::from_ref(term)))
            .collect::<tantivy::Result<Vec<_>>>()
            .map_err(|e| backend("read statistics", e))?;
        let replaced: HashSet<MessageId> = self.entries.iter().map(|(e, _, _)| e.id).collect();
        let mut all: Vec<ScoredHit> = indexed.into_iter().filter(|h| !replaced.contains(&h.id)).collect();
        for (e, length, freqs) in &self.entries {
            if freqs.iter().all(|&n| n == 0) {
                continue;
            }
            let norm = FieldNormReader::fieldnorm_to_id(*length);
            let score = weights.iter().zip(freqs).filter(|(_, n)| **n > 0).map(|(w, &n)| w.score(norm, n)).sum();
            all.push(ScoredHit { id: e.id, thread: e.thread, score });
        }
        // Stable: equal scores keep the index's order, then the pending
        // entries' (by position).
        all.sort_by(|a, b| b.score.total_cmp(&a.score));
        all.truncate(k);
        Ok(all)
    }
}

/// Statistics of an index plus pending entries: their count, their summed
/// lengths, and for each query word how many of them hold it.
struct WithPending<'a> {
    base: &'a dyn Bm25StatisticsProvider,
    text: Field,
    docs: u64,
    tokens: u64,
    doc_freqs: HashMap<Term, u64>,
}

impl Bm25StatisticsProvider for WithPending<'_> {
    fn total_num_tokens(&self, field: Field) -> tantivy::Result<u64> {
        // Only the text field is scored (see `ScopeStatistics`).
        let added = if field == self.text { self.tokens } else { self.docs };
        Ok(self.base.total_num_tokens(field)? + added)
    }

    fn total_num_docs(&self) -> tantivy::Result<u64> {
        Ok(self.base.total_num_docs()? + self.docs)
    }

    fn doc_freq(&self, term: &Term) -> tantivy::Result<u64> {
        Ok(self.base.doc_freq(term)? + self.doc_freqs.get(term).copied().unwrap_or(0))
    }
}

/// The statistics of no entry: a tenant without an index yet.
struct NoEntries;

impl Bm25StatisticsProvider for NoEntries {
    fn total_num_tokens(&self, _: Field) -> tantivy::Result<u64> {
        Ok(0)
    }

    fn total_num_docs(&self) -> tantivy::Result<u64> {
        Ok(0)
    }

    fn doc_freq(&self, _: &Term) -> tantivy::Result<u64> {
        Ok(0)
    }
}

/// BM25's statistics of a search's scope (the threads it names) rather
/// than of the tenant's whole index: the number of live entries in the
/// scope, their total length, and for each query word the number of them
/// that hold it. A word common in the tenant's other threads but rare in
/// the ones searched then weighs as much as it tells apart there, and a
/// length is long or short against the scope's own entries. Exclusions
/// (stale entries, threads being deleted) are not part of the scope: they
/// leave entries out of the results, not out of the collection.
struct ScopeStatistics {
    text: Field,
    /// Live entries in the scope.
    docs: u64,
    /// Their lengths in words, summed: each entry's length as tantivy
    /// stores it for BM25 (exact up to 40 words, rounded down by less than
    /// 12% above; the same figure BM25 compares with the average), so the
    /// sum is a little below the exact one the tenant's statistics hold
    /// when entries are long.
    tokens: u64,
    /// The query's words (in the text field) and how many live entries of
    /// the scope hold each.
    doc_freqs: HashMap<Term, u64>,
}

impl ScopeStatistics {
    fn of(searcher: &Searcher, f: Fields, scope: &BooleanQuery, words: &[String]) -> Result<Self, StoreError> {
        let read = |e: tantivy::TantivyError| backend("read scope statistics", e);
        let weight = scope.weight(EnableScoring::disabled_from_searcher(searcher)).map_err(read)?;
        let (mut docs, mut tokens) = (0u64, 0u64);
        for reader in searcher.segment_readers() {
            let norms = reader.get_fieldnorms_reader(f.text).map_err(read)?;
            let alive = reader.alive_bitset();
            weight
                .for_each_no_score(reader, &mut |found: &[u32]| {
                    for &doc in found {
                        if alive.is_none_or(|a| a.is_alive(doc)) {
                            docs += 1;
                            tokens += u64::from(norms.fieldnorm(doc));
                        }
                    }
                })
                .map_err(read)?;
        }
        let mut doc_freqs = HashMap::with_capacity(words.len());
        for w in words {
            let term = Term::from_field_text(f.text, w);
            let both = BooleanQuery::new(vec![
                (Occur::Must, Box::new(TermQuery::new(term.clone(), IndexRecordOption::Basic)) as Box<dyn Query>),
                (Occur::Must, Box::new(scope.clone()) as Box<dyn Query>),
            ]);
            let n = searcher.search(&both, &Count).map_err(read)?;
            doc_freqs.insert(term, n as u64);
        }
        Ok(Self { text: f.text, docs, tokens, doc_freqs })
    }
}

impl Bm25StatisticsProvider for ScopeStatistics {
    fn total_num_tokens(&self, field: Field) -> tantivy::Result<u64> {
        // Only the text field is scored; the filter's fields (thread,
        // position) are weighed by tantivy but never scored.
        Ok(if field == self.text { self.tokens } else { self.docs })
    }

    fn total_num_docs(&self) -> tantivy::Result<u64> {
        Ok(self.docs)
    }

    fn doc_freq(&self, term: &Term) -> tantivy::Result<u64> {
        // Terms other than the query's words are the filter's, never
        // scored; 0 keeps BM25's arithmetic defined (no count above the
        // scope's).
        Ok(self.doc_freqs.get(term).copied().unwrap_or(0))
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

fn position_u64(position: i64) -> u64 {
    u64::try_from(position).unwrap_or(0)
}

fn pos_term(f: Fields, position: i64) -> Term {
    Term::from_field_u64(f.pos, position_u64(position))
}

/// The position a snapshot file records (`format <n> position <p>`), when
/// it is of [`SNAPSHOT_FORMAT`].
fn snapshot_position(file: &str) -> Option<i64> {
    let mut words = file.split_whitespace();
    match (words.next(), words.next(), words.next(), words.next(), words.next()) {
        (Some("format"), Some(format), Some("position"), Some(position), None)
            if format.parse::<u32>().ok() == Some(SNAPSHOT_FORMAT) =>
        {
            position.parse().ok()
        }
        _ => None,
    }
}

/// Removes every tenant's snapshot directory (and any half-written one).
fn remove_tenant_dirs(root: &Path) -> Result<(), StoreError> {
    for entry in std::fs::read_dir(root).map_err(|e| backend("read snapshot", e))? {
        let entry = entry.map_err(|e| backend("read snapshot", e))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if (name.starts_with("t-") || name.starts_with("n-")) && entry.path().is_dir() {
            std::fs::remove_dir_all(entry.path()).map_err(|e| backend("drop old snapshot", e))?;
        }
    }
    Ok(())
}

/// Records a snapshot's format and position durably: a temporary file,
/// synced, renamed into place.
fn write_position(root: &Path, position: i64) -> Result<(), StoreError> {
    use std::io::Write as _;
    let tmp = root.join(format!("{SNAPSHOT_FILE}.tmp"));
    let mut file = std::fs::File::create(&tmp).map_err(|e| backend("write snapshot", e))?;
    file.write_all(format!("format {SNAPSHOT_FORMAT} position {position}").as_bytes())
        .map_err(|e| backend("write snapshot", e))?;
    file.sync_all().map_err(|e| backend("write snapshot", e))?;
    std::fs::rename(&tmp, root.join(SNAPSHOT_FILE)).map_err(|e| backend("write snapshot", e))?;
    sync_dir(root)
}

/// Makes renames and removals in `dir` durable.
fn sync_dir(dir: &Path) -> Result<(), StoreError> {
    std::fs::File::open(dir).and_then(|d| d.sync_all()).map_err(|e| backend("sync directory", e))
}

/// The tenant a snapshot directory `t-<hex>` belongs to.
fn tenant_of_hex(hex: &str) -> Option<TenantId> {
    let bytes: Option<Vec<u8>> =
        (0..hex.len()).step_by(2).map(|i| hex.get(i..i + 2).and_then(|b| u8::from_str_radix(b, 16).ok())).collect();
    TenantId::parse(String::from_utf8(bytes?).ok()?).ok()
}

#[async_trait]
impl LexicalIndex for TantivyLexicalIndex {
    fn position(&self) -> i64 {
        self.inner.position.load(Ordering::SeqCst)
    }

    async fn apply(
        &self,
        removals: Vec<(TenantId, i64)>,
        entries: Vec<LexicalEntry>,
        through: Option<i64>,
    ) -> Result<(), StoreError> {
        if removals.is_empty() && entries.is_empty() && through.is_none_or(|t| t == self.position()) {
            return Ok(());
        }
        let inner = self.inner.clone();
        tokio::task::spawn_blocking(move || inner.apply(removals, entries, through))
            .await
            .map_err(StoreError::backend)?
    }

    async fn search(
        &self,
        filter: &SearchFilter,
        terms: Vec<String>,
        k: usize,
        delta: LexicalDelta,
    ) -> Result<Vec<ScoredHit>, StoreError> {
        let inner = self.inner.clone();
        let filter = filter.clone();
        tokio::task::spawn_blocking(move || inner.search(&filter, &terms, k, &delta))
            .await
            .map_err(StoreError::backend)?
    }

    async fn clear(&self) -> Result<(), StoreError> {
        let inner = self.inner.clone();
        tokio::task::spawn_blocking(move || inner.clear()).await.map_err(StoreError::backend)?
    }

    async fn close(&self) -> Result<(), StoreError> {
        let inner = self.inner.clone();
        tokio::task::spawn_blocking(move || inner.snapshot()).await.map_err(StoreError::backend)?
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "test code: a failed unwrap is a failed test")]

    use super::*;

    fn entry(position: i64, tenant: &str, thread: ThreadId, text: &str) -> LexicalEntry {
        LexicalEntry {
            position,
            id: MessageId::new(),
            tenant: TenantId::parse(tenant).unwrap(),
            thread,
            text: text.to_owned(),
        }
    }

    fn words(q: &str) -> Vec<String> {
        memlayer_domain::query_terms(q)
    }

    #[tokio::test]
    async fn a_word_finds_its_other_forms() {
        let index = TantivyLexicalIndex::in_memory();
        let a = ThreadId::new();
        let runs = entry(1, "acme", a, "She runs to the station every morning");
        let walked = entry(2, "acme", a, "We walked the dogs");
        index.apply(Vec::new(), vec![runs.clone(), walked.clone()], Some(2)).await.unwrap();
        let all = SearchFilter::all_threads(TenantId::parse("acme").unwrap());
        for (query, found) in
            [("running", runs.id), ("RUN", runs.id), ("stations", runs.id), ("walking dog", walked.id)]
        {
            let hits = index.search(&all, words(query), 10, LexicalDelta::default()).await.unwrap();
            assert_eq!(hits.iter().map(|h| h.id).collect::<Vec<_>>(), vec![found], "{query}");
        }
    }

    #[tokio::test]
    async fn a_search_of_some_threads_weighs_words_by_those_threads() {
        let index = TantivyLexicalIndex::in_memory();
        let (a, b) = (ThreadId::new(), ThreadId::new());
        let acme = TenantId::parse("acme").unwrap();
        // "kettle" is everywhere in thread a, once in thread b; "toaster"
        // only in thread b, where it is the common word. Every entry is
        // three words long, so only the words' weights rank them.
        let mut entries: Vec<LexicalEntry> =
            (1..=20).map(|i| entry(i, "acme", a, &format!("kettle number {i}"))).collect();
        let kettle = entry(21, "acme", b, "the kettle broke");
        entries.push(kettle.clone());
        let toasters: Vec<LexicalEntry> = (22..=26).map(|i| entry(i, "acme", b, "the toaster broke")).collect();
        entries.extend(toasters.iter().cloned());
        index.apply(Vec::new(), entries, Some(26)).await.unwrap();
        let query = || words("kettle toaster");

        // Over the tenant, "kettle" is the common word: b's toasters lead.
        let all = SearchFilter::all_threads(acme.clone());
        let tenant_wide = index.search(&all, query(), 30, LexicalDelta::default()).await.unwrap();
        assert_eq!(tenant_wide.len(), 26, "every entry holds a word");
        let first_five: Vec<MessageId> = tenant_wide[..5].iter().map(|h| h.id).collect();
        assert!(toasters.iter().all(|t| first_five.contains(&t.id)), "{tenant_wide:?}");

        // Within b, "kettle" is the rare word: its one entry leads, by
        // BM25 over b's six entries alone.
        let only_b = SearchFilter::these_threads(acme.clone(), vec![b]);
        let hits = index.search(&only_b, query(), 10, LexicalDelta::default()).await.unwrap();
        assert_eq!(hits.len(), 6);
        assert_eq!(hits[0].id, kettle.id, "{hits:?}");
        let idf = |n: f32, df: f32| (1.0 + (n - df + 0.5) / (df + 0.5)).ln();
        // One word in an entry of the average length: BM25 is its idf.
        assert!((hits[0].score - idf(6.0, 1.0)).abs() < 1e-4, "{}", hits[0].score);
        assert!((hits[1].score - idf(6.0, 5.0)).abs() < 1e-4, "{}", hits[1].score);

        // Naming every thread is the whole tenant again: the same scores.
        let both = SearchFilter::these_threads(acme.clone(), vec![a, b]);
        let hits = index.search(&both, query(), 30, LexicalDelta::default()).await.unwrap();
        assert_eq!(hits.len(), tenant_wide.len());
        for (h, t) in hits.iter().zip(&tenant_wide) {
            assert!((h.score - t.score).abs() < 1e-4, "{h:?} against {t:?}");
        }

        // Entries removed from b leave its statistics: with one toaster
        // left, "toaster" is as rare there as "kettle".
        index.apply((22..=25).map(|p| (acme.clone(), p)).collect(), Vec::new(), None).await.unwrap();
        let hits = index.search(&only_b, query(), 10, LexicalDelta::default()).await.unwrap();
        assert_eq!(hits.len(), 2);
        assert!((hits[0].score - idf(2.0, 1.0)).abs() < 1e-4, "{hits:?}");
        assert!((hits[0].score - hits[1].score).abs() < 1e-6, "{hits:?}");
    }

    /// Entries pending (not yet applied) rank exactly as if the index held
    /// them: the same hits, the same scores, over the tenant, over some of
    /// its threads (lengths quantized as tantivy stores them: some entries
    /// are longer than 40 words), and for a tenant with no index yet.
    #[tokio::test]
    async fn pending_entries_rank_as_if_indexed() {
        let acme = TenantId::parse("acme").unwrap();
        let (a, b) = (ThreadId::new(), ThreadId::new());
        let vocabulary = ["kettle", "toaster", "garden", "station", "morning", "river", "lamp"];
        let entries: Vec<LexicalEntry> = (1..=40)
            .map(|i: usize| {
                let mut text: Vec<&str> = (0..(i % 6 + 2)).map(|j| vocabulary[(i * 3 + j * 5) % 7]).collect();
                if i.is_multiple_of(9) {
                    text.extend(std::iter::repeat_n("filler", 45 + i));
                }
                let i = i64::try_from(i).unwrap();
                entry(i, "acme", if i % 3 == 0 { b } else { a }, &text.join(" "))
            })
            .collect();
        let whole = TantivyLexicalIndex::in_memory();
        whole.apply(Vec::new(), entries.clone(), Some(40)).await.unwrap();
        let part = TantivyLexicalIndex::in_memory();
        part.apply(Vec::new(), entries[..30].to_vec(), Some(30)).await.unwrap();
        let empty = TantivyLexicalIndex::in_memory();
        // Another tenant's entry and a thread outside the scope are pending
        // too; the filter leaves them out.
        let mut tail = entries[30..].to_vec();
        tail.push(entry(41, "other", a, "kettle kettle"));
        let tail = LexicalDelta { pending: tail, ..LexicalDelta::default() };
        let everything = LexicalDelta { pending: entries.clone(), ..LexicalDelta::default() };
        let query = || words("kettle toaster garden");
        for filter in [SearchFilter::all_threads(acme.clone()), SearchFilter::these_threads(acme.clone(), vec![b])] {
            let want = whole.search(&filter, query(), 50, LexicalDelta::default()).await.unwrap();
            assert!(want.len() > 5, "{want:?}");
            for (got, how) in [
                (part.search(&filter, query(), 50, tail.clone()).await.unwrap(), "a tail pending"),
                (empty.search(&filter, query(), 50, everything.clone()).await.unwrap(), "no index"),
            ] {
                assert_eq!(got.len(), want.len(), "{how}: {got:?}");
                for (g, w) in got.iter().zip(&want) {
                    assert!((g.score - w.score).abs() < 1e-5, "{how}: {g:?} against {w:?}");
                }
                let score_of = |hits: &[ScoredHit], id| hits.iter().find(|h| h.id == id).map(|h| h.score);
                for w in &want {
                    let g = score_of(&got, w.id).unwrap_or(f32::NAN);
                    assert!((g - w.score).abs() < 1e-5, "{how}: {:?} scored {g}, want {}", w.id, w.score);
                }
            }
            // `k` cuts the one ranking.
            let top = part.search(&filter, query(), 3, tail.clone()).await.unwrap();
            assert_eq!(
                top.iter().map(|h| h.score).collect::<Vec<_>>(),
                want[..3].iter().map(|h| h.score).collect::<Vec<_>>()
            );
        }
    }

    /// A pending entry replaces the index's entry of its message (an edit:
    /// its old position left out), whatever the index still holds.
    #[tokio::test]
    async fn a_pending_entry_replaces_the_indexed_one() {
        let acme = TenantId::parse("acme").unwrap();
        let a = ThreadId::new();
        let index = TantivyLexicalIndex::in_memory();
        let old = entry(1, "acme", a, "the old kettle");
        let other = entry(2, "acme", a, "a kettle and a walnut");
        index.apply(Vec::new(), vec![old.clone(), other.clone()], Some(2)).await.unwrap();
        let all = SearchFilter::all_threads(acme);
        let edited = LexicalEntry { text: "a fresh walnut".into(), ..old.clone() };
        let delta = LexicalDelta { positions: vec![1], pending: vec![edited], ..LexicalDelta::default() };
        let ids = |hits: Vec<ScoredHit>| hits.into_iter().map(|h| h.id).collect::<Vec<_>>();
        assert_eq!(ids(index.search(&all, words("kettle"), 10, delta.clone()).await.unwrap()), vec![other.id]);
        let walnut = ids(index.search(&all, words("walnut"), 10, delta.clone()).await.unwrap());
        assert_eq!(walnut.len(), 2, "{walnut:?}");
        assert!(walnut.contains(&old.id) && walnut.contains(&other.id));
        // An entry pending and already fed (the feed moved on while the
        // store was read) counts once: the scores are those without it.
        let plain = index.search(&all, words("kettle walnut"), 10, LexicalDelta::default()).await.unwrap();
        let fed = LexicalDelta { pending: vec![other.clone()], ..LexicalDelta::default() };
        let twice = index.search(&all, words("kettle walnut"), 10, fed).await.unwrap();
        assert_eq!(twice, plain);
    }

    #[tokio::test]
    async fn a_snapshot_of_another_format_is_not_loaded() {
        let dir = tempfile::tempdir().unwrap();
        let index = TantivyLexicalIndex::open(dir.path()).unwrap();
        let a = ThreadId::new();
        index.apply(Vec::new(), vec![entry(1, "acme", a, "runs")], Some(1)).await.unwrap();
        index.close().await.unwrap();
        drop(index);
        let tenant_dirs = || {
            std::fs::read_dir(dir.path())
                .unwrap()
                .filter(|e| e.as_ref().unwrap().file_name().to_string_lossy().starts_with("t-"))
                .count()
        };
        assert_eq!(tenant_dirs(), 1);
        // What the first format wrote: the position alone, its words unstemmed.
        std::fs::write(dir.path().join(SNAPSHOT_FILE), "1").unwrap();
        let index = TantivyLexicalIndex::open(dir.path()).unwrap();
        assert_eq!(index.position(), 0, "the store feeds everything again");
        let all = SearchFilter::all_threads(TenantId::parse("acme").unwrap());
        assert!(index.search(&all, words("runs"), 10, LexicalDelta::default()).await.unwrap().is_empty());
        assert_eq!(tenant_dirs(), 0, "the old indexes are gone");
        assert!(!dir.path().join(SNAPSHOT_FILE).exists());
    }

    #[tokio::test]
    async fn entries_replace_by_position_and_removals_and_exclusions_hold() {
        let dir = tempfile::tempdir().unwrap();
        let index = TantivyLexicalIndex::open(dir.path()).unwrap();
        let (a, b) = (ThreadId::new(), ThreadId::new());
        let acme = TenantId::parse("acme").unwrap();
        let e1 = entry(1, "acme", a, "the broken kettle");
        let e2 = entry(2, "acme", b, "a Café near the kettle shop");
        index.apply(Vec::new(), vec![e1.clone(), e2.clone()], Some(2)).await.unwrap();
        let all = SearchFilter::all_threads(acme.clone());
        let hits = index.search(&all, words("kettle"), 10, LexicalDelta::default()).await.unwrap();
        assert_eq!(hits.len(), 2);
        assert!(hits.windows(2).all(|p| p[0].score >= p[1].score));
        // Accents folded, case ignored, as FTS5's unicode61 does.
        let hits = index.search(&all, words("cafe"), 10, LexicalDelta::default()).await.unwrap();
        assert_eq!(hits.iter().map(|h| (h.id, h.thread)).collect::<Vec<_>>(), vec![(e2.id, b)]);
        let only_a = SearchFilter::these_threads(acme.clone(), vec![a]);
        let hits = index.search(&only_a, words("kettle"), 10, LexicalDelta::default()).await.unwrap();
        assert_eq!(hits.iter().map(|h| h.id).collect::<Vec<_>>(), vec![e1.id]);
        let exclude = LexicalDelta { positions: vec![1], ..LexicalDelta::default() };
        let hits = index.search(&all, words("kettle"), 10, exclude).await.unwrap();
        assert_eq!(hits.iter().map(|h| h.id).collect::<Vec<_>>(), vec![e2.id]);
        let exclude = LexicalDelta { threads: vec![b], ..LexicalDelta::default() };
        let hits = index.search(&all, words("kettle"), 10, exclude).await.unwrap();
        assert_eq!(hits.iter().map(|h| h.id).collect::<Vec<_>>(), vec![e1.id]);
        // A new entry at a position replaces the old one.
        let e3 = entry(1, "acme", a, "sunny weather");
        index.apply(Vec::new(), vec![e3.clone()], None).await.unwrap();
        let hits = index.search(&all, words("kettle"), 10, LexicalDelta::default()).await.unwrap();
        assert_eq!(hits.iter().map(|h| h.id).collect::<Vec<_>>(), vec![e2.id]);
        index.apply(vec![(acme.clone(), 2)], Vec::new(), None).await.unwrap();
        assert!(index.search(&all, words("kettle"), 10, LexicalDelta::default()).await.unwrap().is_empty());
        // Another tenant sees nothing of acme's.
        let other = SearchFilter::all_threads(TenantId::parse("other").unwrap());
        assert!(index.search(&other, words("weather"), 10, LexicalDelta::default()).await.unwrap().is_empty());
        // The position and the entries survive a close and reopen, once.
        assert_eq!(index.position(), 2);
        index.close().await.unwrap();
        drop(index);
        let index = TantivyLexicalIndex::open(dir.path()).unwrap();
        assert_eq!(index.position(), 2);
        let hits = index.search(&all, words("weather"), 10, LexicalDelta::default()).await.unwrap();
        assert_eq!(hits.iter().map(|h| h.id).collect::<Vec<_>>(), vec![e3.id]);
        // The snapshot was taken: without another close (a crash), the next
        // start rebuilds from nothing rather than trust it.
        index.apply(Vec::new(), vec![entry(3, "acme", a, "later")], Some(3)).await.unwrap();
        drop(index);
        let index = TantivyLexicalIndex::open(dir.path()).unwrap();
        assert_eq!(index.position(), 0);
        assert!(index.search(&all, words("weather"), 10, LexicalDelta::default()).await.unwrap().is_empty());
        // A close after an apply snapshots again, and an apply after a close
        // takes that snapshot back.
        index.apply(Vec::new(), vec![entry(1, "acme", a, "again")], Some(1)).await.unwrap();
        index.close().await.unwrap();
        index.apply(Vec::new(), vec![entry(2, "acme", a, "after close")], Some(2)).await.unwrap();
        drop(index);
        assert_eq!(TantivyLexicalIndex::open(dir.path()).unwrap().position(), 0);
    }

    #[tokio::test]
    async fn clear_forgets_every_tenant_in_memory_and_on_disk() {
        let dir = tempfile::tempdir().unwrap();
        let index = TantivyLexicalIndex::open(dir.path()).unwrap();
        let (a, b) = (ThreadId::new(), ThreadId::new());
        let entries = vec![entry(1, "acme", a, "quince jam"), entry(2, "other", b, "quince tart")];
        index.apply(Vec::new(), entries, Some(2)).await.unwrap();
        index.close().await.unwrap();
        index.clear().await.unwrap();
        assert_eq!(index.position(), 0);
        for tenant in ["acme", "other"] {
            let all = SearchFilter::all_threads(TenantId::parse(tenant).unwrap());
            let hits = index.search(&all, words("quince"), 10, LexicalDelta::default()).await.unwrap();
            assert!(hits.is_empty(), "{tenant}: {hits:?}");
        }
        // Fed again: only what it is given now; a snapshot holds only that.
        index.apply(Vec::new(), vec![entry(1, "acme", a, "quince again")], Some(1)).await.unwrap();
        index.close().await.unwrap();
        drop(index);
        let index = TantivyLexicalIndex::open(dir.path()).unwrap();
        assert_eq!(index.position(), 1);
        let other = SearchFilter::all_threads(TenantId::parse("other").unwrap());
        assert!(index.search(&other, words("quince"), 10, LexicalDelta::default()).await.unwrap().is_empty());
    }
}
