//! [`OnnxEmbedder`]: the [`Embedder`] port on a local ONNX export of
//! `sentence-transformers/all-MiniLM-L6-v2`, run by ONNX Runtime (`ort`,
//! loaded dynamically from the provisioned library) with the model's own
//! WordPiece tokenizer (`tokenizers`).
//!
//! Pipeline, identical to `scripts/embed_reference.py`: tokenize with
//! truncation to 256 tokens and no padding; sort the texts by token count and
//! cut them into batches capped by rows (`max_batch_size`) and by padded
//! tokens (`max_batch_tokens`, rows × longest row); right-pad each batch with
//! `[PAD]`, mask 1 on real tokens, `token_type_ids` zeros; read the graph's
//! `sentence_embedding` output (mean pooling over the mask and L2
//! normalisation are in the graph); put the vectors back in input order.
//!
//! Invariants:
//! - construction never fails: a missing or corrupt runtime, model or
//!   tokenizer is kept as a message, every `embed` then returns
//!   `StoreError::Unavailable` with it, and [`OnnxEmbedder::status`] shows it;
//! - two lanes, each with sessions of its own. [`Embedder::embed`] (batch
//!   work: the embedding worker's backlog, `/api/embed`) runs at most
//!   `sessions` batches at a time on dedicated low-priority threads
//!   ([`crate::background`]), so a request's work takes the CPU first and
//!   shutdown never waits for a batch. [`Embedder::embed_interactive`]
//!   (search queries) never queues behind a batch: it joins a queue served
//!   by `interactive_sessions` threads of its own, each with its own
//!   session, and concurrent calls are gathered into one batch (a thread
//!   that comes free runs every call waiting at that moment). Those threads
//!   start a batch without any caller's task being polled, so a query never
//!   waits for another request's work (a search busy in a database read)
//!   to hand the lane on;
//! - every vector returned has 384 finite dimensions and unit norm.

mod batch;
mod load;

use std::fmt;
use std::panic::AssertUnwindSafe;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex, PoisonError, Weak};
use std::time::Instant;

use async_trait::async_trait;
use memlayer_domain::Embedding;
use memlayer_ports::{Embedder, EmbedderInfo, StoreError};
use ort::session::{HasSelectedOutputs, RunOptions, Session};
use ort::value::TensorRef;
use tokenizers::Tokenizer;
use tokio::sync::{Semaphore, oneshot};
use tokio::task::JoinSet;

use self::batch::Padded;
use self::load::{INPUTS, Loaded, OUTPUT, Slot};
use crate::background::{BackgroundPool, panic_message};

/// The model this embedder runs, recorded with every vector.
pub const MINILM_MODEL: &str = "sentence-transformers/all-MiniLM-L6-v2";
/// Dimensions of every vector.
const DIM: usize = 384;
/// Texts are truncated to this many tokens, `[CLS]` and `[SEP]` included
/// (the model's `max_seq_length`).
const MAX_TOKENS: usize = 256;
/// Largest tolerated deviation of a vector's squared norm from 1.
const NORM_TOLERANCE: f32 = 1e-3;
/// Nice value of the batch lane's threads: below the request path, above
/// index builds (`index::REBUILD_NICE`), since fresh messages should become
/// searchable before a graph is reorganised.
const BATCH_NICE: i32 = 10;

/// Where `scripts/provision` puts the runtime and models:
/// `$MEMLAYER_CACHE_DIR` when set, else `$HOME/.cache/memlayer`.
#[must_use]
pub fn default_cache_dir() -> PathBuf {
    match std::env::var_os("MEMLAYER_CACHE_DIR") {
        Some(dir) if !dir.is_empty() => PathBuf::from(dir),
        _ => std::env::var_os("HOME")
            .filter(|home| !home.is_empty())
            .map_or_else(|| PathBuf::from("."), PathBuf::from)
            .join(".cache")
            .join("memlayer"),
    }
}

