//! Growable columns with a type decided by the table (or the first value), turned into Arrow
//! arrays at the end of a body. Values that fit no column's type go to the row's `_conflicts`.

use std::sync::Arc;

use arrow_array::{ArrayRef, BooleanArray, Float64Array, Int64Array, StringArray};
use arrow_buffer::{BooleanBuffer, NullBuffer, OffsetBuffer, ScalarBuffer};
use arrow_schema::DataType;

/// The column types a source field can take.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ColType {
    Int64,
    Float64,
    Boolean,
    /// Text, and nested maps and lists as JSON text.
    Utf8,
}

impl ColType {
    pub fn arrow(self) -> DataType {
        match self {
            ColType::Int64 => DataType::Int64,
            ColType::Float64 => DataType::Float64,
            ColType::Boolean => DataType::Boolean,
            ColType::Utf8 => DataType::Utf8,
        }
    }

    /// The column type of an Arrow type, for columns that already exist in a table.
    pub fn from_arrow(dt: &DataType) -> Option<Self> {
        match dt {
            DataType::Int64 => Some(ColType::Int64),
            DataType::Float64 => Some(ColType::Float64),
            DataType::Boolean => Some(ColType::Boolean),
            DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View => Some(ColType::Utf8),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            ColType::Int64 => "Int64",
            ColType::Float64 => "Float64",
            ColType::Boolean => "Boolean",
            ColType::Utf8 => "Utf8",
        }
    }
}

/// Text column storage: Arrow's own layout, built in place.
#[derive(Debug, Default)]
pub struct StrData {
    offsets: Vec<i32>,
    bytes: Vec<u8>,
}

impl StrData {
    fn new() -> Self {
        Self {
            offsets: vec![0],
            bytes: Vec::new(),
        }
    }

    fn push(&mut self, s: &str) {
        self.bytes.extend_from_slice(s.as_bytes());
        self.offsets.push(self.bytes.len() as i32);
    }

    fn pop(&mut self) {
        self.offsets.pop();
        let end = *self.offsets.last().expect("offsets start with 0") as usize;
        self.bytes.truncate(end);
    }

    fn into_array(self, valid: Vec<bool>) -> ArrayRef {
        let offsets = OffsetBuffer::new(ScalarBuffer::from(self.offsets));
        Arc::new(StringArray::new(offsets, self.bytes.into(), nulls(valid)))
    }
}

#[derive(Debug)]
enum ColData {
    Int(Vec<i64>),
    Float(Vec<f64>),
    Bool(Vec<bool>),
    Str(StrData),
}

