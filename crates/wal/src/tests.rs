//! The log against a trivial in-memory model, with crashes (lost unsynced buffers) and torn tails.

use std::fs;

use proptest::prelude::*;

use super::*;

#[derive(Debug, Clone)]
enum Action {
    Append(Vec<u8>),
    Sync,
    /// Drop the log without syncing (a crash) and open it again.
    Crash,
    /// Cut this many bytes (at least 1) from the last synced record of the active segment.
    Tear(usize),
    RemoveThrough(u64),
}

fn action() -> impl Strategy<Value = Action> {
    prop_oneof![
        5 => prop::collection::vec(any::<u8>(), 0..300).prop_map(Action::Append),
        3 => Just(Action::Sync),
        1 => Just(Action::Crash),
        1 => (1usize..400).prop_map(Action::Tear),
        1 => (0u64..60).prop_map(Action::RemoveThrough),
    ]
}

fn segment_files(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "wal"))
        .collect();
    v.sort();
    v
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]
    #[test]
    fn log_matches_model(actions in prop::collection::vec(action(), 1..80)) {
        let dir = tempfile::tempdir().unwrap();
        let cfg = WalConfig { segment_bytes: 1024 };
        let (mut wal, _) = Wal::open(dir.path(), cfg.clone()).unwrap();
        // Durable records (offset, payload) and records appended but not yet synced.
        let mut synced: Vec<(u64, Vec<u8>)> = Vec::new();
        let mut pending: Vec<(u64, Vec<u8>)> = Vec::new();
        // The offset after the last durable record, and after the last appended one.
        let mut durable_next = 0u64;
        let mut next = 0u64;
        for a in actions {
            match a {
                Action::Append(p) => {
                    let off = wal.append(&p).unwrap();
                    prop_assert_eq!(off, next);
                    next += 1;
                    pending.push((off, p));
                }
                Action::Sync => {
                    wal.sync().unwrap();
                    synced.append(&mut pending);
                    durable_next = next;
                }
                Action::Crash => {
                    drop(wal);
                    pending.clear();
                    let (w, rec) = Wal::open(dir.path(), cfg.clone()).unwrap();
                    prop_assert_eq!(rec.truncated_bytes, 0);
                    prop_assert_eq!(rec.next_offset, durable_next);
                    next = durable_next;
                    wal = w;
                }
                Action::Tear(n) => {
                    // Where the records end: a reused segment has old bytes after them.
                    let len = wal.active_bytes();
                    drop(wal);
                    pending.clear();
                    let last = segment_files(dir.path()).pop().unwrap();
                    let in_active = len > MAGIC.len() as u64;
                    if let Some((off, payload)) = synced.last().filter(|_| in_active).cloned() {
                        let record_bytes = (HEADER_BYTES + payload.len()) as u64;
                        let cut = (n as u64).min(record_bytes);
                        let f = OpenOptions::new().write(true).open(&last).unwrap();
                        f.set_len(len - cut).unwrap();
                        synced.pop();
                        durable_next = off;
                    }
                    let (w, rec) = Wal::open(dir.path(), cfg.clone()).unwrap();
                    prop_assert_eq!(rec.next_offset, durable_next);
                    next = durable_next;
                    wal = w;
                }
                Action::RemoveThrough(through) => {
                    wal.remove_segments_through(through).unwrap();
                    // Nothing above `through` may go.
                    let kept = read_from(dir.path(), 0).unwrap();
                    let model_above: Vec<u64> = synced.iter().map(|(o, _)| *o).filter(|o| *o > through).collect();
                    let kept_above: Vec<u64> = kept.iter().map(|(o, _)| *o).filter(|o| *o > through).collect();
                    prop_assert_eq!(kept_above, model_above);
                    synced.retain(|(o, _)| kept.iter().any(|(k, _)| k == o));
                }
            }
            // What a replay reads is exactly the durable records that were not removed.
            let on_disk = read_from(dir.path(), 0).unwrap();
            prop_assert_eq!(&on_disk, &synced);
        }
    }
}

#[test]
fn reopen_continues_offsets_and_reads_from_offset() {
    let dir = tempfile::tempdir().unwrap();
    let (mut wal, rec) = Wal::open(dir.path(), WalConfig { segment_bytes: 64 }).unwrap();
    assert_eq!(rec.next_offset, 0);
    for i in 0..10u8 {
        wal.append(&[i; 40]).unwrap();
        wal.sync().unwrap();
    }
    assert!(wal.segment_count() > 3);
    drop(wal);
    let (mut wal, rec) = Wal::open(dir.path(), WalConfig { segment_bytes: 64 }).unwrap();
    assert_eq!(rec.next_offset, 10);
    assert_eq!(wal.append(b"x").unwrap(), 10);
    wal.sync().unwrap();
    let tail = read_from(dir.path(), 7).unwrap();
    assert_eq!(
        tail.iter().map(|(o, _)| *o).collect::<Vec<_>>(),
        [7, 8, 9, 10]
    );
    assert_eq!(tail[0].1, vec![7u8; 40]);
    let before = wal.segment_count();
    let removed = wal.remove_segments_through(5).unwrap();
    assert!(removed > 0 && wal.segment_count() == before - removed);
    let rest = read_from(dir.path(), 0).unwrap();
    assert!(rest.first().unwrap().0 <= 6, "offset 6 must be kept");
}