/// Where the model and runtime are, and how much CPU to use.
#[derive(Debug, Clone)]
pub struct OnnxConfig {
    /// Directory holding `model.onnx`, `tokenizer.json` and `manifest.json`.
    pub model_dir: PathBuf,
    /// The ONNX Runtime shared library (`libonnxruntime.so`). One per
    /// process: a second embedder naming another file is unavailable.
    pub runtime_library: PathBuf,
    /// ONNX Runtime sessions of the batch lane ([`Embedder::embed`]), i.e.
    /// batches run in parallel. Default 1.
    pub sessions: usize,
    /// ONNX Runtime sessions of the interactive lane
    /// ([`Embedder::embed_interactive`]). Default 1.
    pub interactive_sessions: usize,
    /// Intra-op threads of each session. Default 1.
    pub intra_threads: usize,
    /// Most padded tokens (rows × longest row) in one batch. Default 768:
    /// batches that small keep a layer's activations in cache, and on
    /// mixed-length text ran 14–21% faster than 8192 (docs/BENCHMARKS.md,
    /// "Embedding throughput").
    pub max_batch_tokens: usize,
    /// Most texts in one batch. Default 64.
    pub max_batch_size: usize,
}

impl OnnxConfig {
    /// The provisioned layout under `dir`: `models/all-MiniLM-L6-v2/` and
    /// `onnxruntime/libonnxruntime.so`, with the default settings.
    #[must_use]
    pub fn from_cache_dir(dir: &Path) -> Self {
        let library = format!("{}onnxruntime{}", std::env::consts::DLL_PREFIX, std::env::consts::DLL_SUFFIX);
        Self {
            model_dir: dir.join("models").join("all-MiniLM-L6-v2"),
            runtime_library: dir.join("onnxruntime").join(library),
            sessions: 1,
            interactive_sessions: 1,
            intra_threads: 1,
            max_batch_tokens: 768,
            max_batch_size: 64,
        }
    }
}

impl Default for OnnxConfig {
    /// [`OnnxConfig::from_cache_dir`] of [`default_cache_dir`].
    fn default() -> Self {
        Self::from_cache_dir(&default_cache_dir())
    }
}

/// The ONNX [`Embedder`]. Cheap to clone: clones share the sessions.
#[derive(Debug, Clone)]
pub struct OnnxEmbedder {
    inner: Arc<Inner>,
}

struct Inner {
    config: OnnxConfig,
    model: Result<Arc<Model>, String>,
}

impl fmt::Debug for Inner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let status = match &self.model {
            Ok(_) => "ready",
            Err(e) => e.as_str(),
        };
        f.debug_struct("OnnxEmbedder").field("config", &self.config).field("status", &status).finish()
    }
}

impl OnnxEmbedder {
    /// Loads the runtime, tokenizer and model (about a second, most of it
    /// reading and hashing the 90 MB model: call it at start-up, or on the
    /// blocking pool, not on an async worker in the middle of serving).
    ///
    /// Never fails: when anything is missing or corrupt the error is kept,
    /// logged, shown by [`Self::status`] and returned as
    /// `StoreError::Unavailable` by every [`Embedder::embed`].
    #[must_use]
    pub fn new(config: OnnxConfig) -> Self {
        let started = Instant::now();
        let model = match std::panic::catch_unwind(AssertUnwindSafe(|| load::load(&config))) {
            Ok(loaded) => loaded.and_then(|loaded| Model::start(loaded, &config)),
            Err(panic) => Err(format!("loading the model panicked: {}; run scripts/provision", panic_message(&panic))),
        };
        match &model {
            Ok(_) => tracing::info!(
                model = MINILM_MODEL,
                dir = %config.model_dir.display(),
                sessions = config.sessions.max(1),
                interactive_sessions = config.interactive_sessions.max(1),
                intra_threads = config.intra_threads.max(1),
                elapsed_ms = started.elapsed().as_millis(),
                "onnx embedder ready"
            ),
            Err(error) => tracing::warn!(%error, "onnx embedder unavailable"),
        }
        Self { inner: Arc::new(Inner { config, model }) }
    }

