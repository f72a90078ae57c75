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
//! segment    := magic record*       magic = b"GLWAL\x00\x00\x01" (8 bytes)
//! record     := len:u32le crc:u32le offset:u64le payload[len]
//!               crc = CRC-32 (IEEE, `crc32fast`) of offset:u64le ++ payload
//! ```
//!
//! # Invariants
//! - Offsets are dense: each record's offset is the previous one's plus one, across segments;
//!   a segment's first record has the offset in its file name.
//! - Only the last segment may end in a torn record (a crash during a write). Recovery truncates
//!   it at the first record whose header, length or CRC does not check out. A bad record in an
//!   older segment is corruption and [`Wal::open`] refuses with the segment and offset.
//! - A record is durable once [`Wal::sync`] has returned after its [`Wal::append`]. A new
//!   segment is created only after the previous one is synced, and the directory is synced after.
//! - [`Wal::remove_segments_through`] deletes whole segments whose every record is at or below
//!   the given offset, never the segment being written.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

const MAGIC: &[u8; 8] = b"GLWAL\x00\x00\x01";
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
    pub segments: usize,
}

/// An open log, appended to by one writer.
#[derive(Debug)]
pub struct Wal {
    dir: PathBuf,
    cfg: WalConfig,
    /// (first offset, path) of every segment, ascending; the last is being written.
    segments: Vec<(u64, PathBuf)>,
    file: File,
    file_bytes: u64,
    pending: Vec<u8>,
    next_offset: u64,
    unsynced: bool,
}

