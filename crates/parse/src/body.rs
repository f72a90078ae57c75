//! A request body → Arrow record batches: one per silver table touched, one for
//! `bronze.raw_logs`, one for `bronze.dead_letters`.
//!
//! Every non-empty line lands in `raw_logs`, and in exactly one of: its silver table, or the dead
//! letters with a reason. The `_offset` column is added later, by the stage that knows the
//! write-ahead-log offset of the body (see [`with_offset`]).

use std::collections::HashMap;
use std::sync::Arc;

use arrow_array::{
    ArrayRef, BinaryArray, Date32Array, Int64Array, RecordBatch, StringArray,
    TimestampMicrosecondArray,
};
use arrow_buffer::{OffsetBuffer, ScalarBuffer};
use arrow_schema::{DataType, Field, Schema, TimeUnit};
use gamelake_common::{
    column_name_for_field, table_name_for_code, GameClock, COL_CODE, COL_CONFLICTS, COL_DETAIL,
    COL_EVENT_DATE, COL_EVENT_TIME, COL_INGEST_DATE, COL_INGEST_TIME, COL_LINE, COL_OFFSET,
    COL_REASON, COL_SOURCE, COL_STAGE,
};

use crate::columns::{write_cell_json, Cell, ColType, Column, TextColumn};
use crate::syntax::{parse_line, Record, Val};

/// Column types already committed, per silver table, so that a body agrees with its table.
pub type SchemaHints = HashMap<String, HashMap<String, ColType>>;

/// The parser's own maps, looked up for every line and field: foldhash instead of SipHash (the
/// keys are codes and column names of the body being parsed, so flooding them costs only the
/// sender's own request).
type FastMap<K, V> = HashMap<K, V, foldhash::fast::RandomState>;

/// What the parser needs to know of the deployment.
#[derive(Debug, Clone)]
pub struct ParseConfig {
    /// The game's time zone: local timestamps are read in it and `event_date` is a day in it.
    pub time_zone: String,
    /// The field that holds the event type in object lines.
    pub code_field: String,
    /// Fields tried, in order, for the event time of object lines.
    pub time_fields: Vec<String>,
    /// Lines longer than this are dead letters (`line_too_long`).
    pub max_line_bytes: usize,
}

impl Default for ParseConfig {
    fn default() -> Self {
        Self {
            time_zone: "Asia/Seoul".into(),
            code_field: "code".into(),
            time_fields: DEFAULT_TIME_FIELDS.iter().map(|s| s.to_string()).collect(),
            max_line_bytes: 1 << 20,
        }
    }
}

/// The time field names of `LOG_FORMAT.md`, first match wins.
pub const DEFAULT_TIME_FIELDS: [&str; 8] = [
    "ts",
    "timestamp",
    "time",
    "event_time",
    "@timestamp",
    "modTime",
    "logTime",
    "publishTime",
];

/// Where a body came from and when; constant over its lines.
#[derive(Debug, Clone)]
pub struct IngestMeta {
    pub ingest_time_us: i64,
    pub source: String,
}

/// The tables' share of one body.
#[derive(Debug)]
pub struct ParsedBody {
    pub accepted: usize,
    pub dead_lettered: usize,
    pub raw_logs: Option<RecordBatch>,
    pub dead_letters: Option<RecordBatch>,
    /// (silver table name, rows), sorted by name; codes that map to one table name (`item.use`,
    /// `item_use`) give one batch each.
    pub silver: Vec<(String, RecordBatch)>,
    /// Bytes of the input lines behind each batch of `silver`, in the same order, for metrics.
    pub silver_bytes: Vec<u64>,
    /// Dead letters per reason id: (reason, lines, bytes of those lines), for metrics.
    pub dead_reasons: Vec<(&'static str, usize, u64)>,
}

impl ParsedBody {
    pub fn lines(&self) -> usize {
        self.accepted + self.dead_lettered
    }
}

/// Parses bodies; keeps its scratch buffers between lines and bodies. One per thread.
pub struct BodyParser {
    cfg: ParseConfig,
    clock: GameClock,
    rec: Record,
    scratch: String,
    conflicts: String,
    /// The size of the last body's rows of each code, to size the next body's buffers at once.
    shapes: FastMap<String, Shape>,
}

/// Codes whose last shape a parser remembers.
const MAX_SHAPES: usize = 1024;

/// Rows and text bytes per column of one code's rows in a body.
#[derive(Debug, Default)]
struct Shape {
    rows: usize,
    text_bytes: FastMap<String, usize>,
}

impl BodyParser {
    pub fn new(cfg: ParseConfig) -> Result<Self, String> {
        let clock = GameClock::new(&cfg.time_zone)?;
        Ok(Self {
            cfg,
            clock,
            rec: Record::default(),
            scratch: String::new(),
            conflicts: String::new(),
            shapes: FastMap::default(),
        })
    }