    /// What this embedder produces, or why it cannot (for `memlayer doctor`).
    ///
    /// # Errors
    /// The load failure, naming what is missing or corrupt and how to fix it.
    pub fn status(&self) -> Result<EmbedderInfo, String> {
        self.inner.model.as_ref().map(|_| self.info()).map_err(Clone::clone)
    }

    /// The configuration it was built with.
    #[must_use]
    pub fn config(&self) -> &OnnxConfig {
        &self.inner.config
    }

    fn model(&self) -> Result<Arc<Model>, StoreError> {
        self.inner.model.as_ref().map(Arc::clone).map_err(|e| StoreError::Unavailable(format!("onnx embedder: {e}")))
    }
}

#[async_trait]
impl Embedder for OnnxEmbedder {
    fn info(&self) -> EmbedderInfo {
        EmbedderInfo { model: MINILM_MODEL.to_owned(), dim: DIM, max_tokens: MAX_TOKENS }
    }

    async fn embed(&self, texts: Vec<String>) -> Result<Vec<Embedding>, StoreError> {
        if texts.is_empty() {
            return Ok(Vec::new());
        }
        let model = self.model()?;
        let count = texts.len();
        let mut ids = model.in_batch_lane(move |m| m.tokenize(&texts)).await??;
        let lengths: Vec<usize> = ids.iter().map(Vec::len).collect();

        // At most one batch per session in flight: a call queues behind the
        // batches already running, not behind every batch of a large backfill.
        let mut plan = batch::plan(&lengths, model.max_batch_tokens, model.max_batch_size).into_iter();
        let mut running = JoinSet::new();
        let mut vectors: Vec<Option<Vec<f32>>> = vec![None; count];
        loop {
            while running.len() < model.batch.sessions {
                let Some(indices) = plan.next() else { break };
                let rows: Vec<Vec<u32>> = indices.iter().map(|&i| std::mem::take(&mut ids[i])).collect();
                let model = Arc::clone(&model);
                running.spawn(async move {
                    let vectors =
                        model.in_batch_lane(move |m| m.infer(&mut *Borrowed::take(&m.batch.slots)?, &rows)).await??;
                    Ok::<_, StoreError>((indices, vectors))
                });
            }
            let Some(joined) = running.join_next().await else { break };
            let (indices, batch) = joined.map_err(StoreError::backend)??;
            for (i, vector) in indices.into_iter().zip(batch) {
                vectors[i] = Some(vector);
            }
        }
        vectors.into_iter().map(|v| embedding(v.ok_or_else(|| StoreError::backend("a text got no vector"))?)).collect()
    }

    async fn embed_interactive(&self, texts: Vec<String>) -> Result<Vec<Embedding>, StoreError> {
        if texts.is_empty() {
            return Ok(Vec::new());
        }
        let model = self.model()?;
        let count = texts.len();
        let vectors = model.interactive(texts).await?;
        if vectors.len() != count {
            return Err(StoreError::backend(format!("{} vectors for {count} texts", vectors.len())));
        }
        vectors.into_iter().map(embedding).collect()
    }
}

fn embedding(vector: Vec<f32>) -> Result<Embedding, StoreError> {
    Embedding::new(MINILM_MODEL, vector, DIM).map_err(StoreError::backend)
}

/// The batch lane's sessions, and the semaphore that admits one batch per
/// session.
struct Lane {
    slots: Mutex<Vec<Slot>>,
    sessions: usize,
    permits: Arc<Semaphore>,
}

impl Lane {
    fn new(slots: Vec<Slot>) -> Self {
        let sessions = slots.len();
        Self { slots: Mutex::new(slots), sessions, permits: Arc::new(Semaphore::new(sessions)) }
    }

