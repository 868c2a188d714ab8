//! Embedding throughput of `OnnxEmbedder`, the Rust side of
//! `scripts/bench_embed` (which runs the Python reference on the same texts
//! and compares the vectors).
//!
//! ```text
//! bench_embed --input texts.jsonl [--output vectors.jsonl] [--sessions N] [--threads N]
//!             [--max-batch-tokens T] [--max-batch-size B] [--cache-dir DIR]
//! ```
//!
//! Input: one JSON string per line. Output: one JSON array of 384 floats per
//! line, in input order. Like the Python reference, the timing covers
//! tokenization and inference of all texts in one `embed` call, after the
//! model is loaded and one warm-up call; it is printed to stderr as
//! `bench: … texts/s, cpu …s` (the process's CPU time over the same span).

use std::fs;
use std::io::{BufWriter, Write};
use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Context, bail};
use memlayer_adapters_embed::{OnnxConfig, OnnxEmbedder, default_cache_dir};
use memlayer_ports::Embedder;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut input = None;
    let mut output = None;
    let mut cache_dir = default_cache_dir();
    let (mut sessions, mut threads, mut max_batch_tokens, mut max_batch_size) = (None, None, None, None);
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        let mut value = || args.next().with_context(|| format!("{flag} needs a value"));
        match flag.as_str() {
            "--input" => input = Some(PathBuf::from(value()?)),
            "--output" => output = Some(PathBuf::from(value()?)),
            "--cache-dir" => cache_dir = PathBuf::from(value()?),
            "--sessions" => sessions = Some(value()?.parse()?),
            "--threads" => threads = Some(value()?.parse()?),
            "--max-batch-tokens" => max_batch_tokens = Some(value()?.parse()?),
            "--max-batch-size" => max_batch_size = Some(value()?.parse()?),
            "-h" | "--help" => {
                eprintln!(
                    "usage: bench_embed --input texts.jsonl [--output vectors.jsonl] [--sessions N] [--threads N] \
                     [--max-batch-tokens T] [--max-batch-size B] [--cache-dir DIR]"
                );
                return Ok(());
            }
            other => bail!("unknown argument {other:?} (try --help)"),
        }
    }
    let defaults = OnnxConfig::from_cache_dir(&cache_dir);
    let config = OnnxConfig {
        sessions: sessions.unwrap_or(defaults.sessions),
        intra_threads: threads.unwrap_or(defaults.intra_threads),
        max_batch_tokens: max_batch_tokens.unwrap_or(defaults.max_batch_tokens),
        max_batch_size: max_batch_size.unwrap_or(defaults.max_batch_size),
        ..defaults
    };
    let input = input.context("--input is required")?;
    let texts: Vec<String> = fs::read_to_string(&input)
        .with_context(|| format!("reading {}", input.display()))?
        .lines()
        .filter(|l| !l.trim().is_empty())
        .enumerate()
        .map(|(n, l)| {
            serde_json::from_str(l).with_context(|| format!("{}:{}: not a JSON string", input.display(), n + 1))
        })
        .collect::<anyhow::Result<_>>()?;

    let started = Instant::now();
    let embedder = OnnxEmbedder::new(config.clone());
    if let Err(e) = embedder.status() {
        bail!("{e}");
    }
    let load = started.elapsed();
    embedder.embed(vec!["warm-up".to_owned()]).await?;

    let (started, cpu_before) = (Instant::now(), cpu_seconds());
    let embeddings = embedder.embed(texts.clone()).await?;
    let elapsed = started.elapsed().as_secs_f64();
    let cpu = cpu_seconds().zip(cpu_before).map_or(f64::NAN, |(after, before)| after - before);
    let chars: usize = texts.iter().map(|t| t.chars().count()).sum();
    eprintln!(
        "bench: {} texts ({chars} chars), sessions={} threads={} max_batch_tokens={} max_batch_size={}: \
         {:.1} texts/s, cpu {cpu:.2}s (embed {elapsed:.3}s, load {:.3}s)",
        texts.len(),
        config.sessions,
        config.intra_threads,
        config.max_batch_tokens,
        config.max_batch_size,
        texts.len() as f64 / elapsed,
        load.as_secs_f64(),
    );

    if let Some(path) = output {
        let mut out = BufWriter::new(fs::File::create(&path).with_context(|| format!("creating {}", path.display()))?);
        for embedding in &embeddings {
            serde_json::to_writer(&mut out, embedding.vector())?;
            out.write_all(b"\n")?;
        }
        out.flush()?;
    }
    Ok(())
}

/// CPU time (user + system) of this process so far, from `/proc/self/stat`
/// (Linux, 10 ms ticks); `None` elsewhere.
fn cpu_seconds() -> Option<f64> {
    let stat = fs::read_to_string("/proc/self/stat").ok()?;
    // Fields after the parenthesised command name: state is field 3, utime 14, stime 15.
    let fields: Vec<&str> = stat.get(stat.rfind(')')? + 1..)?.split_whitespace().collect();
    let ticks = fields.get(11)?.parse::<f64>().ok()? + fields.get(12)?.parse::<f64>().ok()?;
    Some(ticks / 100.0)
}
