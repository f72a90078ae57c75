//! Game log lines → typed Arrow columns, routed by event `code`.
//!
//! This is the per-line hot path of gamelake and does no I/O. It sits between ingest (which hands
//! it a request body) and the lake writer (which commits the batches it returns):
//!
//! ```text
//! body ──split──► line ──syntax──► Record (flat, reused) ──route by code──► TableChunk columns
//!                  │                    │                                        │
//!                  └──► raw_logs        └──► dead_letters (reason, stage)        └──► RecordBatch
//! ```
//!
//! # Layout
//! - [`syntax`]: the grammar of `LOG_FORMAT.md` (kv, bare JSON-like, strict JSON) into a [`Record`].
//! - [`columns`]: growable typed columns and the type-conflict rule.
//! - [`body`]: a whole body to batches, with `event_time`, `event_date` and the bronze tables.
//!
//! # Type rules
//! Integers are `Int64`, numbers with a fraction or exponent `Float64`, `true`/`false` `Boolean`,
//! text and nested maps/lists (as JSON text) `Utf8`. A column's type is the table's if the column
//! exists (see [`SchemaHints`]), else the first value's. An integer fits a `Float64` column, and
//! any scalar fits a `Utf8` column (as its JSON text); a value that fits nowhere is not dropped:
//! the row keeps a NULL there and the value goes into the row's `_conflicts` JSON object.

pub mod body;
pub mod columns;
pub mod syntax;

pub use body::{
    timestamp_type, with_offset, BodyParser, IngestMeta, ParseConfig, ParsedBody, SchemaHints,
    DEFAULT_TIME_FIELDS,
};
pub use columns::ColType;
pub use syntax::{parse_line, Record, SyntaxError, Val};

#[cfg(test)]
mod tests;