    async fn permit(&self) -> Result<tokio::sync::OwnedSemaphorePermit, StoreError> {
        Arc::clone(&self.permits)
            .acquire_owned()
            .await
            .map_err(|_| StoreError::Unavailable("onnx embedder is shutting down".to_owned()))
    }
}

/// An interactive call waiting for a session: its texts and where its
/// vectors go.
struct Waiting {
    texts: Vec<String>,
    reply: oneshot::Sender<Vectors>,
}

/// What an interactive call gets back: one vector per text, in order.
type Vectors = Result<Vec<Vec<f32>>, StoreError>;

/// The interactive lane's queue: the calls waiting, and the signal its
/// threads sleep on.
#[derive(Default)]
struct Queries {
    state: Mutex<Queue>,
    ready: Condvar,
}

#[derive(Default)]
struct Queue {
    waiting: Vec<Waiting>,
    /// Set when the model is dropped: the threads exit.
    closed: bool,
}

impl Queries {
    fn push(&self, call: Waiting) {
        lock(&self.state).waiting.push(call);
        self.ready.notify_one();
    }

    /// Blocks until calls wait, then takes the live ones for one batch,
    /// oldest first: every call, up to `max_batch_size` texts (at least one
    /// call, which may exceed it). `None` once the queue is closed.
    fn next(&self, max_batch_size: usize) -> Option<Vec<Waiting>> {
        let mut queue = lock(&self.state);
        loop {
            if queue.closed {
                return None;
            }
            queue.waiting.retain(|w| !w.reply.is_closed());
            if !queue.waiting.is_empty() {
                break;
            }
            queue = self.ready.wait(queue).unwrap_or_else(PoisonError::into_inner);
        }
        let mut rows = 0;
        let mut take = 0;
        for w in &queue.waiting {
            if take > 0 && rows + w.texts.len() > max_batch_size {
                break;
            }
            rows += w.texts.len();
            take += 1;
        }
        Some(queue.waiting.drain(..take).collect())
    }

    fn close(&self) {
        lock(&self.state).closed = true;
        self.ready.notify_all();
    }
}

/// One thread of the interactive lane: runs the queue's batches on its own
/// session until the model is dropped.
fn serve_queries(model: Weak<Model>, queries: Arc<Queries>, mut slot: Slot, max_batch_size: usize) {
    while let Some(calls) = queries.next(max_batch_size) {
        match model.upgrade() {
            Some(model) => model.run_interactive(&mut slot, calls),
            // Unreachable in practice (the model's drop closes the queue
            // first), and harmless: the callers' replies are dropped.
            None => return,
        }
    }
}

/// A loaded model: the tokenizer and the two lanes.
struct Model {
    tokenizer: Tokenizer,
    pad_id: u32,
    /// The batch lane ([`Embedder::embed`]) and its low-priority threads.
    batch: Lane,
    threads: BackgroundPool,
    /// The interactive lane's queue ([`Embedder::embed_interactive`]); its
    /// threads own its sessions.
    queries: Arc<Queries>,
    max_batch_tokens: usize,
    max_batch_size: usize,
}

impl Drop for Model {
    fn drop(&mut self) {
        self.queries.close();
    }
}

impl Model {
    /// The model, with the interactive lane's threads started (one per
    /// interactive session, named `memlayer-query-<i>`).
    fn start(loaded: Loaded, config: &OnnxConfig) -> Result<Arc<Self>, String> {
        let Loaded { tokenizer, pad_id, slots, interactive } = loaded;
        let batch = Lane::new(slots);
        let threads = BackgroundPool::new("memlayer-embed", batch.sessions, BATCH_NICE).map_err(|e| e.to_string())?;
        let queries = Arc::new(Queries::default());
        let model = Arc::new(Self {
            tokenizer,
            pad_id,
            batch,
            threads,
            queries: Arc::clone(&queries),
            max_batch_tokens: config.max_batch_tokens.max(1),
            max_batch_size: config.max_batch_size.max(1),
        });
        for (i, slot) in interactive.into_iter().enumerate() {
            let (weak, queries, max_batch_size) = (Arc::downgrade(&model), Arc::clone(&queries), model.max_batch_size);
            // On failure `model` drops here, which closes the queue and
            // stops the threads already started.
            std::thread::Builder::new()
                .name(format!("memlayer-query-{i}"))
                .spawn(move || serve_queries(weak, queries, slot, max_batch_size))
                .map_err(|e| format!("starting the query embedding threads: {e}"))?;
        }
        Ok(model)
    }

