//! Parser throughput on a file of log lines, one thread: the per-line cost of the ingest hot
//! path without HTTP, WAL or Parquet.
//!
//!   gamelake loadgen --dry-run --out /tmp/lines.log --format ndjson --rate 200000 --duration 2s
//!   cargo run --release --example parse_speed -- /tmp/lines.log [LINES_PER_BODY] [ROUNDS]
//!
//! Prints the best and the median nanoseconds per line over the rounds, and the memory the
//! parsed batches hold per byte of input (what an uncommitted body costs until its commit), and
//! on stderr the twelve silver columns that hold the most.

use std::time::Instant;

use gamelake_parse::{BodyParser, IngestMeta, ParseConfig, SchemaHints};

// The allocator of the `gamelake` binary.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() {
    let mut args = std::env::args().skip(1);
    let path = args
        .next()
        .expect("usage: parse_speed FILE [LINES_PER_BODY] [ROUNDS]");
    let per_body: usize = args
        .next()
        .map_or(2000, |a| a.parse().expect("lines per body"));
    let rounds: usize = args.next().map_or(9, |a| a.parse().expect("rounds"));
    let text = std::fs::read(&path).expect("reading the lines");
    let lines: Vec<&[u8]> = text
        .split(|b| *b == b'\n')
        .filter(|l| !l.is_empty())
        .collect();
    let bodies: Vec<Vec<u8>> = lines
        .chunks(per_body)
        .map(|chunk| chunk.join(&b'\n'))
        .collect();
    let meta = IngestMeta {
        ingest_time_us: 1_764_300_000_000_000,
        source: "bench".into(),
    };
    let hints = SchemaHints::new();
    let mut parser = BodyParser::new(ParseConfig::default()).expect("parser");
    let mut per_line = Vec::with_capacity(rounds);
    let mut rows = 0;
    for _ in 0..rounds {
        let started = Instant::now();
        rows = 0;
        for body in &bodies {
            let parsed = parser.parse_body(body, &meta, &hints);
            rows += parsed.lines();
        }
        per_line.push(started.elapsed().as_nanos() as f64 / rows as f64);
    }
    per_line.sort_by(f64::total_cmp);
    let (mut bronze, mut silver, mut input) = (0usize, 0usize, 0usize);
    let mut by_column: std::collections::BTreeMap<String, usize> = Default::default();
    for body in &bodies {
        let parsed = parser.parse_body(body, &meta, &hints);
        input += body.len();
        for b in parsed.raw_logs.iter().chain(parsed.dead_letters.iter()) {
            bronze += b.get_array_memory_size();
        }
        for (_, b) in &parsed.silver {
            silver += b.get_array_memory_size();
            for (f, c) in b.schema().fields().iter().zip(b.columns()) {
                *by_column
                    .entry(format!("{}:{}", f.name(), f.data_type()))
                    .or_default() += c.get_array_memory_size();
            }
        }
    }
    let mut cols: Vec<_> = by_column.into_iter().collect();
    cols.sort_by_key(|(_, n)| std::cmp::Reverse(*n));
    for (c, n) in cols.iter().take(12) {
        eprintln!("{c}: {:.3}", *n as f64 / input as f64);
    }
    let held = bronze + silver;
    println!(
        "{rows} lines in {} bodies: best {:.0} ns/line, median {:.0} ns/line",
        bodies.len(),
        per_line[0],
        per_line[per_line.len() / 2]
    );
    println!(
        "parsed batches hold {:.2} bytes of memory per input byte: bronze {:.2}, silver {:.2}",
        held as f64 / input as f64,
        bronze as f64 / input as f64,
        silver as f64 / input as f64
    );
}
