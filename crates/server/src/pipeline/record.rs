//! The payload of one write-ahead-log record: one request body and what is needed to parse it
//! again identically on replay.
//!
//! ```text
//! payload := version:u8 (=1) ingest_time_us:i64le
//!            source_len:u16le source[source_len]
//!            key_len:u16le idempotency_key[key_len]
//!            body (the rest: the decompressed lines, as received)
//! ```

use bytes::Bytes;

/// A decoded record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BodyRecord<'a> {
    pub ingest_time_us: i64,
    pub source: &'a str,
    pub idempotency_key: Option<&'a str>,
    pub body: &'a [u8],
}

const VERSION: u8 = 1;

/// A record as the two parts the log writes one after the other: the head (everything before
/// the body) and the body itself, which is not copied. `source` and `idempotency_key` are
/// truncated to 65 535 bytes (the HTTP layer limits keys to far less).
pub fn parts(
    ingest_time_us: i64,
    source: &str,
    idempotency_key: Option<&str>,
    body: impl Into<Bytes>,
) -> [Bytes; 2] {
    let source = &source.as_bytes()[..source.len().min(u16::MAX as usize)];
    let key = idempotency_key.map_or(&[][..], |k| &k.as_bytes()[..k.len().min(u16::MAX as usize)]);
    let mut head = Vec::with_capacity(13 + source.len() + key.len());
    head.push(VERSION);
    head.extend_from_slice(&ingest_time_us.to_le_bytes());
    head.extend_from_slice(&(source.len() as u16).to_le_bytes());
    head.extend_from_slice(source);
    head.extend_from_slice(&(key.len() as u16).to_le_bytes());
    head.extend_from_slice(key);
    [head.into(), body.into()]
}

/// Decodes a record, or says why it cannot.
pub fn decode(payload: &[u8]) -> Result<BodyRecord<'_>, &'static str> {
    let version = *payload.first().ok_or("empty record")?;
    if version != VERSION {
        return Err("unknown record version");
    }
    let time = payload.get(1..9).ok_or("short record")?;
    let ingest_time_us = i64::from_le_bytes(time.try_into().expect("8 bytes"));
    let mut pos = 9;
    let take = |pos: &mut usize| -> Result<&[u8], &'static str> {
        let len = payload.get(*pos..*pos + 2).ok_or("short record")?;
        let len = u16::from_le_bytes(len.try_into().expect("2 bytes")) as usize;
        let s = payload
            .get(*pos + 2..*pos + 2 + len)
            .ok_or("short record")?;
        *pos += 2 + len;
        Ok(s)
    };
    let source = std::str::from_utf8(take(&mut pos)?).map_err(|_| "source is not UTF-8")?;
    let key = std::str::from_utf8(take(&mut pos)?).map_err(|_| "idempotency key is not UTF-8")?;
    Ok(BodyRecord {
        ingest_time_us,
        source,
        idempotency_key: (!key.is_empty()).then_some(key),
        body: &payload[pos..],
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let p = parts(42, "servers", Some("k-1"), &b"a\nb\xff"[..]).concat();
        let r = decode(&p).unwrap();
        assert_eq!(
            r,
            BodyRecord {
                ingest_time_us: 42,
                source: "servers",
                idempotency_key: Some("k-1"),
                body: b"a\nb\xff"
            }
        );
        let p = parts(-1, "", None, &b""[..]).concat();
        assert_eq!(decode(&p).unwrap().idempotency_key, None);
        assert!(decode(&p[..5]).is_err());
        assert!(decode(&[9]).is_err());
    }
}