    /// Runs `work` on the batch lane's low-priority threads once one of its
    /// permits is free.
    async fn in_batch_lane<T: Send + 'static>(
        self: &Arc<Self>,
        work: impl FnOnce(&Self) -> T + Send + 'static,
    ) -> Result<T, StoreError> {
        let permit = self.batch.permit().await?;
        let model = Arc::clone(self);
        self.threads
            .run(move || {
                let _permit = permit;
                work(&model)
            })
            .await
    }

    /// Embeds `texts` on the interactive lane: the call joins the queue,
    /// and the first of the lane's threads to be free runs it with every
    /// other call waiting then (up to `max_batch_size` texts) as one batch.
    /// A caller that gives up (a request timeout) only drops its reply; the
    /// batch goes on for the others.
    async fn interactive(&self, texts: Vec<String>) -> Result<Vec<Vec<f32>>, StoreError> {
        let (reply, answer) = oneshot::channel();
        self.queries.push(Waiting { texts, reply });
        answer.await.map_err(|_| StoreError::backend("an interactive embedding batch was lost"))?
    }

    /// Tokenises and embeds the calls' texts together (in token-capped
    /// batches) on `slot` and replies to each call.
    fn run_interactive(&self, slot: &mut Slot, calls: Vec<Waiting>) {
        let (texts, replies): (Vec<Vec<String>>, Vec<_>) = calls.into_iter().map(|w| (w.texts, w.reply)).unzip();
        let sizes: Vec<usize> = texts.iter().map(Vec::len).collect();
        let all: Vec<String> = texts.into_iter().flatten().collect();
        let result = std::panic::catch_unwind(AssertUnwindSafe(|| self.embed_now(slot, &all)))
            .unwrap_or_else(|panic| Err(StoreError::backend(format!("embedding panicked: {}", panic_message(&panic)))));
        match result {
            Ok(mut vectors) => {
                for (size, reply) in sizes.into_iter().zip(replies).rev() {
                    let mine = vectors.split_off(vectors.len() - size);
                    let _ = reply.send(Ok(mine));
                }
            }
            Err(e) => {
                let message = e.to_string();
                for reply in replies {
                    let _ = reply.send(Err(StoreError::backend(message.clone())));
                }
            }
        }
    }

    /// Every text through `slot`, on this thread.
    fn embed_now(&self, slot: &mut Slot, texts: &[String]) -> Result<Vec<Vec<f32>>, StoreError> {
        // One by one on this thread: `encode_batch_fast` would hand the
        // texts to rayon's global pool, which is nobody's to promise free.
        let mut ids = texts
            .iter()
            .map(|t| self.tokenizer.encode_fast(t.as_str(), true).map(|e| e.get_ids().to_vec()))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| StoreError::backend(format!("tokenizer failed: {e}")))?;
        let lengths: Vec<usize> = ids.iter().map(Vec::len).collect();
        let mut vectors: Vec<Vec<f32>> = vec![Vec::new(); texts.len()];
        for indices in batch::plan(&lengths, self.max_batch_tokens, self.max_batch_size) {
            let rows: Vec<Vec<u32>> = indices.iter().map(|&i| std::mem::take(&mut ids[i])).collect();
            for (i, v) in indices.into_iter().zip(self.infer(slot, &rows)?) {
                vectors[i] = v;
            }
        }
        Ok(vectors)
    }

    /// Token ids of each text, `[CLS]` … `[SEP]`, truncated to [`MAX_TOKENS`].
    fn tokenize(&self, texts: &[String]) -> Result<Vec<Vec<u32>>, StoreError> {
        let inputs: Vec<&str> = texts.iter().map(String::as_str).collect();
        let encodings = self
            .tokenizer
            .encode_batch_fast(inputs, true)
            .map_err(|e| StoreError::backend(format!("tokenizer failed: {e}")))?;
        Ok(encodings.iter().map(|e| e.get_ids().to_vec()).collect())
    }

    /// One batch through `slot`: one vector per row, in row order.
    fn infer(&self, slot: &mut Slot, rows: &[Vec<u32>]) -> Result<Vec<Vec<f32>>, StoreError> {
        let padded = batch::pad(rows, self.pad_id);
        let Slot { session, options } = slot;
        let vectors =
            run(session, options, &padded).map_err(|e| StoreError::backend(format!("onnx inference failed: {e}")))?;
        for v in &vectors {
            let norm = v.iter().map(|x| x * x).sum::<f32>();
            if !norm.is_finite() || (norm - 1.0).abs() > NORM_TOLERANCE {
                return Err(StoreError::backend(format!("model output has squared norm {norm}, expected 1")));
            }
        }
        Ok(vectors)
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// A session taken from the pool, put back when dropped (even by a panic,
/// so that a failed batch never shrinks the pool).
struct Borrowed<'a> {
    pool: &'a Mutex<Vec<Slot>>,
    slot: Option<Slot>,
}