    pub fn config(&self) -> &ParseConfig {
        &self.cfg
    }

    pub fn clock(&self) -> &GameClock {
        &self.clock
    }

    /// Parses every line of `body` (split on `\n`, a trailing `\r` removed, blank lines skipped).
    pub fn parse_body(
        &mut self,
        body: &[u8],
        meta: &IngestMeta,
        hints: &SchemaHints,
    ) -> ParsedBody {
        // Every line's bytes go to bronze: one allocation of the body's size, no regrowing.
        let mut raw = BinaryColumn::with_capacity(body.len());
        let mut dead = DeadLetters::default();
        let mut tables: FastMap<String, TableChunk> = FastMap::default();
        let mut accepted = 0;
        // A body that is valid UTF-8 as a whole, the common case, is validated once (with SIMD,
        // several times faster than the standard library on mostly ASCII text): its lines,
        // cut at `\n`, are then valid too. Otherwise each line is checked on its own, so that
        // only the lines with bad bytes become dead letters.
        let text = simdutf8::basic::from_utf8(body).ok();
        let mut start = 0;
        while start < body.len() {
            let end = memchr::memchr(b'\n', &body[start..]).map_or(body.len(), |e| start + e);
            let line_end = if end > start && body[end - 1] == b'\r' {
                end - 1
            } else {
                end
            };
            let line = &body[start..line_end];
            let line_text = text.map(|t| &t[start..line_end]);
            start = end + 1;
            if line.iter().all(|b| b.is_ascii_whitespace()) {
                continue;
            }
            raw.push(line);
            match self.parse_one(line, line_text, &mut tables, hints) {
                Ok(()) => accepted += 1,
                Err(rejection) => dead.push(line, rejection),
            }
        }
        let date = self.clock.local_date(meta.ingest_time_us);
        let mut silver: Vec<(String, u64, RecordBatch)> = tables
            .into_iter()
            .map(|(code, mut chunk)| {
                let table = table_name_for_code(&code);
                if self.shapes.len() >= MAX_SHAPES {
                    // Many codes (a client sending random ones): forget, rather than grow.
                    self.shapes.clear();
                }
                self.shapes.insert(code, chunk.take_shape());
                (table, chunk.line_bytes, chunk.finish(meta.ingest_time_us))
            })
            .collect();
        silver.sort_by(|a, b| a.0.cmp(&b.0));
        let silver_bytes = silver.iter().map(|(_, bytes, _)| *bytes).collect();
        let silver = silver.into_iter().map(|(t, _, b)| (t, b)).collect();
        let dead_reasons = dead.reason_counts();
        ParsedBody {
            accepted,
            dead_lettered: dead.len(),
            raw_logs: raw.finish_raw_logs(meta, date),
            dead_letters: dead.finish(meta, date),
            silver,
            silver_bytes,
            dead_reasons,
        }
    }

