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
//! - inference runs on tokio's blocking pool, at most `sessions` batches at a
//!   time (one semaphore permit per session), each on a session of its own;
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
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

use self::batch::Padded;
use self::load::{INPUTS, Loaded, OUTPUT, Slot};

/// The model this embedder runs, recorded with every vector.
pub const MINILM_MODEL: &str = "sentence-transformers/all-MiniLM-L6-v2";
/// Dimensions of every vector.
const DIM: usize = 384;
/// Texts are truncated to this many tokens, `[CLS]` and `[SEP]` included
/// (the model's `max_seq_length`).
const MAX_TOKENS: usize = 256;
/// Largest tolerated deviation of a vector's squared norm from 1.
const NORM_TOLERANCE: f32 = 1e-3;

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
    /// ONNX Runtime sessions, i.e. batches run in parallel. Default 1.
    pub sessions: usize,
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
            Ok(loaded) => loaded.map(|loaded| Arc::new(Model::new(loaded, &config))),
            Err(panic) => {
                let what = panic
                    .downcast_ref::<&str>()
                    .map(ToString::to_string)
                    .or_else(|| panic.downcast_ref::<String>().cloned())
                    .unwrap_or_default();
                Err(format!("loading the model panicked: {what}; run scripts/provision"))
            }
        };
        match &model {
            Ok(_) => tracing::info!(
                model = MINILM_MODEL,
                dir = %config.model_dir.display(),
                sessions = config.sessions.max(1),
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
        let mut ids = model.blocking(move |m| m.tokenize(&texts)).await??;
        let lengths: Vec<usize> = ids.iter().map(Vec::len).collect();

        // At most one batch per session in flight: a call queues behind the
        // batches already running, not behind every batch of a large backfill.
        let mut plan = batch::plan(&lengths, model.max_batch_tokens, model.max_batch_size).into_iter();
        let mut running = JoinSet::new();
        let mut vectors: Vec<Option<Vec<f32>>> = vec![None; count];
        loop {
            while running.len() < model.sessions {
                let Some(indices) = plan.next() else { break };
                let rows: Vec<Vec<u32>> = indices.iter().map(|&i| std::mem::take(&mut ids[i])).collect();
                let model = Arc::clone(&model);
                running.spawn(async move {
                    let vectors = model.blocking(move |m| m.infer(&rows)).await??;
                    Ok::<_, StoreError>((indices, vectors))
                });
            }
            let Some(joined) = running.join_next().await else { break };
            let (indices, batch) = joined.map_err(StoreError::backend)??;
            for (i, vector) in indices.into_iter().zip(batch) {
                vectors[i] = Some(vector);
            }
        }
        vectors
            .into_iter()
            .map(|v| {
                let v = v.ok_or_else(|| StoreError::backend("a text got no vector"))?;
                Embedding::new(MINILM_MODEL, v, DIM).map_err(StoreError::backend)
            })
            .collect()
    }
}

/// A loaded model: the tokenizer, a pool of sessions, and the semaphore that
/// admits one blocking task per session.
struct Model {
    tokenizer: Tokenizer,
    pad_id: u32,
    slots: Mutex<Vec<Slot>>,
    sessions: usize,
    permits: Arc<Semaphore>,
    max_batch_tokens: usize,
    max_batch_size: usize,
}

impl Model {
    fn new(loaded: Loaded, config: &OnnxConfig) -> Self {
        Self {
            tokenizer: loaded.tokenizer,
            pad_id: loaded.pad_id,
            sessions: loaded.slots.len(),
            permits: Arc::new(Semaphore::new(loaded.slots.len())),
            slots: Mutex::new(loaded.slots),
            max_batch_tokens: config.max_batch_tokens.max(1),
            max_batch_size: config.max_batch_size.max(1),
        }
    }

    /// Runs `work` on the blocking pool once a permit is free.
    async fn blocking<T: Send + 'static>(
        self: &Arc<Self>,
        work: impl FnOnce(&Self) -> T + Send + 'static,
    ) -> Result<T, StoreError> {
        let permit = Arc::clone(&self.permits)
            .acquire_owned()
            .await
            .map_err(|_| StoreError::Unavailable("onnx embedder is shutting down".to_owned()))?;
        let model = Arc::clone(self);
        tokio::task::spawn_blocking(move || {
            let _permit = permit;
            work(&model)
        })
        .await
        .map_err(StoreError::backend)
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

    /// One batch through a free session: one vector per row, in row order.
    fn infer(&self, rows: &[Vec<u32>]) -> Result<Vec<Vec<f32>>, StoreError> {
        let padded = batch::pad(rows, self.pad_id);
        let mut slot = Borrowed::take(&self.slots)?;
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
