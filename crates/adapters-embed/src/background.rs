//! [`BackgroundPool`]: dedicated, low-priority threads for CPU work nobody
//! is waiting on (batch embedding, vector index builds).
//!
//! Why not tokio's blocking pool: work there shares the CPU with the
//! request path on equal terms (an 80-second graph build on both cores of a
//! 2-core machine made every search wait for it), and a runtime being shut
//! down waits for every blocking task to finish. These threads run at a
//! lowered scheduling priority (`nice`, on Linux), so a request's work takes
//! the CPU from them whenever it needs it, and nothing waits for them on
//! shutdown: a job's caller can stop waiting, and the process can exit, while
//! a job still runs.
//!
//! Each pool is a `rayon` pool, so data-parallel work inside a job (the
//! graph builder's `par_iter`) stays on the pool's own threads.

use std::fmt;
use std::sync::Arc;

use memlayer_ports::StoreError;
use tokio::sync::oneshot;

/// A named pool of low-priority threads. Cheap to clone.
#[derive(Clone)]
pub(crate) struct BackgroundPool {
    pool: Arc<rayon::ThreadPool>,
    name: &'static str,
}

impl fmt::Debug for BackgroundPool {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BackgroundPool")
            .field("name", &self.name)
            .field("threads", &self.pool.current_num_threads())
            .finish()
    }
}

impl BackgroundPool {
    /// `threads` threads named `<name>-<i>`, at nice value `nice` (0 to 19;
    /// higher is lower priority; ignored where unsupported).
    ///
    /// # Errors
    /// `Backend` when the threads cannot be spawned.
    pub(crate) fn new(name: &'static str, threads: usize, nice: i32) -> Result<Self, StoreError> {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads.max(1))
            .thread_name(move |i| format!("{name}-{i}"))
            .start_handler(move |_| lower_priority(name, nice))
            .build()
            .map_err(|e| StoreError::backend(format!("starting the {name} threads: {e}")))?;
        Ok(Self { pool: Arc::new(pool), name })
    }

    /// Runs `work` on the pool and waits for its result. Dropping the
    /// returned future stops the wait, not the work.
    ///
    /// # Errors
    /// `Backend` when `work` panicked.
    pub(crate) async fn run<R: Send + 'static>(
        &self,
        work: impl FnOnce() -> R + Send + 'static,
    ) -> Result<R, StoreError> {
        let (tx, rx) = oneshot::channel();
        self.pool.spawn(move || {
            let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(work));
            let _ = tx.send(result);
        });
        match rx.await {
            Ok(Ok(r)) => Ok(r),
            Ok(Err(panic)) => {
                Err(StoreError::backend(format!("{} job panicked: {}", self.name, panic_message(&panic))))
            }
            Err(_) => Err(StoreError::backend(format!("{} job was dropped", self.name))),
        }
    }
}

/// The text of a panic payload.
pub(crate) fn panic_message(panic: &Box<dyn std::any::Any + Send>) -> String {
    panic
        .downcast_ref::<&str>()
        .map(ToString::to_string)
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_default()
}

/// Lowers the calling thread's priority to nice value `nice` (never raises
/// it: a thread that inherited a higher value keeps it). On Linux the nice
/// value is per thread, so `setpriority` on the thread id touches this
/// thread only.
#[cfg(target_os = "linux")]
fn lower_priority(name: &str, nice: i32) {
    let tid = rustix::thread::gettid();
    let current = rustix::process::getpriority_process(Some(tid)).unwrap_or(0);
    let wanted = nice.clamp(0, 19);
    if wanted <= current {
        return;
    }
    if let Err(e) = rustix::process::setpriority_process(Some(tid), wanted) {
        tracing::warn!(thread = name, error = %e, "cannot lower the priority of a background thread");
    }
}

#[cfg(not(target_os = "linux"))]
fn lower_priority(_name: &str, _nice: i32) {}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn runs_work_and_reports_panics() {
        let pool = BackgroundPool::new("test-bg", 1, 10).unwrap();
        assert_eq!(pool.run(|| 2 + 2).await.unwrap(), 4);
        let err = pool.run(|| -> u32 { panic!("boom") }).await.unwrap_err();
        assert!(err.to_string().contains("boom"), "{err}");
        // The pool survives a panicking job.
        assert_eq!(pool.run(|| 1).await.unwrap(), 1);
    }

    #[cfg(target_os = "linux")]
    #[tokio::test]
    async fn threads_run_at_the_lowered_priority() {
        let pool = BackgroundPool::new("test-nice", 1, 7).unwrap();
        let nice =
            pool.run(|| rustix::process::getpriority_process(Some(rustix::thread::gettid())).unwrap()).await.unwrap();
        let own = rustix::process::getpriority_process(Some(rustix::thread::gettid())).unwrap();
        assert_eq!(nice, own.max(7), "background thread nice {nice}, caller {own}");
    }
}