    /// One line; `text` is the line as text when the body was valid UTF-8 as a whole.
    fn parse_one(
        &mut self,
        line: &[u8],
        text: Option<&str>,
        tables: &mut FastMap<String, TableChunk>,
        hints: &SchemaHints,
    ) -> Result<(), Rejection> {
        if line.len() > self.cfg.max_line_bytes {
            return Err(Rejection::new(
                "line_too_long",
                "ingest",
                format!(
                    "line of {} bytes is over `limits.max_line_bytes` = {}",
                    line.len(),
                    self.cfg.max_line_bytes
                ),
            ));
        }
        let text = match text {
            Some(text) => text,
            None => std::str::from_utf8(line).map_err(|e| {
                Rejection::new(
                    "invalid_utf8",
                    "parse",
                    format!("line is not valid UTF-8 at byte {}", e.valid_up_to()),
                )
            })?,
        };
        parse_line(text, &mut self.rec)
            .map_err(|e| Rejection::new(e.reason(), "parse", e.to_string()))?;
        let rec = &self.rec;
        let code = match &rec.prefix_code {
            Some(span) => rec.text(span),
            None => match rec.get(&self.cfg.code_field) {
                Some(Val::Str(span)) => rec.text(span),
                Some(_) => {
                    return Err(Rejection::new(
                        "bad_code",
                        "parse",
                        format!("field `{}` must be text", self.cfg.code_field),
                    ))
                }
                None => {
                    return Err(Rejection::new(
                        "missing_code",
                        "parse",
                        format!("no `[code]` prefix and no `{}` field", self.cfg.code_field),
                    ))
                }
            },
        };
        if code.is_empty() || code.len() > 128 || !code.bytes().all(is_code_byte) {
            return Err(Rejection::new(
                "bad_code",
                "parse",
                "event code must be 1 to 128 characters of `[A-Za-z0-9_.:-]`".to_string(),
            ));
        }
        let event_time = match &rec.prefix_time {
            Some(span) => self.clock.parse_timestamp(rec.text(span)).map_err(|e| {
                Rejection::new("bad_time", "parse", format!("prefix timestamp: {e}"))
            })?,
            None => self.object_time(rec)?,
        };
        // Keyed by code, so the common case (a code seen before in this body) allocates nothing.
        let chunk = match tables.get_mut(code) {
            Some(chunk) => chunk,
            None => {
                let hint = hints.get(&table_name_for_code(code));
                let shape = self.shapes.remove(code).unwrap_or_default();
                tables
                    .entry(code.to_string())
                    .or_insert_with(|| TableChunk::new(hint.cloned(), shape))
            }
        };
        chunk.line_bytes += line.len() as u64;
        chunk.push_row(
            rec,
            code,
            event_time,
            self.clock.local_date(event_time),
            &mut self.scratch,
            &mut self.conflicts,
        );
        Ok(())
    }

    fn object_time(&self, rec: &Record) -> Result<i64, Rejection> {
        for name in &self.cfg.time_fields {
            let Some(val) = rec.get(name) else { continue };
            return match val {
                Val::Str(span) => self.clock.parse_timestamp(rec.text(span)).map_err(|e| {
                    Rejection::new("bad_time", "parse", format!("time field `{name}`: {e}"))
                }),
                Val::Int(ms) => ms.checked_mul(1000).ok_or_else(|| {
                    Rejection::new(
                        "bad_time",
                        "parse",
                        format!("time field `{name}`: epoch milliseconds out of range"),
                    )
                }),
                _ => Err(Rejection::new(
                    "bad_time",
                    "parse",
                    format!("time field `{name}` must be a timestamp text or epoch milliseconds"),
                )),
            };
        }
        Err(Rejection::new(
            "missing_time",
            "parse",
            format!("no time field (tried {})", self.cfg.time_fields.join(", ")),
        ))
    }
}

fn is_code_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b':' | b'-')
}

/// Why a line became a dead letter.
#[derive(Debug)]
struct Rejection {
    reason: &'static str,
    stage: &'static str,
    detail: String,
}

impl Rejection {
    fn new(reason: &'static str, stage: &'static str, detail: String) -> Self {
        Self {
            reason,
            stage,
            detail,
        }
    }
}

/// The rows of one silver table within a body.
struct TableChunk {
    hint: Option<HashMap<String, ColType>>,
    code: TextColumn,
    event_time: Vec<i64>,
    event_date: Vec<i32>,
    columns: Vec<Column>,
    index: FastMap<String, usize>,
    conflicts: TextColumn,
    rows: usize,
    /// Bytes of the input lines of these rows.
    line_bytes: u64,
    /// Where each field of the previous row went, by position: its key and its slot. Rows of
    /// one code nearly always carry the same keys in the same order, so comparing a key with
    /// the one at its position replaces cleaning the name and a hash lookup.
    layout: Vec<(String, Slot)>,
    /// The slot of every key seen in this chunk, for rows whose keys are not where the previous
    /// row had them (lines of one code from services that name or order fields differently).
    slots: FastMap<String, Slot>,
    /// The previous body's size of this code's rows: the capacity of new columns.
    shape: Shape,
}