#[test]
fn corruption_in_an_old_segment_is_refused_with_its_name() {
    let dir = tempfile::tempdir().unwrap();
    let (mut wal, _) = Wal::open(dir.path(), WalConfig { segment_bytes: 64 }).unwrap();
    for i in 0..6u8 {
        wal.append(&[i; 40]).unwrap();
        wal.sync().unwrap();
    }
    drop(wal);
    let first = segment_files(dir.path()).remove(0);
    let mut data = fs::read(&first).unwrap();
    let n = data.len();
    data[n - 1] ^= 0xff;
    fs::write(&first, data).unwrap();
    let err = Wal::open(dir.path(), WalConfig { segment_bytes: 64 }).unwrap_err();
    assert!(
        err.to_string().contains("00000000000000000000.wal"),
        "{err}"
    );
}

#[test]
fn a_log_open_elsewhere_is_refused_until_it_is_closed() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = WalConfig::default();
    let (wal, _) = Wal::open(dir.path(), cfg.clone()).unwrap();
    let Err(err) = Wal::open(dir.path(), cfg.clone()) else {
        panic!("a second open of the log is refused")
    };
    assert!(matches!(err, WalError::InUse { .. }), "{err}");
    assert!(
        err.to_string().contains("in use by another process"),
        "{err}"
    );
    drop(wal);
    Wal::open(dir.path(), cfg).expect("opens once closed");
}

#[test]
fn reused_segments_never_replay_their_old_records() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = WalConfig { segment_bytes: 200 };
    let (mut wal, _) = Wal::open(dir.path(), cfg.clone()).unwrap();
    // Records of one size, so that an old record starts exactly where a new segment's records
    // end: only the offsets tell them apart.
    let mut offset = 0u8;
    let mut append_synced = |wal: &mut Wal, n: usize| {
        for _ in 0..n {
            assert_eq!(wal.append(&[offset; 40]).unwrap(), offset as u64);
            offset += 1;
            wal.sync().unwrap();
        }
    };
    append_synced(&mut wal, 12);
    let before = wal.segment_count();
    assert!(before >= 3, "{before} segments");
    let removed = wal.remove_segments_through(7).unwrap();
    assert!(removed >= 1);
    let spares = fs::read_dir(dir.path())
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .unwrap()
                .path()
                .to_str()
                .unwrap()
                .ends_with(SPARE_SUFFIX)
        })
        .count();
    assert_eq!(spares, removed, "removed segments are kept as spares");
    let disk_before = wal.disk_bytes();
    // Fewer records than the reused segment held: its old records follow the new ones.
    append_synced(&mut wal, 6);
    let reused: Vec<PathBuf> = segment_files(dir.path())
        .into_iter()
        .filter(|p| fs::read(p).unwrap().starts_with(MAGIC_REUSED))
        .collect();
    assert!(!reused.is_empty(), "a spare was reused");
    assert!(wal.disk_bytes() >= disk_before);
    let expect: Vec<u64> = read_from(dir.path(), 0)
        .unwrap()
        .iter()
        .map(|(o, _)| *o)
        .collect();
    assert_eq!(expect.last(), Some(&17));
    assert!(expect.windows(2).all(|w| w[1] == w[0] + 1), "{expect:?}");
    drop(wal);

    let (mut wal, rec) = Wal::open(dir.path(), cfg.clone()).unwrap();
    assert_eq!(rec.next_offset, 18);
    assert_eq!(rec.truncated_bytes, 0, "old records are not a torn write");
    let after: Vec<u64> = read_from(dir.path(), 0)
        .unwrap()
        .iter()
        .map(|(o, _)| *o)
        .collect();
    assert_eq!(after, expect);
    assert_eq!(
        fs::read_dir(dir.path())
            .unwrap()
            .filter(|e| e
                .as_ref()
                .unwrap()
                .path()
                .to_str()
                .unwrap()
                .ends_with(SPARE_SUFFIX))
            .count(),
        0,
        "spares of an earlier process are deleted at open"
    );
    assert_eq!(wal.append(b"x").unwrap(), 18);
    wal.sync().unwrap();
    assert_eq!(
        read_from(dir.path(), 18).unwrap(),
        vec![(18, b"x".to_vec())]
    );
}

#[test]
fn a_segment_without_its_magic_starts_again() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = WalConfig { segment_bytes: 100 };
    let (mut wal, _) = Wal::open(dir.path(), cfg.clone()).unwrap();
    wal.append(&[1; 40]).unwrap();
    wal.sync().unwrap();
    wal.append(&[2; 40]).unwrap();
    wal.sync().unwrap();
    drop(wal);
    // A crash while the next segment was created: its file exists, empty.
    let last = segment_files(dir.path()).pop().unwrap();
    fs::write(&last, b"").unwrap();
    let (mut wal, rec) = Wal::open(dir.path(), cfg.clone()).unwrap();
    assert_eq!(rec.next_offset, 2);
    assert_eq!(wal.append(&[3; 40]).unwrap(), 2);
    wal.sync().unwrap();
    drop(wal);
    let (_, rec) = Wal::open(dir.path(), cfg).unwrap();
    assert_eq!(
        rec.next_offset, 3,
        "the record after the restart is durable"
    );
    assert_eq!(read_from(dir.path(), 2).unwrap(), vec![(2, vec![3; 40])]);
}
