//! The on-disk image of an [`super::HnswIndex`]: per model, the usearch
//! graph file (vectors and links) and the tables of what each key is, so a
//! restart neither rebuilds nor re-embeds.
//!
//! Layout of the file at the configured path (the "manifest"): `MAGIC` (8
//! bytes), format version (u32 LE), the postcard encoding of every model's
//! header (`Vec<ModelHeader>`: name, dimension, its graph file's name, length
//! and checksum, tenants and every key's id, thread and tenant), then a
//! 64-bit checksum of everything before it (u64 LE) and `END_MAGIC`. Each
//! model's graph is a usearch file beside it, named
//! `<manifest>.<generation>.<n>.usearch`. A write saves the graphs under a
//! new generation, syncs them, writes the manifest to a temporary file that
//! is synced and renamed over the old one, then deletes the older
//! generation's graphs: a crash leaves either snapshot whole.
//!
//! Loading checks a graph file's length and checksum by streaming it (never
//! holding the whole file), then lets usearch stream it into the index: peak
//! memory is the index, not the index plus a copy of the file.
//!
//! Version 1 (instant-distance graphs in one file) is not read: it is
//! reported as another format version, the index starts empty, and the
//! application re-adds the stored vectors; the next snapshot replaces it.

use std::fs::{self, File};
use std::io::{self, BufWriter, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use memlayer_domain::TenantId;
use serde::{Deserialize, Serialize};

use super::graph::{Graph, GraphParams, Slot, Tables};
use super::read as read_lock;

const MAGIC: &[u8; 8] = b"MLVECIX\x01";
const END_MAGIC: &[u8; 8] = b"MLVECEND";
/// 1: instant-distance graphs and an exact delta in one file (no longer
/// read); 2: usearch graph files and a manifest.
const VERSION: u32 = 2;

#[derive(Serialize, Deserialize)]
struct ModelHeader {
    model: String,
    dim: u32,
    file: String,
    file_len: u64,
    file_sum: u64,
    tenants: Vec<TenantId>,
    next_key: u64,
    entries: Vec<(u64, Slot)>,
}

/// One model loaded.
#[derive(Debug)]
pub(crate) struct LoadedModel {
    pub model: String,
    pub graph: Graph,
}

fn graph_path(manifest: &Path, generation: u64, n: usize) -> PathBuf {
    let mut name = manifest.file_name().map(std::ffi::OsStr::to_os_string).unwrap_or_default();
    name.push(format!(".{generation}.{n}.usearch"));
    manifest.with_file_name(name)
}

/// Writes every model's graph and the manifest; returns the bytes written.
/// The caller keeps writers out of the graphs meanwhile (searches may go on).
///
/// # Errors
/// Any I/O or usearch failure; the previous snapshot is then left as it was.
pub(crate) fn write(path: &Path, models: &[(String, Arc<Graph>)]) -> io::Result<u64> {
    let generation =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos() as u64);
    let mut headers = Vec::with_capacity(models.len());
    let mut written = Vec::new();
    let result = (|| {
        let mut total = 0;
        for (n, (model, graph)) in models.iter().enumerate() {
            let file = graph_path(path, generation, n);
            written.push(file.clone());
            graph.save(&file).map_err(io::Error::other)?;
            File::open(&file)?.sync_all()?;
            let (file_len, file_sum) = checksum_file(&file)?;
            total += file_len;
            let tables = read_lock(&graph.tables);
            headers.push(ModelHeader {
                model: model.clone(),
                dim: graph.dim as u32,
                file: file.file_name().map(|f| f.to_string_lossy().into_owned()).unwrap_or_default(),
                file_len,
                file_sum,
                tenants: tables.tenants.clone(),
                next_key: tables.next_key,
                entries: tables.iter().map(|(k, s)| (k, *s)).collect(),
            });
        }
        Ok::<_, io::Error>(total + write_manifest(path, &headers)?)
    })();
    match result {
        Ok(total) => {
            remove_other_generations(path, &written);
            Ok(total)
        }
        Err(e) => {
            for f in written {
                let _ = fs::remove_file(f);
            }
            Err(e)
        }
    }
}

