//! `memlayer export` and `memlayer import`: the export format of
//! `GET /api/export` and `POST /api/import` (docs/EXPORT.md) on the
//! database directly, to a file or standard output and back. On a terminal
//! both show progress (counts, rate, time left) as `reembed` does; otherwise
//! a line at the end.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context as _;
use axum::body::Bytes;
use clap::Args;
use memlayer_app::{ExportOptions, Record, RecordSink, Services};
use memlayer_domain::{ResourceId, TenantId, ThreadId};
use memlayer_ports::StoreError;
use std::io::{Read as _, Write as _};

use crate::progress;
use crate::transfer_routes::{encode, import_error, import_stream};

/// Arguments of `memlayer export`.
#[derive(Debug, Args)]
pub struct ExportArgs {
    /// Where to write (default: standard output).
    #[arg(long, short, value_name = "FILE")]
    pub output: Option<PathBuf>,
    /// Only this resource's threads and working memory (no catalog).
    #[arg(long, conflicts_with = "thread")]
    pub resource: Option<String>,
    /// Only this thread.
    #[arg(long)]
    pub thread: Option<String>,
    /// Include stored vectors (an import then needs no re-embedding when its
    /// store uses the same model).
    #[arg(long)]
    pub vectors: bool,
    /// Tenant (default: the configured default tenant).
    #[arg(long)]
    pub tenant: Option<String>,
}

/// Arguments of `memlayer import`.
#[derive(Debug, Args)]
pub struct ImportArgs {
    /// The export to read (`-`: standard input).
    #[arg(value_name = "FILE")]
    pub input: PathBuf,
    /// Tenant (default: the configured default tenant); every record must be
    /// of this tenant.
    #[arg(long)]
    pub tenant: Option<String>,
}

fn tenant_of(services: &Services, tenant: Option<&String>) -> anyhow::Result<TenantId> {
    Ok(match tenant {
        Some(t) => TenantId::parse(t.clone()).context("--tenant")?,
        None => services.memory.default_tenant().clone(),
    })
}

/// Writes records as lines to a buffered writer, counting messages for the
/// bar (blocking writes: this is the command line, one export at a time).
struct FileSink {
    out: std::io::BufWriter<Box<dyn std::io::Write + Send>>,
    line: Vec<u8>,
    bar: indicatif::ProgressBar,
    messages: u64,
}

#[async_trait::async_trait]
impl RecordSink for FileSink {
    async fn put(&mut self, record: Record) -> Result<(), StoreError> {
        if matches!(record, Record::Message(_)) {
            self.messages += 1;
            if self.messages.is_multiple_of(1_000) {
                self.bar.set_position(self.messages);
            }
        }
        self.line.clear();
        encode(&record, &mut self.line).map_err(StoreError::backend)?;
        self.line.push(b'\n');
        self.out.write_all(&self.line).map_err(|e| StoreError::backend(format!("writing the export: {e}")))
    }
}

