//! The write-ahead log: the durable buffer between ingest and the lake writer.
//!
//! A body is appended as one record and fsync'ed (many bodies share one fsync: group commit)
//! before its request gets a 2xx. The lake writer commits each table with the highest offset it
//! covers; records are only deleted once every table that needs them has committed past them.
//!
//! # Byte format
//!
//! ```text
//! directory  := segment*            named `{first_offset:020}.wal`, offsets ascending
//! segment    := magic record* [stale]
//!               magic = b"GLWAL\x00\x00\x01" (a new file) or b"GLWAL\x00\x01\x01" (reused)
//! record     := len:u32le crc:u32le offset:u64le payload[len]
//!               crc = CRC-32 (IEEE, `crc32fast`) of offset:u64le ++ payload
//! spare      := `spare-{n}.wal-spare`, a removed segment kept for reuse
//! ```
//!
//! # Reused segments
//!
//! A segment whose records are all removed is not deleted but kept as a spare (up to
//! [`SPARE_SEGMENTS`]), and the next new segment is a spare renamed and written over from the
//! start. Appends then overwrite pages the OS already caches, and `fdatasync` flushes data only,
//! as the file's size does not change. Appending to a new file instead allocates every page
//! afresh and changes the size, which the file system journals on every sync: on the 2-vCPU
//! VMs of `BENCHMARKS.md`, 20 MB appended to a new file took ~180 ms against ~2 ms written over
//! cached pages, and such writes stalled every acknowledgement behind them (issue 3). PostgreSQL
//! recycles its WAL segments for the same reasons.
//!
//! A reused segment holds the old segment's bytes after its own records. They are told apart
//! by the dense offsets: the old records have offsets below the segment's first one, so the
//! segment's records end at the first record that is torn or out of sequence, as a torn tail
//! does. Spares left by a previous process are deleted at open, so that a log started again from
//! offset 0 (its segments removed by hand) never reads an old record as its own.
//!
//! # Invariants
//! - Offsets are dense: each record's offset is the previous one's plus one, across segments;
//!   a segment's first record has the offset in its file name.
//! - Only the last segment may end in a torn record (a crash during a write). Recovery truncates
//!   it at the first record whose header, length or CRC does not check out. A bad record in an
//!   older segment is corruption and [`Wal::open`] refuses with the segment and offset, unless
//!   the segment is a reused one and the next segment starts right after its last record.
//! - A record is durable once [`Wal::sync`] has returned after its [`Wal::append`]. A new
//!   segment is created only after the previous one is synced, and the directory is synced after.
//! - [`Wal::remove_segments_through`] deletes whole segments whose every record is at or below
//!   the given offset, never the segment being written.