/// Where a field's value goes.
#[derive(Debug, Clone, Copy)]
enum Slot {
    Column(usize),
    /// A derived column's name (`code`, `event_time`, `event_date`): the source field is dropped.
    Derived,
    /// A reserved column's name (`_ingest_time`, …): the value goes to `_conflicts`.
    Reserved,
}

impl TableChunk {
    fn new(hint: Option<HashMap<String, ColType>>, shape: Shape) -> Self {
        Self {
            hint,
            code: TextColumn::default(),
            event_time: Vec::with_capacity(shape.rows),
            event_date: Vec::with_capacity(shape.rows),
            columns: Vec::new(),
            index: FastMap::default(),
            conflicts: TextColumn::default(),
            rows: 0,
            line_bytes: 0,
            layout: Vec::new(),
            slots: FastMap::default(),
            shape,
        }
    }

    fn push_row(
        &mut self,
        rec: &Record,
        code: &str,
        event_time: i64,
        event_date: i32,
        scratch: &mut String,
        conflicts: &mut String,
    ) {
        let row = self.rows;
        self.code.push(code);
        self.event_time.push(event_time);
        self.event_date.push(event_date);
        conflicts.clear();
        for (position, field) in rec.fields.iter().enumerate() {
            let cell = match &field.val {
                Val::Null => continue,
                Val::Bool(b) => Cell::Bool(*b),
                Val::Int(v) => Cell::Int(*v),
                Val::Float(v) => Cell::Float(*v),
                Val::Str(s) => Cell::Str(rec.text(s)),
                Val::Json(s) => Cell::Json(rec.text(s)),
            };
            let key = rec.text(&field.key);
            let slot = match self.layout.get(position) {
                Some((seen, slot)) if seen == key => *slot,
                _ => {
                    let slot = self.slot_for(key, &cell);
                    match self.layout.get_mut(position) {
                        Some(entry) => {
                            entry.0.clear();
                            entry.0.push_str(key);
                            entry.1 = slot;
                        }
                        None => self.layout.push((key.to_string(), slot)),
                    }
                    slot
                }
            };
            let idx = match slot {
                Slot::Column(idx) => idx,
                Slot::Derived => continue,
                Slot::Reserved => {
                    add_conflict(conflicts, &column_name_for_field(key), &cell);
                    continue;
                }
            };
            let col = &mut self.columns[idx];
            if col.len() > row {
                // The same key twice in one line: the last value wins.
                col.pop();
            }
            col.pad_to(row);
            if col.accepts(&cell) {
                col.push(&cell, scratch);
            } else {
                add_conflict(conflicts, &col.name, &cell);
            }
        }
        if conflicts.is_empty() {
            self.conflicts.push_null();
        } else {
            conflicts.push('}');
            self.conflicts.push(conflicts);
        }
        self.rows += 1;
    }

    /// The slot of a field key: its column (added with the hinted or the value's type if new),
    /// or a derived or reserved name.
    fn slot_for(&mut self, key: &str, cell: &Cell<'_>) -> Slot {
        if let Some(slot) = self.slots.get(key) {
            return *slot;
        }
        let slot = self.new_slot(key, cell);
        self.slots.insert(key.to_string(), slot);
        slot
    }

