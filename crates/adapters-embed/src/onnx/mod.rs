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
//!   (search queries) never queues behind a batch: it runs on tokio's
//!   blocking pool on `interactive_sessions` sessions of its own, and
//!   concurrent calls are gathered into one batch (whoever gets a session
//!   runs every call waiting at that moment);
//! - every vector returned has 384 finite dimensions and unit norm.

mod batch;
mod load;

use std::fmt;
use std::panic::AssertUnwindSafe;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
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
            Ok(loaded) => loaded.and_then(|loaded| Model::new(loaded, &config).map(Arc::new)),
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
                    let vectors = model.in_batch_lane(move |m| m.infer(&m.batch, &rows)).await??;
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

/// The sessions of one lane, and the semaphore that admits one batch per
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
    reply: oneshot::Sender<Result<Vec<Vec<f32>>, StoreError>>,
}

/// A loaded model: the tokenizer and the two lanes.
struct Model {
    tokenizer: Tokenizer,
    pad_id: u32,
    /// The batch lane ([`Embedder::embed`]) and its low-priority threads.
    batch: Lane,
    threads: BackgroundPool,
    /// The interactive lane ([`Embedder::embed_interactive`]) and the calls
    /// waiting for one of its sessions.
    interactive: Lane,
    waiting: Mutex<Vec<Waiting>>,
    max_batch_tokens: usize,
    max_batch_size: usize,
}

impl Model {
    fn new(loaded: Loaded, config: &OnnxConfig) -> Result<Self, String> {
        let batch = Lane::new(loaded.slots);
        let threads = BackgroundPool::new("memlayer-embed", batch.sessions, BATCH_NICE).map_err(|e| e.to_string())?;
        Ok(Self {
            tokenizer: loaded.tokenizer,
            pad_id: loaded.pad_id,
            batch,
            threads,
            interactive: Lane::new(loaded.interactive),
            waiting: Mutex::new(Vec::new()),
            max_batch_tokens: config.max_batch_tokens.max(1),
            max_batch_size: config.max_batch_size.max(1),
        })
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

    /// Embeds `texts` on the interactive lane. The call joins the waiting
    /// list; whoever gets a free session takes every live waiting call (up to
    /// `max_batch_size` texts, at least one call) and runs them as one batch
    /// on the blocking pool, replying to each. A call whose texts another
    /// call took simply waits for its reply. The batch runs in a task of its
    /// own, so a caller that gives up (a request timeout) never strands the
    /// others.
    async fn interactive(self: &Arc<Self>, texts: Vec<String>) -> Result<Vec<Vec<f32>>, StoreError> {
        let (reply, mut answer) = oneshot::channel();
        lock(&self.waiting).push(Waiting { texts, reply });
        loop {
            tokio::select! {
                biased;
                answer = &mut answer => {
                    return answer.map_err(|_| StoreError::backend("an interactive embedding batch was lost"))?;
                }
                permit = self.interactive.permit() => {
                    let permit = permit?;
                    let calls = self.take_waiting();
                    if calls.is_empty() {
                        // Another call took ours: its batch replies.
                        drop(permit);
                        return (&mut answer).await
                            .map_err(|_| StoreError::backend("an interactive embedding batch was lost"))?;
                    }
                    let model = Arc::clone(self);
                    tokio::task::spawn_blocking(move || {
                        let _permit = permit;
                        model.run_interactive(calls);
                    });
                }
            }
        }
    }

    /// The live waiting calls for one batch, oldest first.
    fn take_waiting(&self) -> Vec<Waiting> {
        let mut waiting = lock(&self.waiting);
        waiting.retain(|w| !w.reply.is_closed());
        let mut rows = 0;
        let mut take = 0;
        for w in waiting.iter() {
            if take > 0 && rows + w.texts.len() > self.max_batch_size {
                break;
            }
            rows += w.texts.len();
            take += 1;
        }
        waiting.drain(..take).collect()
    }

    /// Tokenises and embeds the calls' texts together (in token-capped
    /// batches) and replies to each call.
    fn run_interactive(&self, calls: Vec<Waiting>) {
        let (texts, replies): (Vec<Vec<String>>, Vec<_>) = calls.into_iter().map(|w| (w.texts, w.reply)).unzip();
        let sizes: Vec<usize> = texts.iter().map(Vec::len).collect();
        let all: Vec<String> = texts.into_iter().flatten().collect();
        let result = std::panic::catch_unwind(AssertUnwindSafe(|| self.embed_now(&all)))
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

    /// Every text through the interactive lane's session, on this thread.
    fn embed_now(&self, texts: &[String]) -> Result<Vec<Vec<f32>>, StoreError> {
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
            for (i, v) in indices.into_iter().zip(self.infer(&self.interactive, &rows)?) {
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

    /// One batch through a free session of `lane`: one vector per row, in
    /// row order.
    fn infer(&self, lane: &Lane, rows: &[Vec<u32>]) -> Result<Vec<Vec<f32>>, StoreError> {
        let padded = batch::pad(rows, self.pad_id);
        let mut slot = Borrowed::take(&lane.slots)?;
        let Slot { session, options } = &mut *slot;
        let vectors =
            run(session, options, &padded).map_err(|e| StoreError::backend(format!("onnx inference failed: {e}")))?;
        drop(slot);
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