/// `memlayer export`.
///
/// # Errors
/// A bad argument, a failed read or write.
pub async fn export(services: &Services, args: &ExportArgs) -> anyhow::Result<ExitCode> {
    let tenant = tenant_of(services, args.tenant.as_ref())?;
    let options = ExportOptions {
        resource: args.resource.clone().map(ResourceId::parse).transpose().context("--resource")?,
        thread: args.thread.as_deref().map(str::parse::<ThreadId>).transpose().context("--thread")?,
        vectors: args.vectors,
    };
    // The total for the bar: the tenant's live messages, when the whole
    // tenant is exported.
    let total = if options.resource.is_none() && options.thread.is_none() {
        services.memory.usage(&tenant).await.ok().map(|u| u.usage.messages)
    } else {
        None
    };
    let bar = progress::bar(total, progress::MESSAGES);
    let started = std::time::Instant::now();
    let out: Box<dyn std::io::Write + Send> = match &args.output {
        Some(path) if path.as_os_str() != "-" => {
            Box::new(std::fs::File::create(path).with_context(|| format!("creating {}", path.display()))?)
        }
        _ => Box::new(std::io::stdout()),
    };
    let mut sink = FileSink {
        out: std::io::BufWriter::with_capacity(1 << 20, out),
        line: Vec::new(),
        bar: bar.clone(),
        messages: 0,
    };
    let totals = services.transfer.export(&tenant, &options, &mut sink).await.context("exporting")?;
    sink.out.flush().context("writing the export")?;
    bar.set_position(totals.messages);
    bar.finish_and_clear();
    let secs = started.elapsed().as_secs_f64();
    #[allow(clippy::cast_precision_loss, reason = "a rate for people")]
    let rate = totals.messages as f64 / secs.max(1e-9);
    eprintln!(
        "exported {} threads, {} messages, {} vectors ({} records) in {secs:.1} s, {rate:.0} messages/s",
        totals.threads,
        totals.messages,
        totals.vectors,
        totals.records + 1
    );
    Ok(ExitCode::SUCCESS)
}

/// `memlayer import`.
///
/// # Errors
/// A bad argument, an unreadable file; an import error is printed with its
/// line and field and fails the command.
pub async fn import(services: &Services, args: &ImportArgs) -> anyhow::Result<ExitCode> {
    let tenant = tenant_of(services, args.tenant.as_ref())?;
    let stdin = args.input.as_os_str() == "-";
    let (reader, size): (Box<dyn std::io::Read + Send>, Option<u64>) = if stdin {
        (Box::new(std::io::stdin()), None)
    } else {
        let file = std::fs::File::open(&args.input).with_context(|| format!("opening {}", args.input.display()))?;
        let size = file.metadata().ok().map(|m| m.len());
        (Box::new(file), size)
    };
    // Blocking reads of 256 KiB: this is the command line, one import at a time.
    let chunks = futures_util::stream::unfold(reader, |mut reader| async move {
        let mut buf = vec![0u8; 256 * 1024];
        match reader.read(&mut buf) {
            Ok(0) => None,
            Ok(n) => {
                buf.truncate(n);
                Some((Ok::<_, std::io::Error>(Bytes::from(buf)), reader))
            }
            Err(e) => Some((Err(e), reader)),
        }
    });
    let bar = progress::bar(size, progress::BYTES);
    let importer = services.transfer.importer(Arc::new(tenant.clone()));
    let started = std::time::Instant::now();
    let shown = bar.clone();
    let done = import_stream(importer, &tenant, Box::pin(chunks), move |read, report| {
        shown.set_position(read);
        shown.set_message(format!(
            "{} threads, {} messages",
            report.threads_created + report.threads_unchanged,
            report.messages_created
        ));
    })
    .await;
    bar.finish_and_clear();
    match done {
        Ok(r) => {
            eprintln!(
                "imported {} threads ({} already there), {} messages, {} vectors as given, {} messages to embed, \
                 {} catalog and working-memory records ({} already there) in {:.1} s",
                r.threads_created,
                r.threads_unchanged,
                r.messages_created,
                r.vectors_stored,
                r.embeddings_queued,
                r.records_created,
                r.records_unchanged,
                started.elapsed().as_secs_f64()
            );
            if r.embeddings_queued > 0 {
                eprintln!("the server's embedding worker (or `memlayer reembed`) embeds the queued messages");
            }
            Ok(ExitCode::SUCCESS)
        }
        Err(e) => {
            let r = *e.report;
            let api = import_error(e);
            eprintln!("import failed: {} ({})", api_message(&api), api.status());
            eprintln!(
                "imported before it: {} threads ({} already there), {} messages; the thread holding that line was not",
                r.threads_created, r.threads_unchanged, r.messages_created
            );
            Ok(ExitCode::FAILURE)
        }
    }
}

fn api_message(e: &crate::error::ApiError) -> String {
    e.message().to_owned()
}