    /// The slot of a key not seen before in this chunk.
    fn new_slot(&mut self, key: &str, cell: &Cell<'_>) -> Slot {
        let name = column_name_for_field(key);
        match name.as_ref() {
            // Derived columns replace source fields of the same name (raw text stays in bronze).
            COL_CODE | COL_EVENT_TIME | COL_EVENT_DATE => return Slot::Derived,
            COL_INGEST_TIME | COL_OFFSET | COL_CONFLICTS => return Slot::Reserved,
            _ => {}
        }
        if let Some(i) = self.index.get(name.as_ref()) {
            return Slot::Column(*i);
        }
        let ty = self
            .hint
            .as_ref()
            .and_then(|h| h.get(name.as_ref()).copied())
            .unwrap_or_else(|| cell.natural_type());
        let text_bytes = self.shape.text_bytes.get(name.as_ref()).copied();
        self.columns.push(Column::with_capacity(
            name.to_string(),
            ty,
            self.shape.rows,
            text_bytes.unwrap_or(0),
        ));
        self.index.insert(name.to_string(), self.columns.len() - 1);
        Slot::Column(self.columns.len() - 1)
    }

    /// This chunk's size, for the next body's chunk of the same code.
    fn take_shape(&mut self) -> Shape {
        let mut shape = std::mem::take(&mut self.shape);
        shape.rows = self.rows;
        for col in &self.columns {
            let Some(bytes) = col.text_bytes() else {
                continue;
            };
            match shape.text_bytes.get_mut(&col.name) {
                Some(b) => *b = bytes,
                None => {
                    shape.text_bytes.insert(col.name.clone(), bytes);
                }
            }
        }
        shape
    }

    fn finish(mut self, ingest_time_us: i64) -> RecordBatch {
        let rows = self.rows;
        let mut fields = vec![
            Field::new(COL_CODE, DataType::Utf8, true),
            Field::new(COL_EVENT_TIME, timestamp_type(), true),
            Field::new(COL_EVENT_DATE, DataType::Date32, true),
        ];
        let mut arrays: Vec<ArrayRef> = vec![
            self.code.into_array(),
            Arc::new(
                TimestampMicrosecondArray::from(std::mem::take(&mut self.event_time))
                    .with_timezone("UTC"),
            ),
            Arc::new(Date32Array::from(std::mem::take(&mut self.event_date))),
        ];
        for mut col in self.columns {
            col.pad_to(rows);
            fields.push(Field::new(col.name.clone(), col.ty.arrow(), true));
            arrays.push(col.into_array());
        }
        fields.push(Field::new(COL_INGEST_TIME, timestamp_type(), true));
        arrays.push(Arc::new(
            TimestampMicrosecondArray::from_value(ingest_time_us, rows).with_timezone("UTC"),
        ));
        if self.conflicts.has_values() {
            fields.push(Field::new(COL_CONFLICTS, DataType::Utf8, true));
            arrays.push(self.conflicts.into_array());
        }
        RecordBatch::try_new(Arc::new(Schema::new(fields)), arrays)
            .expect("columns are padded to the row count")
    }
}

impl Cell<'_> {
    fn natural_type(&self) -> ColType {
        match self {
            Cell::Int(_) => ColType::Int64,
            Cell::Float(_) => ColType::Float64,
            Cell::Bool(_) => ColType::Boolean,
            Cell::Str(_) | Cell::Json(_) => ColType::Utf8,
        }
    }
}

fn add_conflict(conflicts: &mut String, name: &str, cell: &Cell<'_>) {
    conflicts.push(if conflicts.is_empty() { '{' } else { ',' });
    crate::syntax::write_json_string(conflicts, name);
    conflicts.push(':');
    write_cell_json(conflicts, cell);
}

/// The Arrow type of every timestamp gamelake writes.
pub fn timestamp_type() -> DataType {
    DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into()))
}

/// Line bytes as Arrow `Binary`, built in place.
struct BinaryColumn {
    offsets: Vec<i32>,
    bytes: Vec<u8>,
}

impl Default for BinaryColumn {
    fn default() -> Self {
        Self {
            offsets: vec![0],
            bytes: Vec::new(),
        }
    }
}

impl BinaryColumn {
    fn with_capacity(bytes: usize) -> Self {
        let mut column = Self::default();
        column.bytes.reserve(bytes);
        column
    }

    fn push(&mut self, line: &[u8]) {
        self.bytes.extend_from_slice(line);
        self.offsets.push(self.bytes.len() as i32);
    }

    fn len(&self) -> usize {
        self.offsets.len() - 1
    }

