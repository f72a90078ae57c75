//! Types and names shared by every stage of gamelake.
//!
//! Column and table names are `const`s here so that the parser, the writer, the query layer and
//! the tests agree on them without repeating string literals.

pub mod names;
pub mod time;

pub use names::*;
pub use time::{parse_duration, GameClock};
