//! The on-disk image of an [`super::HnswIndex`]: built graphs, their
//! tombstones and the not-yet-built delta, so a restart neither rebuilds nor
//! re-embeds.
//!
//! Layout: `MAGIC` (8 bytes), format version (u32 LE), the postcard
//! encoding of every model's header (`Vec<ModelHeader>`), then the postcard
//! encoding of each model's `HnswMap` in header order, then a 64-bit checksum
//! of everything before it (u64 LE) and `END_MAGIC`. Written to a temporary
//! file that is synced and renamed over the old one.
//!
//! `ef_search`: instant-distance fixes it when building, as the first field
//! of the serialised map (`HnswMap { hnsw: Hnsw { ef_search: usize, .. } }`,
//! a postcard varint at the map's first byte). The writer stores that varint
//! in a fixed three-byte form (postcard accepts non-canonical varints), so
//! the reader can set the configured `ef_search` in place: changing it needs
//! a restart, not a rebuild. `instant-distance` is pinned (`=0.6.1`) and a
//! test guards this layout.

use std::fs::{self, File};
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use instant_distance::HnswMap;
use memlayer_domain::{MessageId, TenantId, ThreadId};
use serde::{Deserialize, Serialize};

use super::segment::{Meta, Point, Segment};

const MAGIC: &[u8; 8] = b"MLVECIX\x01";
const END_MAGIC: &[u8; 8] = b"MLVECEND";
const VERSION: u32 = 1;
/// Width of the stored `ef_search` varint: values below 2^21.
const EF_WIDTH: usize = 3;

/// One not-yet-built entry.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct DeltaEntry {
    pub id: MessageId,
    pub tenant: TenantId,
    pub thread: ThreadId,
    pub vector: Point,
}

/// What is written of one model.
#[derive(Debug)]
pub(crate) struct ModelImage {
    pub model: String,
    pub dim: usize,
    pub delta: Vec<DeltaEntry>,
    /// The graph and the pids removed from it.
    pub segment: Option<(Arc<Segment>, Vec<u32>)>,
}

/// What is read of one model.
#[derive(Debug)]
pub(crate) struct LoadedModel {
    pub model: String,
    pub dim: usize,
    pub delta: Vec<DeltaEntry>,
    pub segment: Option<(Segment, Vec<u32>)>,
}

#[derive(Serialize)]
struct ModelHeaderRef<'a> {
    model: &'a str,
    dim: u32,
    delta: &'a [DeltaEntry],
    segment: Option<SegmentHeaderRef<'a>>,
}

#[derive(Serialize)]
struct SegmentHeaderRef<'a> {
    tenants: &'a [TenantId],
    meta: &'a [Meta],
    dead: &'a [u32],
}

#[derive(Deserialize)]
struct ModelHeader {
    model: String,
    dim: u32,
    delta: Vec<DeltaEntry>,
    segment: Option<SegmentHeader>,
}

#[derive(Deserialize)]
struct SegmentHeader {
    tenants: Vec<TenantId>,
    meta: Vec<Meta>,
    dead: Vec<u32>,
}

