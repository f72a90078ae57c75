//! Remembered answers of bodies sent with an `Idempotency-Key`, so that a resend within the
//! window gets the first answer again instead of writing the lines twice.
//!
//! Survives crashes: the keys of records still in the write-ahead log are re-learned on replay,
//! and before segments are deleted the remembered keys are written to `idempotency.json` beside
//! the log (atomically, by rename).

use std::collections::HashMap;
use std::path::Path;
use std::sync::Mutex;

use serde::{Deserialize, Serialize};

/// The answer given to a body.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Answer {
    pub accepted: usize,
    pub dead_lettered: usize,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
enum Entry {
    InFlight { since_ms: i64 },
    Done { at_ms: i64, answer: Answer },
}

/// What [`IdempotencyStore::begin`] found.
#[derive(Debug, PartialEq, Eq)]
pub enum Begin {
    /// First time: go ahead, then call `finish` or `abort`.
    New,
    /// Seen and answered: give this answer again.
    Replay(Answer),
    /// Another request with this key is being processed right now.
    InFlight,
}

/// Keys scoped by source (API key id).
#[derive(Debug)]
pub struct IdempotencyStore {
    window_ms: i64,
    entries: Mutex<HashMap<String, Entry>>,
}

fn scoped(source: &str, key: &str) -> String {
    format!("{source}\u{0}{key}")
}

impl IdempotencyStore {
    pub fn new(window_s: u64) -> Self {
        Self {
            window_ms: window_s as i64 * 1000,
            entries: Mutex::new(HashMap::new()),
        }
    }

    pub fn begin(&self, source: &str, key: &str, now_ms: i64) -> Begin {
        let mut map = self.entries.lock().expect("idempotency lock");
        match map.get(&scoped(source, key)) {
            Some(Entry::Done { at_ms, answer }) if now_ms - at_ms <= self.window_ms => {
                Begin::Replay(*answer)
            }
            // A request stuck for longer than a minute is taken as lost.
            Some(Entry::InFlight { since_ms }) if now_ms - since_ms < 60_000 => Begin::InFlight,
            _ => {
                map.insert(scoped(source, key), Entry::InFlight { since_ms: now_ms });
                Begin::New
            }
        }
    }

    pub fn finish(&self, source: &str, key: &str, at_ms: i64, answer: Answer) {
        let mut map = self.entries.lock().expect("idempotency lock");
        if map.len() > 100_000 {
            let window = self.window_ms;
            map.retain(|_, e| {
                matches!(e, Entry::Done { at_ms: t, .. } if at_ms - *t <= window)
                    || matches!(e, Entry::InFlight { .. })
            });
        }
        map.insert(scoped(source, key), Entry::Done { at_ms, answer });
    }

    pub fn abort(&self, source: &str, key: &str) {
        self.entries
            .lock()
            .expect("idempotency lock")
            .remove(&scoped(source, key));
    }

    /// Writes the answered keys still inside the window to `path` (write, fsync, rename).
    pub fn save(&self, path: &Path, now_ms: i64) -> std::io::Result<()> {
        let done: HashMap<String, Entry> = {
            let map = self.entries.lock().expect("idempotency lock");
            map.iter()
                .filter(|(_, e)| matches!(e, Entry::Done { at_ms, .. } if now_ms - at_ms <= self.window_ms))
                .map(|(k, e)| (k.clone(), e.clone()))
                .collect()
        };
        let tmp = path.with_extension("json.tmp");
        let data = serde_json::to_vec(&done).map_err(std::io::Error::other)?;
        {
            use std::io::Write;
            let mut f = std::fs::File::create(&tmp)?;
            f.write_all(&data)?;
            f.sync_all()?;
        }
        std::fs::rename(&tmp, path)
    }

    /// Loads keys saved by [`IdempotencyStore::save`]; a missing file is no error.
    pub fn load(&self, path: &Path) -> std::io::Result<usize> {
        let data = match std::fs::read(path) {
            Ok(d) => d,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(0),
            Err(e) => return Err(e),
        };
        let saved: HashMap<String, Entry> =
            serde_json::from_slice(&data).map_err(std::io::Error::other)?;
        let n = saved.len();
        self.entries.lock().expect("idempotency lock").extend(saved);
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replays_within_the_window_only() {
        let s = IdempotencyStore::new(10);
        let a = Answer {
            accepted: 3,
            dead_lettered: 1,
        };
        assert_eq!(s.begin("src", "k", 0), Begin::New);
        assert_eq!(s.begin("src", "k", 1), Begin::InFlight);
        s.finish("src", "k", 2, a);
        assert_eq!(s.begin("src", "k", 5_000), Begin::Replay(a));
        assert_eq!(
            s.begin("other", "k", 5_000),
            Begin::New,
            "keys are scoped by source"
        );
        assert_eq!(s.begin("src", "k", 20_000), Begin::New, "window passed");
    }

    #[test]
    fn save_and_load() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("idempotency.json");
        let s = IdempotencyStore::new(10);
        s.begin("src", "k", 0);
        s.finish(
            "src",
            "k",
            0,
            Answer {
                accepted: 1,
                dead_lettered: 0,
            },
        );
        s.save(&path, 1).unwrap();
        let t = IdempotencyStore::new(10);
        assert_eq!(t.load(&path).unwrap(), 1);
        assert_eq!(
            t.begin("src", "k", 2),
            Begin::Replay(Answer {
                accepted: 1,
                dead_lettered: 0
            })
        );
    }
}