fn write_manifest(path: &Path, headers: &[ModelHeader]) -> io::Result<u64> {
    let mut name = path.file_name().map(std::ffi::OsStr::to_os_string).unwrap_or_default();
    name.push(".tmp");
    let tmp = path.with_file_name(name);
    let result = (|| {
        let file = File::create(&tmp)?;
        let mut out = BufWriter::with_capacity(1 << 20, Hashing { inner: file, sum: Checksum::new() });
        out.write_all(MAGIC)?;
        out.write_all(&VERSION.to_le_bytes())?;
        out = postcard::to_io(headers, out).map_err(io::Error::other)?;
        let Hashing { inner: mut file, sum } = out.into_inner().map_err(io::IntoInnerError::into_error)?;
        file.write_all(&sum.finish().to_le_bytes())?;
        file.write_all(END_MAGIC)?;
        file.sync_all()?;
        file.metadata().map(|m| m.len())
    })();
    match result {
        Ok(size) => {
            fs::rename(&tmp, path)?;
            if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty())
                && let Ok(d) = File::open(dir)
            {
                // Makes the rename durable; not every filesystem supports it.
                let _ = d.sync_all();
            }
            Ok(size)
        }
        Err(e) => {
            let _ = fs::remove_file(&tmp);
            Err(e)
        }
    }
}

/// Deletes graph files of this manifest that `keep` does not name.
fn remove_other_generations(path: &Path, keep: &[PathBuf]) {
    let Some(prefix) = path.file_name().map(|f| format!("{}.", f.to_string_lossy())) else { return };
    let dir = path.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let Ok(entries) = fs::read_dir(dir) else { return };
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if name.starts_with(&prefix)
            && name.ends_with(".usearch")
            && !keep.iter().any(|k| k.file_name() == Some(e.file_name().as_os_str()))
        {
            let _ = fs::remove_file(e.path());
        }
    }
}

/// The checksum of `bytes` (tests write snapshots by hand).
#[cfg(test)]
pub(crate) fn checksum_of(bytes: &[u8]) -> u64 {
    let mut sum = Checksum::new();
    sum.update(bytes);
    sum.finish()
}

/// Length and checksum of a file, read in chunks.
fn checksum_file(path: &Path) -> io::Result<(u64, u64)> {
    let mut file = File::open(path)?;
    let mut sum = Checksum::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut len = 0u64;
    loop {
        let n = file.read(&mut buf)?;
        if n == 0 {
            break;
        }
        sum.update(&buf[..n]);
        len += n as u64;
    }
    Ok((len, sum.finish()))
}

/// Reads a snapshot, applying `params` to every graph.
///
/// # Errors
/// A description of what is wrong (missing, truncated, corrupt, another
/// format version, inconsistent).
pub(crate) fn read(path: &Path, params: GraphParams) -> Result<Vec<LoadedModel>, String> {
    let bytes = fs::read(path).map_err(|e| format!("cannot read: {e}"))?;
    let n = bytes.len();
    if n < MAGIC.len() + 4 + 16 || &bytes[..8] != MAGIC || &bytes[n - 8..] != END_MAGIC {
        return Err("not a vector index snapshot, or truncated".into());
    }
    let version = u32::from_le_bytes([bytes[8], bytes[9], bytes[10], bytes[11]]);
    if version != VERSION {
        return Err(format!("format version {version}, this build reads {VERSION}"));
    }
    let mut stored = [0u8; 8];
    stored.copy_from_slice(&bytes[n - 16..n - 8]);
    let mut sum = Checksum::new();
    sum.update(&bytes[..n - 16]);
    if sum.finish() != u64::from_le_bytes(stored) {
        return Err("checksum mismatch".into());
    }
    let headers: Vec<ModelHeader> = postcard::from_bytes(&bytes[12..n - 16]).map_err(|e| format!("headers: {e}"))?;
    drop(bytes);
    let mut models = Vec::with_capacity(headers.len());
    for h in headers {
        let dim = h.dim as usize;
        if dim == 0 {
            return Err(format!("model {}: dimension 0", h.model));
        }
        if h.file.contains('/') || h.file.contains('\\') {
            return Err(format!("model {}: graph file name {:?}", h.model, h.file));
        }
        let file = path.with_file_name(&h.file);
        let (len, file_sum) = checksum_file(&file).map_err(|e| format!("model {}: graph file: {e}", h.model))?;
        if (len, file_sum) != (h.file_len, h.file_sum) {
            return Err(format!("model {}: graph file {} is not the one written", h.model, file.display()));
        }
        let mut tables = Tables::default();
        for (key, slot) in &h.entries {
            let tenant =
                h.tenants.get(slot.tenant as usize).ok_or_else(|| format!("model {}: unknown tenant", h.model))?;
            if tables.slot(*key).is_some() || *key >= h.next_key {
                return Err(format!("model {}: key {key} repeated or out of range", h.model));
            }
            tables.put(*key, slot.id, tenant, slot.thread);
        }
        if tables.len() != h.entries.len() {
            return Err(format!("model {}: an id appears twice", h.model));
        }
        tables.next_key = h.next_key;
        let graph = Graph::load(&file, dim, params, tables).map_err(|e| format!("model {}: {e}", h.model))?;
        models.push(LoadedModel { model: h.model, graph });
    }
    Ok(models)
}