/// A value on its way into a column.
#[derive(Debug, Clone, Copy)]
pub enum Cell<'a> {
    Int(i64),
    Float(f64),
    Bool(bool),
    Str(&'a str),
    /// A nested map or list as JSON text: stored as text, kept raw in `_conflicts`.
    Json(&'a str),
}

/// One nullable column of a chunk.
#[derive(Debug)]
pub struct Column {
    pub name: String,
    pub ty: ColType,
    data: ColData,
    valid: Vec<bool>,
}

impl Column {
    pub fn new(name: String, ty: ColType) -> Self {
        Self::with_capacity(name, ty, 0, 0)
    }

    /// A column with room for `rows` values and, for text, `text_bytes` bytes.
    pub fn with_capacity(name: String, ty: ColType, rows: usize, text_bytes: usize) -> Self {
        let data = match ty {
            ColType::Int64 => ColData::Int(Vec::with_capacity(rows)),
            ColType::Float64 => ColData::Float(Vec::with_capacity(rows)),
            ColType::Boolean => ColData::Bool(Vec::with_capacity(rows)),
            ColType::Utf8 => {
                let mut text = StrData::new();
                text.offsets.reserve(rows);
                text.bytes.reserve(text_bytes);
                ColData::Str(text)
            }
        };
        Self {
            name,
            ty,
            data,
            valid: Vec::with_capacity(rows),
        }
    }

    /// Bytes of text held, for a text column.
    pub fn text_bytes(&self) -> Option<usize> {
        match &self.data {
            ColData::Str(text) => Some(text.bytes.len()),
            _ => None,
        }
    }

    pub fn len(&self) -> usize {
        self.valid.len()
    }

    pub fn is_empty(&self) -> bool {
        self.valid.is_empty()
    }

    /// Appends nulls until the column has `rows` entries.
    pub fn pad_to(&mut self, rows: usize) {
        while self.valid.len() < rows {
            self.push_null();
        }
    }

    fn push_null(&mut self) {
        match &mut self.data {
            ColData::Int(v) => v.push(0),
            ColData::Float(v) => v.push(0.0),
            ColData::Bool(v) => v.push(false),
            ColData::Str(s) => s.push(""),
        }
        self.valid.push(false);
    }

    /// Removes the last entry (a duplicate key in one line: the last value wins).
    pub fn pop(&mut self) {
        match &mut self.data {
            ColData::Int(v) => {
                v.pop();
            }
            ColData::Float(v) => {
                v.pop();
            }
            ColData::Bool(v) => {
                v.pop();
            }
            ColData::Str(s) => s.pop(),
        }
        self.valid.pop();
    }

    /// Whether `cell` can be stored in this column without losing information.
    pub fn accepts(&self, cell: &Cell<'_>) -> bool {
        matches!(
            (self.ty, cell),
            (ColType::Int64, Cell::Int(_))
                | (ColType::Float64, Cell::Int(_) | Cell::Float(_))
                | (ColType::Boolean, Cell::Bool(_))
                | (ColType::Utf8, _)
        )
    }

    /// Appends a value the column accepts (see [`Column::accepts`]); numbers and booleans going
    /// into a text column are written as their JSON text.
    pub fn push(&mut self, cell: &Cell<'_>, scratch: &mut String) {
        debug_assert!(self.accepts(cell), "caller checks `accepts` first");
        match (&mut self.data, cell) {
            (ColData::Int(v), Cell::Int(x)) => v.push(*x),
            (ColData::Float(v), Cell::Float(x)) => v.push(*x),
            (ColData::Float(v), Cell::Int(x)) => v.push(*x as f64),
            (ColData::Bool(v), Cell::Bool(x)) => v.push(*x),
            (ColData::Str(s), Cell::Str(x) | Cell::Json(x)) => s.push(x),
            (ColData::Str(s), other) => {
                scratch.clear();
                write_cell_json(scratch, other);
                s.push(scratch);
            }
            _ => unreachable!("`accepts` was checked"),
        }
        self.valid.push(true);
    }

    pub fn into_array(self) -> ArrayRef {
        let valid = self.valid;
        match self.data {
            ColData::Int(v) => Arc::new(Int64Array::new(v.into(), nulls(valid))),
            ColData::Float(v) => Arc::new(Float64Array::new(v.into(), nulls(valid))),
            ColData::Bool(v) => Arc::new(BooleanArray::new(BooleanBuffer::from(v), nulls(valid))),
            ColData::Str(s) => s.into_array(valid),
        }
    }
}

/// A text column that is never null (code, reason, …) or nullable by `valid`.
#[derive(Debug)]
pub struct TextColumn {
    data: StrData,
    valid: Vec<bool>,
}

impl Default for TextColumn {
    fn default() -> Self {
        Self {
            data: StrData::new(),
            valid: Vec::new(),
        }
    }
}

impl TextColumn {
    pub fn push(&mut self, s: &str) {
        self.data.push(s);
        self.valid.push(true);
    }

    pub fn push_null(&mut self) {
        self.data.push("");
        self.valid.push(false);
    }

    pub fn len(&self) -> usize {
        self.valid.len()
    }

    pub fn is_empty(&self) -> bool {
        self.valid.is_empty()
    }

    pub fn has_values(&self) -> bool {
        self.valid.iter().any(|v| *v)
    }

    pub fn into_array(self) -> ArrayRef {
        self.data.into_array(self.valid)
    }
}

fn nulls(valid: Vec<bool>) -> Option<NullBuffer> {
    if valid.iter().all(|v| *v) {
        None
    } else {
        Some(NullBuffer::from(valid))
    }
}

/// Writes a cell as JSON (strings quoted and escaped).
pub fn write_cell_json(buf: &mut String, cell: &Cell<'_>) {
    use std::fmt::Write;
    match cell {
        Cell::Int(v) => {
            let _ = write!(buf, "{v}");
        }
        Cell::Float(v) => {
            let _ = write!(buf, "{v:?}");
        }
        Cell::Bool(v) => buf.push_str(if *v { "true" } else { "false" }),
        Cell::Str(s) => crate::syntax::write_json_string(buf, s),
        Cell::Json(s) => buf.push_str(s),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow_array::Array;

    #[test]
    fn padding_duplicates_and_nulls() {
        let mut scratch = String::new();
        let mut c = Column::new("x".into(), ColType::Utf8);
        c.push(&Cell::Str("a"), &mut scratch);
        c.pad_to(3);
        c.push(&Cell::Str("b"), &mut scratch);
        c.pop();
        c.push(&Cell::Int(7), &mut scratch);
        let arr = c.into_array();
        let arr = arr.as_any().downcast_ref::<StringArray>().unwrap();
        assert_eq!(arr.len(), 4);
        assert_eq!(arr.value(0), "a");
        assert!(arr.is_null(1) && arr.is_null(2));
        assert_eq!(arr.value(3), "7");
    }

    #[test]
    fn numeric_columns_accept_only_what_fits() {
        let f = Column::new("f".into(), ColType::Float64);
        let i = Column::new("i".into(), ColType::Int64);
        assert!(f.accepts(&Cell::Int(1)));
        assert!(!i.accepts(&Cell::Float(1.5)));
        assert!(!i.accepts(&Cell::Str("x")));
        assert!(!i.accepts(&Cell::Bool(true)));
    }
}