use std::fs::{self, File, OpenOptions};
use std::io::{self, IoSlice, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use bytes::Bytes;

const MAGIC: &[u8; 8] = b"GLWAL\x00\x00\x01";
/// The magic of a reused segment: old records may follow its own.
const MAGIC_REUSED: &[u8; 8] = b"GLWAL\x00\x01\x01";
/// Removed segments kept for reuse (see "Reused segments").
pub const SPARE_SEGMENTS: usize = 8;
const SPARE_SUFFIX: &str = ".wal-spare";
/// Buffers handed to one `writev` call (Linux's `IOV_MAX` is 1024).
const MAX_IOVECS: usize = 1024;
const HEADER_BYTES: usize = 16;
/// Records larger than this are refused by [`Wal::append`] and treated as torn by recovery.
pub const MAX_RECORD_BYTES: usize = 1 << 30;

/// Errors of the write-ahead log.
#[derive(Debug, thiserror::Error)]
pub enum WalError {
    #[error("write-ahead log i/o on `{path}`: {source}")]
    Io { path: PathBuf, source: io::Error },
    #[error("write-ahead log segment `{path}` is corrupt at offset {offset}: {what}; it is not the last segment, so this is not a torn write: move the file away to start without it")]
    Corrupt {
        path: PathBuf,
        offset: u64,
        what: &'static str,
    },
    #[error("write-ahead log record of {len} bytes is over the limit of {MAX_RECORD_BYTES} bytes")]
    TooLarge { len: usize },
    #[error("the write-ahead log in `{dir}` is in use by another process (a `gamelake serve` or `gamelake import` of this data dir): stop it first, or send the lines to the running server")]
    InUse { dir: PathBuf },
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> WalError + '_ {
    move |source| WalError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Settings of the log.
#[derive(Debug, Clone)]
pub struct WalConfig {
    /// A new segment is started once the current one is larger than this.
    pub segment_bytes: u64,
}

impl Default for WalConfig {
    fn default() -> Self {
        Self {
            segment_bytes: 64 << 20,
        }
    }
}

/// What recovery found when the log was opened.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Recovery {
    /// Offset of the oldest record kept, if any.
    pub first_offset: Option<u64>,
    /// Offset the next append gets.
    pub next_offset: u64,
    /// Bytes cut from the end of the last segment (a torn write).
    pub truncated_bytes: u64,
    /// Bytes cut from the end of the last segment when it is a reused one: the old segment's
    /// records after its own (and a torn write, if there was one: the two look alike).
    pub reused_tail_bytes: u64,
    pub segments: usize,
}

/// An open log, appended to by one writer.
#[derive(Debug)]
pub struct Wal {
    dir: PathBuf,
    cfg: WalConfig,
    /// (first offset, path) of every segment, ascending; the last is being written.
    segments: Vec<(u64, PathBuf)>,
    /// Removed segments kept for reuse; the last one removed is reused first.
    spares: Vec<PathBuf>,
    /// Names the next spare.
    spare_seq: u64,
    file: File,
    file_bytes: u64,
    /// Record headers and payload parts appended since the last sync, in log order: written
    /// with `writev`, so a payload is not copied before the kernel copies it.
    pending: Vec<Bytes>,
    pending_bytes: usize,
    next_offset: u64,
    /// `LOCK` in the log's directory, locked exclusively while the log is open: two processes
    /// appending to one log would interleave their records.
    _lock: File,
}

/// Name of the lock file in the log's directory.
pub const LOCK_FILE: &str = "LOCK";

impl Wal {
    /// Opens (or creates) the log in `dir`, recovering from a torn tail. Fails with
    /// [`WalError::InUse`] while another process (or another `Wal` of this one) has it open.
    pub fn open(dir: &Path, cfg: WalConfig) -> Result<(Self, Recovery), WalError> {
        fs::create_dir_all(dir).map_err(io_err(dir))?;
        let lock_path = dir.join(LOCK_FILE);
        let lock = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(io_err(&lock_path))?;
        match lock.try_lock() {
            Ok(()) => {}
            Err(fs::TryLockError::WouldBlock) => {
                return Err(WalError::InUse {
                    dir: dir.to_path_buf(),
                })
            }
            Err(fs::TryLockError::Error(e)) => return Err(io_err(&lock_path)(e)),
        }
        remove_spares(dir)?;
        let mut segments = list_segments(dir)?;
        let mut recovery = Recovery::default();
        let mut next_offset = 0;
        for (i, (first, path)) in segments.iter().enumerate() {
            let next = segments.get(i + 1).map(|(f, _)| *f);
            let scan = scan_segment(path, *first)?;
            if let Some(what) = scan.bad {
                match next {
                    // A reused segment's old records follow its own; the log goes on in the
                    // next segment right where they end.
                    Some(n) if scan.reused && n == scan.next_offset => {}
                    Some(_) => {
                        return Err(WalError::Corrupt {
                            path: path.clone(),
                            offset: scan.next_offset,
                            what,
                        })
                    }
                    None => {
                        let len = fs::metadata(path).map_err(io_err(path))?.len();
                        let cut = len - scan.valid_bytes;
                        if scan.reused {
                            recovery.reused_tail_bytes = cut;
                            tracing::debug!(path = %path.display(), bytes = cut, offset = scan.next_offset, "cutting the old records of a reused write-ahead log segment");
                        } else {
                            recovery.truncated_bytes = cut;
                            tracing::warn!(path = %path.display(), bytes = cut, offset = scan.next_offset, reason = what, "truncating torn tail of write-ahead log");
                        }
                        let mut f = OpenOptions::new()
                            .write(true)
                            .open(path)
                            .map_err(io_err(path))?;
                        if scan.valid_bytes < MAGIC.len() as u64 {
                            // Not even the magic made it (a crash while the segment was
                            // created): start the segment again, or appends would follow
                            // nothing that opens as a segment.
                            f.set_len(0).map_err(io_err(path))?;
                            f.write_all(MAGIC).map_err(io_err(path))?;
                        } else {
                            f.set_len(scan.valid_bytes).map_err(io_err(path))?;
                        }
                        f.sync_all().map_err(io_err(path))?;
                    }
                }
            }
            if i > 0 && *first != next_offset {
                return Err(WalError::Corrupt {
                    path: path.clone(),
                    offset: *first,
                    what: "segment does not start where the previous one ended",
                });
            }
            if recovery.first_offset.is_none() && scan.next_offset > *first {
                recovery.first_offset = Some(*first);
            }
            next_offset = scan.next_offset;
        }
        if segments.is_empty() {
            let path = create_segment(dir, 0)?;
            segments.push((0, path));
        }
        let (_, path) = segments.last().expect("at least one segment").clone();
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .open(&path)
            .map_err(io_err(&path))?;
        let file_bytes = file.seek(SeekFrom::End(0)).map_err(io_err(&path))?;
        recovery.next_offset = next_offset;
        recovery.segments = segments.len();
        let wal = Self {
            dir: dir.to_path_buf(),
            cfg,
            segments,
            spares: Vec::new(),
            spare_seq: 0,
            file,
            file_bytes,
            pending: Vec::new(),
            pending_bytes: 0,
            next_offset,
            _lock: lock,
        };
        Ok((wal, recovery))
    }

    /// Buffers one record and returns its offset. Not durable until [`Wal::sync`].
    pub fn append(&mut self, payload: &[u8]) -> Result<u64, WalError> {
        self.append_parts(&[Bytes::copy_from_slice(payload)])
    }

    /// Buffers one record whose payload is `parts` one after the other, without copying them,
    /// and returns its offset. Not durable until [`Wal::sync`].
    pub fn append_parts(&mut self, parts: &[Bytes]) -> Result<u64, WalError> {
        let len: usize = parts.iter().map(Bytes::len).sum();
        if len > MAX_RECORD_BYTES {
            return Err(WalError::TooLarge { len });
        }
        let offset = self.next_offset;
        let mut crc = crc32fast::Hasher::new();
        crc.update(&offset.to_le_bytes());
        for part in parts {
            crc.update(part);
        }
        let mut header = [0u8; HEADER_BYTES];
        header[0..4].copy_from_slice(&(len as u32).to_le_bytes());
        header[4..8].copy_from_slice(&crc.finalize().to_le_bytes());
        header[8..16].copy_from_slice(&offset.to_le_bytes());
        self.pending.push(Bytes::copy_from_slice(&header));
        self.pending
            .extend(parts.iter().filter(|p| !p.is_empty()).cloned());
        self.pending_bytes += HEADER_BYTES + len;
        self.next_offset += 1;
        Ok(offset)
    }

    /// Writes the buffered records and fsyncs them; rolls to a new segment when the current one
    /// is over `segment_bytes`.
    pub fn sync(&mut self) -> Result<(), WalError> {
        if self.pending.is_empty() {
            return Ok(());
        }
        let path = self.active_path().to_path_buf();
        write_all_vectored(&mut self.file, &self.pending).map_err(io_err(&path))?;
        self.file.sync_data().map_err(io_err(&path))?;
        self.file_bytes += self.pending_bytes as u64;
        self.pending.clear();
        self.pending_bytes = 0;
        if self.file_bytes > self.cfg.segment_bytes {
            let first = self.next_offset;
            let path = match self.spares.pop() {
                Some(spare) => reuse_segment(&self.dir, &spare, first)?,
                None => create_segment(&self.dir, first)?,
            };
            self.file = OpenOptions::new()
                .read(true)
                .write(true)
                .open(&path)
                .map_err(io_err(&path))?;
            self.file
                .seek(SeekFrom::Start(MAGIC.len() as u64))
                .map_err(io_err(&path))?;
            self.file_bytes = MAGIC.len() as u64;
            self.segments.push((first, path));
        }
        Ok(())
    }

    /// The offset the next append gets.
    pub fn next_offset(&self) -> u64 {
        self.next_offset
    }

    /// Bytes of all segments and spares on disk.
    pub fn disk_bytes(&self) -> u64 {
        self.segments
            .iter()
            .map(|(_, p)| p)
            .chain(&self.spares)
            .filter_map(|p| fs::metadata(p).ok())
            .map(|m| m.len())
            .sum()
    }

    pub fn segment_count(&self) -> usize {
        self.segments.len()
    }

    /// Bytes of records written to the segment being appended to, its magic included.
    #[cfg(test)]
    pub(crate) fn active_bytes(&self) -> u64 {
        self.file_bytes
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn active_path(&self) -> &Path {
        &self.segments.last().expect("at least one segment").1
    }

    /// Whether [`Wal::remove_segments_through`] would remove a segment.
    pub fn can_remove_through(&self, through: u64) -> bool {
        self.segments.len() > 1 && self.segments[1].0 <= through + 1
    }

    /// Removes every segment whose records all have offsets `<= through`, except the active one:
    /// up to [`SPARE_SEGMENTS`] are kept as spares, the others deleted. Returns how many were
    /// removed.
    pub fn remove_segments_through(&mut self, through: u64) -> Result<usize, WalError> {
        let mut removed = 0;
        while self.can_remove_through(through) {
            let (_, path) = self.segments.remove(0);
            if self.spares.len() < SPARE_SEGMENTS {
                let spare = self
                    .dir
                    .join(format!("spare-{}{SPARE_SUFFIX}", self.spare_seq));
                self.spare_seq += 1;
                fs::rename(&path, &spare).map_err(io_err(&path))?;
                self.spares.push(spare);
            } else {
                fs::remove_file(&path).map_err(io_err(&path))?;
            }
            removed += 1;
        }
        if removed > 0 {
            sync_dir(&self.dir)?;
        }
        Ok(removed)
    }
}

/// Writes every buffer, `MAX_IOVECS` at a time, going on after short writes.
fn write_all_vectored(file: &mut File, bufs: &[Bytes]) -> io::Result<()> {
    for chunk in bufs.chunks(MAX_IOVECS) {
        let mut slices: Vec<IoSlice<'_>> = chunk.iter().map(|b| IoSlice::new(b)).collect();
        let mut slices = &mut slices[..];
        while !slices.is_empty() {
            match file.write_vectored(slices) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => IoSlice::advance_slices(&mut slices, n),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
    }
    Ok(())
}

/// Calls `visit` with each record of offset `>= from`, in order, from a log directory that is
/// not being written (recovery replay). Reads one segment at a time and stops at a torn tail.
pub fn replay_from<E>(
    dir: &Path,
    from: u64,
    mut visit: impl FnMut(u64, &[u8]) -> Result<(), E>,
) -> Result<Result<(), E>, WalError> {
    let segments = list_segments(dir)?;
    for (i, (first, path)) in segments.iter().enumerate() {
        if let Some((next_first, _)) = segments.get(i + 1) {
            if *next_first <= from {
                continue;
            }
        }
        let data = read_segment(path)?;
        for (offset, payload) in Records::new(&data, *first) {
            if offset >= from {
                if let Err(e) = visit(offset, payload) {
                    return Ok(Err(e));
                }
            }
        }
    }
    Ok(Ok(()))
}

/// All records of offset `>= from`, in order (see [`replay_from`]).
pub fn read_from(dir: &Path, from: u64) -> Result<Vec<(u64, Vec<u8>)>, WalError> {
    let mut out = Vec::new();
    replay_from(dir, from, |offset, payload| {
        out.push((offset, payload.to_vec()));
        Ok::<(), ()>(())
    })?
    .expect("visitor never fails");
    Ok(out)
}

struct Scan {
    next_offset: u64,
    valid_bytes: u64,
    bad: Option<&'static str>,
    /// The segment is a reused one (old records may follow its own).
    reused: bool,
}

fn scan_segment(path: &Path, first: u64) -> Result<Scan, WalError> {
    let data = read_segment(path)?;
    let magic = data.get(..MAGIC.len());
    if magic != Some(MAGIC) && magic != Some(MAGIC_REUSED) {
        return Ok(Scan {
            next_offset: first,
            valid_bytes: 0,
            bad: Some("bad segment header"),
            reused: false,
        });
    }
    let mut records = Records::new(&data, first);
    records.by_ref().for_each(drop);
    Ok(Scan {
        next_offset: records.expected,
        valid_bytes: records.pos as u64,
        bad: records.stop,
        reused: magic == Some(MAGIC_REUSED),
    })
}

fn read_segment(path: &Path) -> Result<Vec<u8>, WalError> {
    let mut data = Vec::new();
    File::open(path)
        .map_err(io_err(path))?
        .read_to_end(&mut data)
        .map_err(io_err(path))?;
    Ok(data)
}

/// The records of a segment's bytes, in order from its first offset: (offset, payload). They
/// end at the end of the bytes, at a torn record, or at a record out of sequence (a reused
/// segment's old records); `stop` then says which, `pos` is where the segment's records end and
/// `expected` the offset after them.
struct Records<'a> {
    data: &'a [u8],
    pos: usize,
    expected: u64,
    stop: Option<&'static str>,
}

impl<'a> Records<'a> {
    fn new(data: &'a [u8], first: u64) -> Self {
        Self {
            data,
            pos: MAGIC.len(),
            expected: first,
            stop: None,
        }
    }
}

impl<'a> Iterator for Records<'a> {
    type Item = (u64, &'a [u8]);

    fn next(&mut self) -> Option<Self::Item> {
        if self.stop.is_some() || self.pos >= self.data.len() {
            return None;
        }
        match decode_record(self.data, self.pos) {
            Some((offset, payload, next)) if offset == self.expected => {
                self.expected += 1;
                self.pos = next;
                Some((offset, payload))
            }
            Some(_) => {
                self.stop = Some("offset out of sequence");
                None
            }
            None => {
                self.stop = Some("torn or corrupt record");
                None
            }
        }
    }
}

/// Decodes the record at `pos`: (offset, payload, position after it), or `None` if it is torn.
fn decode_record(data: &[u8], pos: usize) -> Option<(u64, &[u8], usize)> {
    let header = data.get(pos..pos + HEADER_BYTES)?;
    let len = u32::from_le_bytes(header[0..4].try_into().ok()?) as usize;
    let crc = u32::from_le_bytes(header[4..8].try_into().ok()?);
    let offset_bytes = &header[8..16];
    if len > MAX_RECORD_BYTES {
        return None;
    }
    let payload = data.get(pos + HEADER_BYTES..pos + HEADER_BYTES + len)?;
    let mut h = crc32fast::Hasher::new();
    h.update(offset_bytes);
    h.update(payload);
    if h.finalize() != crc {
        return None;
    }
    let offset = u64::from_le_bytes(offset_bytes.try_into().ok()?);
    Some((offset, payload, pos + HEADER_BYTES + len))
}

fn list_segments(dir: &Path) -> Result<Vec<(u64, PathBuf)>, WalError> {
    let mut segments = Vec::new();
    for entry in fs::read_dir(dir).map_err(io_err(dir))? {
        let entry = entry.map_err(io_err(dir))?;
        let name = entry.file_name();
        let Some(stem) = name.to_str().and_then(|n| n.strip_suffix(".wal")) else {
            continue;
        };
        if let Ok(first) = stem.parse::<u64>() {
            segments.push((first, entry.path()));
        }
    }
    segments.sort();
    Ok(segments)
}

fn create_segment(dir: &Path, first: u64) -> Result<PathBuf, WalError> {
    let path = dir.join(format!("{first:020}.wal"));
    let mut f = OpenOptions::new()
        .create(true)
        .truncate(true)
        .write(true)
        .open(&path)
        .map_err(io_err(&path))?;
    f.write_all(MAGIC).map_err(io_err(&path))?;
    f.sync_all().map_err(io_err(&path))?;
    sync_dir(dir)?;
    Ok(path)
}

/// Makes `spare` the segment of `first`: marks it reused, then renames it. A crash in between
/// leaves a spare (deleted at open) or a reused segment whose old records recovery cuts.
fn reuse_segment(dir: &Path, spare: &Path, first: u64) -> Result<PathBuf, WalError> {
    let path = dir.join(format!("{first:020}.wal"));
    let mut f = OpenOptions::new()
        .write(true)
        .open(spare)
        .map_err(io_err(spare))?;
    f.write_all(MAGIC_REUSED).map_err(io_err(spare))?;
    f.sync_data().map_err(io_err(spare))?;
    fs::rename(spare, &path).map_err(io_err(spare))?;
    sync_dir(dir)?;
    Ok(path)
}

/// Deletes the spares a previous process left.
fn remove_spares(dir: &Path) -> Result<(), WalError> {
    let mut removed = false;
    for entry in fs::read_dir(dir).map_err(io_err(dir))? {
        let path = entry.map_err(io_err(dir))?.path();
        if path.to_str().is_some_and(|p| p.ends_with(SPARE_SUFFIX)) {
            fs::remove_file(&path).map_err(io_err(&path))?;
            removed = true;
        }
    }
    if removed {
        sync_dir(dir)?;
    }
    Ok(())
}

fn sync_dir(dir: &Path) -> Result<(), WalError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io_err(dir))
}

#[cfg(test)]
mod tests;