    fn into_array(self) -> ArrayRef {
        Arc::new(BinaryArray::new(
            OffsetBuffer::new(ScalarBuffer::from(self.offsets)),
            self.bytes.into(),
            None,
        ))
    }

    fn finish_raw_logs(self, meta: &IngestMeta, date: i32) -> Option<RecordBatch> {
        let rows = self.len();
        if rows == 0 {
            return None;
        }
        let fields = vec![Field::new(COL_LINE, DataType::Binary, true)];
        let arrays: Vec<ArrayRef> = vec![self.into_array()];
        Some(with_bronze_meta(fields, arrays, meta, date))
    }
}

#[derive(Default)]
struct DeadLetters {
    lines: BinaryColumn,
    reason: TextColumn,
    detail: TextColumn,
    stage: TextColumn,
    reasons: Vec<(&'static str, u64)>,
}

impl DeadLetters {
    fn push(&mut self, line: &[u8], rejection: Rejection) {
        self.lines.push(line);
        self.reason.push(rejection.reason);
        self.detail.push(&rejection.detail);
        self.stage.push(rejection.stage);
        self.reasons.push((rejection.reason, line.len() as u64));
    }

    fn len(&self) -> usize {
        self.lines.len()
    }

    fn reason_counts(&self) -> Vec<(&'static str, usize, u64)> {
        let mut counts: Vec<(&'static str, usize, u64)> = Vec::new();
        for (r, bytes) in &self.reasons {
            match counts.iter_mut().find(|(name, _, _)| name == r) {
                Some((_, n, b)) => {
                    *n += 1;
                    *b += bytes;
                }
                None => counts.push((r, 1, *bytes)),
            }
        }
        counts
    }

    fn finish(self, meta: &IngestMeta, date: i32) -> Option<RecordBatch> {
        let rows = self.len();
        if rows == 0 {
            return None;
        }
        let fields = vec![
            Field::new(COL_LINE, DataType::Binary, true),
            Field::new(COL_REASON, DataType::Utf8, true),
            Field::new(COL_DETAIL, DataType::Utf8, true),
            Field::new(COL_STAGE, DataType::Utf8, true),
        ];
        let arrays: Vec<ArrayRef> = vec![
            self.lines.into_array(),
            self.reason.into_array(),
            self.detail.into_array(),
            self.stage.into_array(),
        ];
        Some(with_bronze_meta(fields, arrays, meta, date))
    }
}

/// Appends the columns every bronze row carries (`_ingest_time`, `_source`, `ingest_date`),
/// constant over one body.
fn with_bronze_meta(
    mut fields: Vec<Field>,
    mut arrays: Vec<ArrayRef>,
    meta: &IngestMeta,
    date: i32,
) -> RecordBatch {
    let rows = arrays.first().map_or(0, |a| a.len());
    fields.push(Field::new(COL_INGEST_TIME, timestamp_type(), true));
    fields.push(Field::new(COL_SOURCE, DataType::Utf8, true));
    fields.push(Field::new(COL_INGEST_DATE, DataType::Date32, true));
    arrays.push(Arc::new(
        TimestampMicrosecondArray::from_value(meta.ingest_time_us, rows).with_timezone("UTC"),
    ));
    arrays.push(Arc::new(StringArray::from_iter_values(
        std::iter::repeat_n(meta.source.as_str(), rows),
    )));
    arrays.push(Arc::new(Date32Array::from_value(date, rows)));
    RecordBatch::try_new(Arc::new(Schema::new(fields)), arrays).expect("equal lengths")
}

/// Adds the `_offset` column (the write-ahead-log offset of the body) to a batch.
pub fn with_offset(batch: &RecordBatch, offset: u64) -> RecordBatch {
    let mut fields: Vec<Field> = batch
        .schema()
        .fields()
        .iter()
        .map(|f| f.as_ref().clone())
        .collect();
    let mut arrays = batch.columns().to_vec();
    fields.push(Field::new(COL_OFFSET, DataType::Int64, true));
    arrays.push(Arc::new(Int64Array::from_value(
        offset as i64,
        batch.num_rows(),
    )));
    RecordBatch::try_new(Arc::new(Schema::new(fields)), arrays).expect("same row count")
}
