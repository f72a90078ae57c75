//! Parser throughput on a file of log lines, one thread: the per-line cost of the ingest hot
//! path without HTTP, WAL or Parquet.
//!
//!   gamelake loadgen --dry-run --out /tmp/lines.log --format ndjson --rate 200000 --duration 2s
//!   cargo run --release --example parse_speed -- /tmp/lines.log [LINES_PER_BODY] [ROUNDS]
//!
//! Prints the best and the median nanoseconds per line over the rounds.

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
    println!(
        "{rows} lines in {} bodies: best {:.0} ns/line, median {:.0} ns/line",
        bodies.len(),
        per_line[0],
        per_line[per_line.len() / 2]
    );
}