/// Writes `models` to `path` atomically; returns the file's size.
///
/// # Errors
/// Any I/O or encoding failure; the old file is then left as it was.
pub(crate) fn write(path: &Path, models: &[ModelImage]) -> io::Result<u64> {
    let tmp = temp_path(path);
    let result = write_to(&tmp, models);
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

fn temp_path(path: &Path) -> PathBuf {
    let mut name = path.file_name().map(std::ffi::OsStr::to_os_string).unwrap_or_default();
    name.push(".tmp");
    path.with_file_name(name)
}

fn write_to(tmp: &Path, models: &[ModelImage]) -> io::Result<u64> {
    let file = File::create(tmp)?;
    let mut out = BufWriter::with_capacity(1 << 20, Hashing { inner: file, sum: Checksum::new() });
    out.write_all(MAGIC)?;
    out.write_all(&VERSION.to_le_bytes())?;
    let headers: Vec<ModelHeaderRef<'_>> = models
        .iter()
        .map(|m| ModelHeaderRef {
            model: &m.model,
            dim: m.dim as u32,
            delta: &m.delta,
            segment: m.segment.as_ref().map(|(s, dead)| SegmentHeaderRef { tenants: &s.tenants, meta: &s.meta, dead }),
        })
        .collect();
    out = postcard::to_io(&headers, out).map_err(io::Error::other)?;
    for (segment, _) in models.iter().filter_map(|m| m.segment.as_ref()) {
        let fixed = postcard::to_io(&segment.map, FixedEf::new(&mut out)).map_err(io::Error::other)?;
        fixed.finish()?;
    }
    let Hashing { inner: mut file, sum } = out.into_inner().map_err(io::IntoInnerError::into_error)?;
    file.write_all(&sum.finish().to_le_bytes())?;
    file.write_all(END_MAGIC)?;
    file.sync_all()?;
    file.metadata().map(|m| m.len())
}

/// Reads a snapshot, setting every graph's `ef_search` to `ef_search`.
///
/// # Errors
/// A description of what is wrong (missing, truncated, corrupt, another
/// format version, inconsistent).
pub(crate) fn read(path: &Path, ef_search: usize) -> Result<Vec<LoadedModel>, String> {
    let mut bytes = fs::read(path).map_err(|e| format!("cannot read: {e}"))?;
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
    let body = &mut bytes[12..n - 16];
    let (headers, rest) = postcard::take_from_bytes::<Vec<ModelHeader>>(body).map_err(|e| format!("headers: {e}"))?;
    let mut at = body.len() - rest.len();
    let mut models = Vec::with_capacity(headers.len());
    for h in headers {
        let dim = h.dim as usize;
        if dim == 0 {
            return Err(format!("model {}: dimension 0", h.model));
        }
        if let Some(e) = h.delta.iter().find(|e| e.vector.0.len() != dim) {
            return Err(format!("model {}: delta entry {} is not of dimension {dim}", h.model, e.id));
        }
        let segment = match h.segment {
            None => None,
            Some(s) => {
                let (map, used) =
                    take_map(&mut body[at..], ef_search).map_err(|e| format!("model {}: graph: {e}", h.model))?;
                at += used;
                let segment = Segment::from_parts(map, dim, ef_search, s.tenants, s.meta)
                    .map_err(|e| format!("model {}: {e}", h.model))?;
                if s.dead.iter().any(|&p| p as usize >= segment.len()) {
                    return Err(format!("model {}: tombstone out of range", h.model));
                }
                Some((segment, s.dead))
            }
        };
        models.push(LoadedModel { model: h.model, dim, delta: h.delta, segment });
    }
    if at != body.len() {
        return Err(format!("{} unexpected bytes after the last graph", body.len() - at));
    }
    Ok(models)
}

/// Deserialises the `HnswMap` at the front of `bytes` with its `ef_search`
/// set to `ef`; returns it and the number of bytes it took.
fn take_map(bytes: &mut [u8], ef: usize) -> Result<(HnswMap<Point, u32>, usize), String> {
    let width = bytes.iter().take(10).position(|b| b & 0x80 == 0).ok_or("bad ef_search varint")? + 1;
    if ef < 1 << (7 * width) {
        write_varint_fixed(&mut bytes[..width], ef);
        let (map, rest) = postcard::take_from_bytes::<HnswMap<Point, u32>>(bytes).map_err(|e| e.to_string())?;
        return Ok((map, bytes.len() - rest.len()));
    }
    // A canonical varint too narrow for the new value (never written by this
    // module): re-encode into a copy.
    let mut needed = 1;
    while ef >= 1 << (7 * needed) {
        needed += 1;
    }
    let mut patched = vec![0u8; needed];
    write_varint_fixed(&mut patched, ef);
    let new_width = patched.len();
    patched.extend_from_slice(&bytes[width..]);
    let (map, rest) = postcard::take_from_bytes::<HnswMap<Point, u32>>(&patched).map_err(|e| e.to_string())?;
    Ok((map, patched.len() - rest.len() - new_width + width))
}

/// `value` as a little-endian base-128 varint of exactly `out.len()` bytes.
fn write_varint_fixed(out: &mut [u8], value: usize) {
    let last = out.len() - 1;
    for (i, b) in out.iter_mut().enumerate() {
        *b = ((value >> (7 * i)) & 0x7f) as u8 | if i < last { 0x80 } else { 0 };
    }
}

/// Passes bytes through, except the first varint, which it re-encodes in
/// `EF_WIDTH` bytes (see the module docs).
struct FixedEf<W: Write> {
    inner: W,
    prefix: Vec<u8>,
    done: bool,
}

impl<W: Write> FixedEf<W> {
    fn new(inner: W) -> Self {
        Self { inner, prefix: Vec::new(), done: false }
    }

    fn finish(self) -> io::Result<()> {
        if self.done { Ok(()) } else { Err(io::Error::other("graph encoding ended inside its first varint")) }
    }
}

impl<W: Write> Write for FixedEf<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if self.done {
            return self.inner.write(buf);
        }
        for (i, &b) in buf.iter().enumerate() {
            self.prefix.push(b);
            if b & 0x80 == 0 {
                let value =
                    self.prefix.iter().enumerate().fold(0usize, |v, (k, b)| v | (usize::from(b & 0x7f) << (7 * k)));
                if self.prefix.len() <= EF_WIDTH && value < 1 << (7 * EF_WIDTH) {
                    let mut fixed = [0u8; EF_WIDTH];
                    write_varint_fixed(&mut fixed, value);
                    self.inner.write_all(&fixed)?;
                } else {
                    self.inner.write_all(&self.prefix)?;
                }
                self.done = true;
                self.inner.write_all(&buf[i + 1..])?;
                return Ok(buf.len());
            }
            if self.prefix.len() >= 10 {
                return Err(io::Error::other("first varint longer than 10 bytes"));
            }
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
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
    use instant_distance::{Builder, Search};

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

    /// Guards the layout assumption of the module docs: `ef_search` is the
    /// map's first varint, and setting it changes how many results a search
    /// returns without a rebuild.
    #[test]
    fn ef_search_is_the_first_varint_and_can_be_set_at_load() {
        let points: Vec<Point> = (0..400)
            .map(|i| {
                let a = i as f32 * 0.37;
                let v = [a.cos(), a.sin(), (a * 0.5).cos()];
                let n = v.iter().map(|x| x * x).sum::<f32>().sqrt();
                Point::new(&v.map(|x| x / n))
            })
            .collect();
        let values: Vec<u32> = (0..400).collect();
        let map = Builder::default().ef_search(7).ef_construction(40).seed(1).build(points.clone(), values);
        let mut search = Search::default();
        assert_eq!(map.search(&points[0], &mut search).len(), 7);

        let mut plain = postcard::to_stdvec(&map).unwrap();
        assert_eq!(plain[0], 7, "ef_search leads the encoding");
        let mut fixed = Vec::new();
        let w = postcard::to_io(&map, FixedEf::new(&mut fixed)).unwrap();
        w.finish().unwrap();
        assert_eq!(&fixed[..3], &[0x87, 0x80, 0x00]);
        assert_eq!(fixed.len(), plain.len() + 2);

        let total = fixed.len();
        let (wide, used) = take_map(&mut fixed, 300).unwrap();
        assert_eq!(used, total);
        assert_eq!(wide.search(&points[0], &mut search).len(), 300);
        // A one-byte canonical varint widened through the copying path.
        let total = plain.len();
        let (copied, used) = take_map(&mut plain, 200).unwrap();
        assert_eq!(used, total);
        assert_eq!(copied.search(&points[0], &mut search).len(), 200);
        let nearest = copied.search(&points[5], &mut search).next().unwrap();
        assert_eq!(nearest.point, &points[5]);
    }
}