/// A writer that checksums what passes through.
struct Hashing<W> {
    inner: W,
    sum: Checksum,
}

impl<W: Write> Write for Hashing<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.sum.update(&buf[..n]);
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// A fast 64-bit checksum against torn writes and bit rot (not an
/// adversary): per 8-byte word `h = rotl((h ^ w) * K, 31)`, a bijection of
/// `h`, so any single changed word changes the result.
#[derive(Debug, Clone)]
struct Checksum {
    h: u64,
    pending: [u8; 8],
    filled: usize,
    len: u64,
}

impl Checksum {
    const K: u64 = 0x9e37_79b9_7f4a_7c15;

    fn new() -> Self {
        Self { h: 0xcbf2_9ce4_8422_2325, pending: [0; 8], filled: 0, len: 0 }
    }

    #[inline]
    fn mix(h: u64, w: u64) -> u64 {
        (h ^ w).wrapping_mul(Self::K).rotate_left(31)
    }

    fn update(&mut self, mut data: &[u8]) {
        self.len += data.len() as u64;
        if self.filled > 0 {
            let take = (8 - self.filled).min(data.len());
            self.pending[self.filled..self.filled + take].copy_from_slice(&data[..take]);
            self.filled += take;
            data = &data[take..];
            if self.filled < 8 {
                return;
            }
            self.h = Self::mix(self.h, u64::from_le_bytes(self.pending));
            self.filled = 0;
        }
        let words = data.chunks_exact(8);
        let tail = words.remainder();
        for w in words {
            self.h = Self::mix(self.h, u64::from_le_bytes([w[0], w[1], w[2], w[3], w[4], w[5], w[6], w[7]]));
        }
        self.pending[..tail.len()].copy_from_slice(tail);
        self.filled = tail.len();
    }

    fn finish(&self) -> u64 {
        let mut last = [0u8; 8];
        last[..self.filled].copy_from_slice(&self.pending[..self.filled]);
        Self::mix(Self::mix(self.h, u64::from_le_bytes(last)), self.len)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checksum_is_independent_of_chunking_and_sees_any_flip() {
        let data: Vec<u8> = (0..1000u32).map(|i| (i * 31 % 251) as u8).collect();
        let mut whole = Checksum::new();
        whole.update(&data);
        let mut pieces = Checksum::new();
        for c in data.chunks(7) {
            pieces.update(c);
        }
        assert_eq!(whole.finish(), pieces.finish());
        for i in [0, 1, 500, 999] {
            let mut flipped = data.clone();
            flipped[i] ^= 0x10;
            let mut s = Checksum::new();
            s.update(&flipped);
            assert_ne!(s.finish(), whole.finish(), "flip at {i}");
        }
        let mut short = Checksum::new();
        short.update(&data[..999]);
        assert_ne!(short.finish(), whole.finish());
    }
}