impl<'a> Borrowed<'a> {
    fn take(pool: &'a Mutex<Vec<Slot>>) -> Result<Self, StoreError> {
        let slot = pool.lock().unwrap_or_else(PoisonError::into_inner).pop();
        match slot {
            Some(slot) => Ok(Self { pool, slot: Some(slot) }),
            None => Err(StoreError::backend("no free onnx session (more permits than sessions)")),
        }
    }
}

impl std::ops::Deref for Borrowed<'_> {
    type Target = Slot;
    fn deref(&self) -> &Slot {
        self.slot.as_ref().unwrap_or_else(|| unreachable!("the slot is only taken out on drop"))
    }
}

impl std::ops::DerefMut for Borrowed<'_> {
    fn deref_mut(&mut self) -> &mut Slot {
        self.slot.as_mut().unwrap_or_else(|| unreachable!("the slot is only taken out on drop"))
    }
}

impl Drop for Borrowed<'_> {
    fn drop(&mut self) {
        if let Some(slot) = self.slot.take() {
            self.pool.lock().unwrap_or_else(PoisonError::into_inner).push(slot);
        }
    }
}

/// Runs one padded batch and returns its `sentence_embedding` rows.
fn run(
    session: &mut Session,
    options: &RunOptions<HasSelectedOutputs>,
    padded: &Padded,
) -> Result<Vec<Vec<f32>>, String> {
    let shape = [padded.rows, padded.longest];
    fn tensor(shape: [usize; 2], data: &[i64]) -> Result<TensorRef<'_, i64>, String> {
        TensorRef::from_array_view((shape, data)).map_err(|e| e.to_string())
    }
    let [ids, mask, types] = INPUTS;
    let outputs = session
        .run_with_options(
            ort::inputs![
                ids => tensor(shape, &padded.input_ids)?,
                mask => tensor(shape, &padded.attention_mask)?,
                types => tensor(shape, &padded.token_type_ids)?,
            ],
            options,
        )
        .map_err(|e| e.to_string())?;
    let output = outputs.get(OUTPUT).ok_or_else(|| format!("no `{OUTPUT}` output"))?;
    let (out_shape, data) = output.try_extract_tensor::<f32>().map_err(|e| e.to_string())?;
    let expected = [padded.rows as i64, DIM as i64];
    if **out_shape != expected {
        return Err(format!("`{OUTPUT}` has shape {:?}, expected {expected:?}", &**out_shape));
    }
    Ok(data.chunks_exact(DIM).map(<[f32]>::to_vec).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The provisioned embedder, or `None` after a skip line (a failure
    /// with `CI` set).
    fn provisioned() -> Option<OnnxEmbedder> {
        let embedder = OnnxEmbedder::new(OnnxConfig::default());
        match embedder.status() {
            Ok(_) => Some(embedder),
            Err(problem) => {
                assert!(std::env::var_os("CI").is_none(), "the model is required in CI: {problem}");
                eprintln!("SKIP: {problem}");
                None
            }
        }
    }

    fn call(texts: usize) -> (Waiting, oneshot::Receiver<Vectors>) {
        let (reply, answer) = oneshot::channel();
        (Waiting { texts: vec!["text".to_owned(); texts], reply }, answer)
    }

    /// A batch takes the live calls waiting, oldest first, up to
    /// `max_batch_size` texts (a larger call alone); a closed queue ends the
    /// lane's threads.
    #[test]
    fn a_batch_takes_the_live_calls_waiting() {
        let queries = Queries::default();
        let (a, _a) = call(1);
        let (gone, dropped) = call(1);
        drop(dropped);
        let (b, _b) = call(2);
        let (c, _c) = call(2);
        let (big, _big) = call(9);
        for w in [a, gone, b, c, big] {
            queries.push(w);
        }
        let sizes = |batch: Vec<Waiting>| batch.iter().map(|w| w.texts.len()).collect::<Vec<_>>();
        assert_eq!(sizes(queries.next(4).unwrap()), [1, 2], "the caller that gave up is skipped");
        assert_eq!(sizes(queries.next(4).unwrap()), [2]);
        assert_eq!(sizes(queries.next(4).unwrap()), [9]);
        let (late, _late) = call(1);
        queries.push(late);
        queries.close();
        assert!(queries.next(4).is_none());
    }

    /// A query is embedded by the lane's own threads: its batch runs
    /// without the caller's task (or any task) being polled again, so a
    /// search busy elsewhere never holds the lane up for the queries behind
    /// it.
    #[test]
    fn the_query_lane_runs_without_its_caller_being_polled() {
        let Some(embedder) = provisioned() else { return };
        let model = embedder.model().unwrap();
        let (waiting, answer) = call(1);
        model.queries.push(waiting);
        // No runtime here: a thread just waits for the reply.
        let (done, got) = std::sync::mpsc::channel();
        std::thread::spawn(move || done.send(answer.blocking_recv()));
        // A hang guard, not a timing bound.
        let vectors = got.recv_timeout(std::time::Duration::from_secs(60)).expect("no thread ran the query");
        let vectors = vectors.unwrap().unwrap();
        assert_eq!(vectors.len(), 1);
        assert_eq!(vectors[0].len(), DIM);
    }

    /// With every batch session taken (a backlog being embedded), a query
    /// still gets its vector: it never waits for the batch lane.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_interactive_call_never_waits_for_the_batch_lane() {
        let Some(embedder) = provisioned() else { return };
        let model = embedder.model().unwrap();
        let held = Arc::clone(&model.batch.permits).acquire_many_owned(model.batch.sessions as u32).await.unwrap();

        let query = embedder.embed_interactive(vec!["where are my keys?".to_owned()]);
        // A hang guard, not a timing bound: sharing the batch lane would block forever.
        let got = tokio::time::timeout(std::time::Duration::from_secs(60), query).await;
        let vectors = got.expect("the query waited for the batch lane").unwrap();
        assert_eq!(vectors.len(), 1);

        // And the batch lane is really held: a batch call waits until released.
        let batch = tokio::spawn({
            let embedder = embedder.clone();
            async move { embedder.embed(vec!["backlog".to_owned()]).await }
        });
        tokio::task::yield_now().await;
        assert!(!batch.is_finished());
        drop(held);
        assert_eq!(batch.await.unwrap().unwrap().len(), 1);
    }
}