impl Wal {
    /// Opens (or creates) the log in `dir`, recovering from a torn tail.
    pub fn open(dir: &Path, cfg: WalConfig) -> Result<(Self, Recovery), WalError> {
        fs::create_dir_all(dir).map_err(io_err(dir))?;
        let mut segments = list_segments(dir)?;
        let mut recovery = Recovery::default();
        let mut next_offset = 0;
        for (i, (first, path)) in segments.iter().enumerate() {
            let last = i + 1 == segments.len();
            let scan = scan_segment(path, *first)?;
            if let Some(what) = scan.bad {
                if !last {
                    return Err(WalError::Corrupt {
                        path: path.clone(),
                        offset: scan.next_offset,
                        what,
                    });
                }
                let len = fs::metadata(path).map_err(io_err(path))?.len();
                recovery.truncated_bytes = len - scan.valid_bytes;
                tracing::warn!(path = %path.display(), bytes = recovery.truncated_bytes, offset = scan.next_offset, reason = what, "truncating torn tail of write-ahead log");
                let f = OpenOptions::new()
                    .write(true)
                    .open(path)
                    .map_err(io_err(path))?;
                f.set_len(scan.valid_bytes).map_err(io_err(path))?;
                f.sync_all().map_err(io_err(path))?;
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
            file,
            file_bytes,
            pending: Vec::new(),
            next_offset,
            unsynced: false,
        };
        Ok((wal, recovery))
    }

    /// Buffers one record and returns its offset. Not durable until [`Wal::sync`].
    pub fn append(&mut self, payload: &[u8]) -> Result<u64, WalError> {
        if payload.len() > MAX_RECORD_BYTES {
            return Err(WalError::TooLarge { len: payload.len() });
        }
        let offset = self.next_offset;
        let mut crc = crc32fast::Hasher::new();
        crc.update(&offset.to_le_bytes());
        crc.update(payload);
        self.pending
            .extend_from_slice(&(payload.len() as u32).to_le_bytes());
        self.pending
            .extend_from_slice(&crc.finalize().to_le_bytes());
        self.pending.extend_from_slice(&offset.to_le_bytes());
        self.pending.extend_from_slice(payload);
        self.next_offset += 1;
        self.unsynced = true;
        Ok(offset)
    }

    /// Writes the buffered records and fsyncs them; rolls to a new segment when the current one
    /// is over `segment_bytes`.
    pub fn sync(&mut self) -> Result<(), WalError> {
        if !self.unsynced {
            return Ok(());
        }
        let path = self.active_path().to_path_buf();
        self.file.write_all(&self.pending).map_err(io_err(&path))?;
        self.file.sync_data().map_err(io_err(&path))?;
        self.file_bytes += self.pending.len() as u64;
        self.pending.clear();
        self.unsynced = false;
        if self.file_bytes > self.cfg.segment_bytes {
            let path = create_segment(&self.dir, self.next_offset)?;
            self.file = OpenOptions::new()
                .read(true)
                .write(true)
                .open(&path)
                .map_err(io_err(&path))?;
            self.file.seek(SeekFrom::End(0)).map_err(io_err(&path))?;
            self.file_bytes = MAGIC.len() as u64;
            self.segments.push((self.next_offset, path));
        }
        Ok(())
    }

    /// The offset the next append gets.
    pub fn next_offset(&self) -> u64 {
        self.next_offset
    }

    /// Bytes of all segments on disk.
    pub fn disk_bytes(&self) -> u64 {
        self.segments
            .iter()
            .filter_map(|(_, p)| fs::metadata(p).ok())
            .map(|m| m.len())
            .sum()
    }

    pub fn segment_count(&self) -> usize {
        self.segments.len()
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn active_path(&self) -> &Path {
        &self.segments.last().expect("at least one segment").1
    }

    /// Deletes every segment whose records all have offsets `<= through`, except the active one.
    /// Returns how many were deleted.
    pub fn remove_segments_through(&mut self, through: u64) -> Result<usize, WalError> {
        let mut removed = 0;
        while self.segments.len() > 1 && self.segments[1].0 <= through + 1 {
            let (_, path) = self.segments.remove(0);
            fs::remove_file(&path).map_err(io_err(&path))?;
            removed += 1;
        }
        if removed > 0 {
            sync_dir(&self.dir)?;
        }
        Ok(removed)
    }
}

/// Calls `visit` with each record of offset `>= from`, in order, from a log directory that is
/// not being written (recovery replay). Reads one segment at a time and stops at a torn tail.
pub fn replay_from<E>(
    dir: &Path,
    from: u64,
    mut visit: impl FnMut(u64, &[u8]) -> Result<(), E>,
) -> Result<Result<(), E>, WalError> {
    let segments = list_segments(dir)?;
    for (i, (_, path)) in segments.iter().enumerate() {
        if let Some((next_first, _)) = segments.get(i + 1) {
            if *next_first <= from {
                continue;
            }
        }
        let mut data = Vec::new();
        File::open(path)
            .map_err(io_err(path))?
            .read_to_end(&mut data)
            .map_err(io_err(path))?;
        let mut pos = MAGIC.len();
        while let Some((offset, payload, next)) = decode_record(&data, pos) {
            if offset >= from {
                if let Err(e) = visit(offset, payload) {
                    return Ok(Err(e));
                }
            }
            pos = next;
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
}

fn scan_segment(path: &Path, first: u64) -> Result<Scan, WalError> {
    let mut data = Vec::new();
    File::open(path)
        .map_err(io_err(path))?
        .read_to_end(&mut data)
        .map_err(io_err(path))?;
    if data.len() < MAGIC.len() || &data[..MAGIC.len()] != MAGIC {
        return Ok(Scan {
            next_offset: first,
            valid_bytes: 0,
            bad: Some("bad segment header"),
        });
    }
    let mut pos = MAGIC.len();
    let mut expected = first;
    loop {
        if pos == data.len() {
            return Ok(Scan {
                next_offset: expected,
                valid_bytes: pos as u64,
                bad: None,
            });
        }
        match decode_record(&data, pos) {
            Some((offset, _, next)) if offset == expected => {
                expected += 1;
                pos = next;
            }
            Some(_) => {
                return Ok(Scan {
                    next_offset: expected,
                    valid_bytes: pos as u64,
                    bad: Some("offset out of sequence"),
                })
            }
            None => {
                return Ok(Scan {
                    next_offset: expected,
                    valid_bytes: pos as u64,
                    bad: Some("torn or corrupt record"),
                })
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

fn sync_dir(dir: &Path) -> Result<(), WalError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io_err(dir))
}

#[cfg(test)]
mod tests;
