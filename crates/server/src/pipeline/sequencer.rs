//! The one thread that owns the write-ahead log: appends bodies in arrival order, fsyncs each
//! group once, forwards the parsed bodies to the dispatcher in offset order, then answers.

use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::mpsc::Receiver;
use std::sync::Arc;

use bytes::Bytes;
use gamelake_parse::ParsedBody;
use gamelake_wal::Wal;
use tokio::sync::{mpsc, oneshot};

use super::idempotency::IdempotencyStore;
use super::tables::Dispatch;
use crate::metrics::Metrics;

/// Work for the sequencer. Nearly every message is an `Append`, so boxing it to shrink the rare
/// `Trim` would only add an allocation per request.
#[allow(clippy::large_enum_variant)]
pub enum WalMsg {
    Append {
        /// The record's payload in pieces, written without being copied together.
        parts: [Bytes; 2],
        parsed: ParsedBody,
        bytes: u64,
        reply: oneshot::Sender<Result<u64, String>>,
    },
    /// Delete segments whose records are all at or below this offset.
    Trim(u64),
}

/// A body appended to the log, waiting for the group's fsync: (offset, parsed, bytes, reply).
type Appended = (u64, ParsedBody, u64, oneshot::Sender<Result<u64, String>>);

/// Bodies gathered into one fsync at most.
const MAX_GROUP_MESSAGES: usize = 4096;
const MAX_GROUP_BYTES: usize = 64 << 20;

pub struct Sequencer {
    pub wal: Wal,
    pub dispatch: mpsc::UnboundedSender<Dispatch>,
    pub metrics: Arc<Metrics>,
    pub idempotency: Arc<IdempotencyStore>,
    pub idempotency_path: PathBuf,
}

impl Sequencer {
    /// Runs until every sender of `rx` is gone. Returns an error text if the log failed; the
    /// bodies of the failed group were answered with an error and are not durable.
    pub fn run(mut self, rx: Receiver<WalMsg>) -> Result<(), String> {
        let mut group: Vec<Appended> = Vec::new();
        loop {
            let first = match rx.recv() {
                Ok(m) => m,
                Err(_) => return Ok(()),
            };
            let mut bytes = 0usize;
            let mut next = Some(first);
            while let Some(msg) = next.take() {
                match msg {
                    WalMsg::Append {
                        parts,
                        parsed,
                        bytes: body_bytes,
                        reply,
                    } => {
                        bytes += parts.iter().map(Bytes::len).sum::<usize>();
                        match self.wal.append_parts(&parts) {
                            Ok(offset) => group.push((offset, parsed, body_bytes, reply)),
                            Err(e) => {
                                let _ = reply.send(Err(e.to_string()));
                            }
                        }
                    }
                    WalMsg::Trim(through) => self.trim(through),
                }
                if group.len() >= MAX_GROUP_MESSAGES || bytes >= MAX_GROUP_BYTES {
                    break;
                }
                next = rx.try_recv().ok();
            }
            if group.is_empty() {
                continue;
            }
            if let Err(e) = self.wal.sync() {
                let text = format!("write-ahead log failed: {e}");
                tracing::error!(error = %e, "write-ahead log sync failed; ingest stops");
                for (_, _, _, reply) in group.drain(..) {
                    let _ = reply.send(Err(text.clone()));
                }
                return Err(text);
            }
            self.metrics.wal_syncs.fetch_add(1, Ordering::Relaxed);
            self.metrics
                .wal_next_offset
                .store(self.wal.next_offset(), Ordering::Relaxed);
            for (offset, parsed, body_bytes, reply) in group.drain(..) {
                // Dispatch first: the dispatcher must see offsets in order, answered or not.
                let _ = self.dispatch.send(Dispatch {
                    offset,
                    parsed,
                    bytes: body_bytes,
                });
                let _ = reply.send(Ok(offset));
            }
        }
    }

    fn trim(&mut self, through: u64) {
        // The idempotency keys are saved before segments holding them go; nothing to save
        // when no segment would.
        if self.wal.can_remove_through(through) {
            let now_ms = chrono::Utc::now().timestamp_millis();
            match self.idempotency.save(&self.idempotency_path, now_ms) {
                Err(e) => {
                    tracing::warn!(error = %e, "cannot save idempotency keys; keeping log segments")
                }
                Ok(()) => match self.wal.remove_segments_through(through) {
                    Ok(n) => tracing::debug!(removed = n, through, "trimmed write-ahead log"),
                    Err(e) => tracing::warn!(error = %e, "cannot trim write-ahead log"),
                },
            }
        }
        self.metrics
            .wal_bytes
            .store(self.wal.disk_bytes(), Ordering::Relaxed);
        self.metrics
            .wal_segments
            .store(self.wal.segment_count() as u64, Ordering::Relaxed);
    }
}
