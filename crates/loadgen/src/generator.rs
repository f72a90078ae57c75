//! Deterministic synthetic game logs.
//!
//! Every event carries a unique `logId` (`<seed>-<sequence>`), so a test can check each
//! acknowledged event against the tables. Malformed lines (truncated, bad escape, invalid UTF-8,
//! missing code) carry none: they are not events.

use std::fmt::Write;

/// Wire format of generated lines.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// `2026-11-28 02:10:11.123 [code] {k=v, …}` with snake_case fields.
    Kv,
    /// Strict JSON with `ts` in UTC, snake_case fields.
    Ndjson,
    /// `{code:"…", playerId:"…", …}` with camelCase fields.
    Bare,
    /// Each line picks one of the three.
    Mixed,
}

impl std::str::FromStr for Format {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "kv" => Ok(Format::Kv),
            "ndjson" => Ok(Format::Ndjson),
            "bare" => Ok(Format::Bare),
            "mixed" => Ok(Format::Mixed),
            _ => Err(format!(
                "unknown format `{s}`: use kv, ndjson, bare or mixed"
            )),
        }
    }
}

/// What to generate.
#[derive(Debug, Clone)]
pub struct GenConfig {
    pub seed: u64,
    pub format: Format,
    /// Share of lines that are malformed on purpose, 0.0 to 1.0.
    pub malformed: f64,
    /// Number of distinct accounts (Zipf-like popularity).
    pub accounts: u64,
    /// Number of game worlds `kr-01` …
    pub worlds: u64,
}

impl Default for GenConfig {
    fn default() -> Self {
        Self {
            seed: 1,
            format: Format::Mixed,
            malformed: 0.0,
            accounts: 100_000,
            worlds: 20,
        }
    }
}

/// SplitMix64: tiny, fast, and the same on every platform.
#[derive(Debug, Clone)]
struct Rng(u64);

impl Rng {
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n.max(1)
    }
    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len() as u64) as usize]
    }
    /// A rank in `1..=n`, log-uniform: a Zipf-like law with exponent 1.
    fn zipf(&mut self, n: u64) -> u64 {
        let r = ((n as f64).ln() * self.unit()).exp() as u64;
        r.clamp(1, n)
    }
}

const ITEMS: [&str; 10] = [
    "오딘의 검",
    "발키리의 방패",
    "고대 룬석",
    "신속의 물약",
    "세계수 잎사귀",
    "Sword of Odin",
    "Mana Potion",
    "Dragon Scale",
    "Odin's Eye",
    "Frost Giant Axe",
];
const CHAR_NAMES: [&str; 6] = [
    "오딘전사",
    "발키리",
    "로키의그림자",
    "토르망치",
    "Freya",
    "Heimdall",
];
const GRADES: [&str; 5] = ["common", "uncommon", "rare", "epic", "legendary"];
const ITEM_REASONS: [&str; 5] = ["drop", "quest", "shop", "trade", "mail"];
const CURRENCIES: [&str; 3] = ["gold", "diamond", "honor"];
const CURRENCY_REASONS: [&str; 5] = ["monster", "quest", "shop_buy", "enchant", "trade"];
const OS: [&str; 3] = ["android", "ios", "pc"];
const MARKETS: [&str; 3] = ["google", "apple", "pc"];
const PRODUCTS: [(&str, i64); 4] = [
    ("pkg_start_01", 33000),
    ("gem_100", 1200),
    ("gem_1000", 11000),
    ("pass_month", 9900),
];

/// Event codes and their share of traffic (per 1000).
const MIX: [(Code, u64); 11] = [
    (Code::Combat, 300),
    (Code::ItemAcquire, 150),
    (Code::ItemConsume, 80),
    (Code::Currency, 150),
    (Code::Quest, 80),
    (Code::Action, 90),
    (Code::Login, 40),
    (Code::Logout, 30),
    (Code::Heartbeat, 60),
    (Code::Round, 15),
    (Code::Payment, 5),
];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Code {
    Combat,
    ItemAcquire,
    ItemConsume,
    Currency,
    Quest,
    Action,
    Login,
    Logout,
    Heartbeat,
    Round,
    Payment,
}

/// Makes lines. Not `Sync`: give each sending task its own, with its own seed.
#[derive(Debug, Clone)]
pub struct Generator {
    cfg: GenConfig,
    rng: Rng,
    seq: u64,
    fields: Vec<(&'static str, &'static str, Value)>,
}

#[derive(Debug, Clone)]
enum Value {
    Int(i64),
    Float(f64),
    Bool(bool),
    Text(String),
}

impl Generator {
    pub fn new(cfg: GenConfig) -> Self {
        let rng = Rng(cfg.seed.wrapping_mul(0x2545_F491_4F6C_DD1D) ^ 0x1234_5678);
        Self {
            cfg,
            rng,
            seq: 0,
            fields: Vec::new(),
        }
    }

    /// Appends one line (with `\n`) for an event at `time_ms` (UTC epoch milliseconds).
    /// Returns the event's `logId`, or `None` for a malformed line.
    pub fn line(&mut self, time_ms: i64, out: &mut Vec<u8>) -> Option<String> {
        let seq = self.seq;
        self.seq += 1;
        let log_id = format!("{:x}-{}", self.cfg.seed, seq);
        let format = match self.cfg.format {
            Format::Mixed => *self.rng.pick(&[Format::Kv, Format::Ndjson, Format::Bare]),
            f => f,
        };
        let code = self.pick_code();
        self.fill_fields(code, format, &log_id);
        let mut text = String::with_capacity(320);
        match format {
            Format::Bare => write_bare(&mut text, code_name(code, true), time_ms, &self.fields),
            Format::Ndjson => {
                write_ndjson(&mut text, code_name(code, false), time_ms, &self.fields)
            }
            _ => write_kv(&mut text, code_name(code, false), time_ms, &self.fields),
        }
        if self.cfg.malformed > 0.0 && self.rng.unit() < self.cfg.malformed {
            self.corrupt(&mut text, out);
            out.push(b'\n');
            return None;
        }
        out.extend_from_slice(text.as_bytes());
        out.push(b'\n');
        Some(log_id)
    }

    /// A body of `lines` lines; returns the `logId`s of its events.
    pub fn body(&mut self, lines: usize, time_ms: i64, out: &mut Vec<u8>) -> Vec<String> {
        (0..lines).filter_map(|_| self.line(time_ms, out)).collect()
    }

    fn pick_code(&mut self) -> Code {
        let mut r = self.rng.below(1000);
        for (code, share) in MIX {
            if r < share {
                return code;
            }
            r -= share;
        }
        Code::Combat
    }

    fn fill_fields(&mut self, code: Code, format: Format, log_id: &str) {
        let camel = format == Format::Bare;
        let account = 100_000 + self.rng.zipf(self.cfg.accounts);
        let world = 1 + (account * 7919) % self.cfg.worlds.max(1);
        let r = &mut self.rng;
        let f = &mut self.fields;
        f.clear();
        let mut push = |snake: &'static str, camel_name: &'static str, v: Value| {
            f.push((snake, camel_name, v))
        };
        push("log_id", "logId", Value::Text(log_id.to_string()));
        push("server", "gameWorld", Value::Text(format!("kr-{world:02}")));
        if camel {
            push("", "playerId", Value::Text(format!("p_{account}")));
        } else {
            push("account_id", "", Value::Int(account as i64));
        }
        push(
            "char_id",
            "character1Id",
            Value::Int((account * 10 + r.below(3)) as i64),
        );
        push(
            "char_level",
            "character1Lv",
            Value::Int(1 + (account % 99) as i64),
        );
        let os_idx = (account % 3) as usize;
        push("os", "os", Value::Text(OS[os_idx].into()));
        push("market", "market", Value::Text(MARKETS[os_idx].into()));
        match code {
            Code::Combat => {
                push("map_id", "mapId", Value::Int(100 + r.below(60) as i64));
                push(
                    "monster_id",
                    "monsterId",
                    Value::Int(7000 + r.below(500) as i64),
                );
                push(
                    "skill_id",
                    "skillId",
                    Value::Int(1000 + r.below(120) as i64),
                );
                push(
                    "damage",
                    "damage",
                    Value::Float((r.below(10_000_000) as f64) / 100.0),
                );
                push("crit", "crit", Value::Bool(r.below(5) == 0));
                push("party_size", "partySize", Value::Int(1 + r.below(8) as i64));
            }
            Code::ItemAcquire | Code::ItemConsume => {
                push(
                    "item_id",
                    "itemId",
                    Value::Int(50_000 + r.below(2000) as i64),
                );
                push(
                    "item_name",
                    "itemNm",
                    Value::Text(r.pick(&ITEMS).to_string()),
                );
                push(
                    "item_grade",
                    "itemGrade",
                    Value::Text(r.pick(&GRADES).to_string()),
                );
                push(
                    "count",
                    "count",
                    Value::Int(if r.below(4) == 0 {
                        1 + r.below(99) as i64
                    } else {
                        1
                    }),
                );
                let reason = if code == Code::ItemConsume {
                    "use"
                } else {
                    r.pick(&ITEM_REASONS)
                };
                push("reason", "reason", Value::Text(reason.into()));
                if camel {
                    push(
                        "",
                        "modType",
                        Value::Text(
                            if code == Code::ItemConsume {
                                "consume"
                            } else {
                                "acquire"
                            }
                            .into(),
                        ),
                    );
                }
            }
            Code::Currency => {
                let delta = r.below(100_000) as i64 - 50_000;
                push(
                    "currency",
                    "rCurrency",
                    Value::Text(r.pick(&CURRENCIES).to_string()),
                );
                push("delta", "delta", Value::Int(delta));
                push("balance", "amount", Value::Int(r.below(10_000_000) as i64));
                push(
                    "reason",
                    "reason",
                    Value::Text(r.pick(&CURRENCY_REASONS).to_string()),
                );
            }
            Code::Quest => {
                push(
                    "quest_id",
                    "questId",
                    Value::Int(30_000 + r.below(1000) as i64),
                );
                push(
                    "state",
                    "state",
                    Value::Text(r.pick(&["accept", "complete", "abandon"]).to_string()),
                );
                push("exp", "exp", Value::Int(r.below(100_000) as i64));
            }
            Code::Action => {
                push(
                    "action",
                    "action",
                    Value::Text(
                        r.pick(&["emote", "craft", "enchant", "party_invite"])
                            .to_string(),
                    ),
                );
                push(
                    "target",
                    "target",
                    Value::Text(format!("npc:{}", r.below(300))),
                );
            }
            Code::Login | Code::Logout | Code::Heartbeat => {
                push(
                    "session_id",
                    "sessionId",
                    Value::Text(format!("s{:x}", account * 31 + r.below(4))),
                );
                push(
                    "client_ver",
                    "clientVer",
                    Value::Text(format!("1.{}.{}", r.below(3), r.below(20))),
                );
                push(
                    "char_name",
                    "character1Nm",
                    Value::Text(r.pick(&CHAR_NAMES).to_string()),
                );
            }
            Code::Round => {
                push("round_id", "roundId", Value::Int(r.below(1_000_000) as i64));
                push(
                    "result",
                    "result",
                    Value::Text(r.pick(&["win", "lose", "draw"]).to_string()),
                );
                push(
                    "duration_s",
                    "durationSec",
                    Value::Int(60 + r.below(900) as i64),
                );
            }
            Code::Payment => {
                let (product, price) = *r.pick(&PRODUCTS);
                push("product_id", "productId", Value::Text(product.into()));
                push("price_krw", "priceKrw", Value::Int(price));
                push("store", "market", Value::Text(MARKETS[os_idx].into()));
                push(
                    "order_id",
                    "orderId",
                    Value::Text(format!("GPA.{}-{}", r.below(9999), r.below(9999))),
                );
            }
        }
        let camel_only = camel;
        f.retain(|(s, c, _)| {
            if camel_only {
                !c.is_empty()
            } else {
                !s.is_empty()
            }
        });
    }

    fn corrupt(&mut self, text: &mut String, out: &mut Vec<u8>) {
        match self.rng.below(4) {
            0 => {
                // Truncated in the middle of the line.
                let mut cut = text.len() / 2;
                while !text.is_char_boundary(cut) {
                    cut -= 1;
                }
                out.extend_from_slice(&text.as_bytes()[..cut]);
            }
            1 => {
                let pos = text.rfind('}').unwrap_or(text.len());
                text.insert_str(pos, ", note=\"bad \\q escape\"");
                out.extend_from_slice(text.as_bytes());
            }
            2 => {
                out.extend_from_slice(b"\xff\xfe");
                out.extend_from_slice(text.as_bytes());
            }
            _ => {
                out.extend_from_slice(b"{no_code_here: 1, logId: \"x\"}");
            }
        }
    }
}

fn code_name(code: Code, camel: bool) -> &'static str {
    match (code, camel) {
        (Code::Combat, _) => "combat",
        (Code::ItemAcquire, false) => "item_acquire",
        (Code::ItemConsume, false) => "item_consume",
        (Code::ItemAcquire | Code::ItemConsume, true) => "item",
        (Code::Currency, false) => "currency",
        (Code::Currency, true) => "resource",
        (Code::Quest, _) => "quest",
        (Code::Action, _) => "action",
        (Code::Login, _) => "login",
        (Code::Logout, _) => "logout",
        (Code::Heartbeat, _) => "heartbeat",
        (Code::Round, _) => "round",
        (Code::Payment, _) => "payment",
    }
}

fn name<'a>(f: &'a (&'static str, &'static str, Value), camel: bool) -> &'a str {
    if camel {
        f.1
    } else {
        f.0
    }
}

fn write_value(out: &mut String, v: &Value, quote: char) {
    match v {
        Value::Int(i) => {
            let _ = write!(out, "{i}");
        }
        Value::Float(x) => {
            let _ = write!(out, "{x:?}");
        }
        Value::Bool(b) => {
            let _ = write!(out, "{b}");
        }
        Value::Text(s) => {
            out.push(quote);
            for c in s.chars() {
                if c == quote || c == '\\' {
                    out.push('\\');
                }
                out.push(c);
            }
            out.push(quote);
        }
    }
}

/// UTC epoch milliseconds as `YYYY-MM-DD HH:MM:SS.fff` in Seoul (UTC+9, no daylight saving).
fn seoul_local(time_ms: i64) -> String {
    let ms = time_ms + 9 * 3_600_000;
    let secs = ms.div_euclid(1000);
    let (days, sod) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    let (y, m, d) = civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02}.{:03}",
        sod / 3600,
        sod / 60 % 60,
        sod % 60,
        ms.rem_euclid(1000)
    )
}

pub(crate) fn utc_rfc3339(time_ms: i64) -> String {
    let secs = time_ms.div_euclid(1000);
    let (days, sod) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    let (y, m, d) = civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{:03}Z",
        sod / 3600,
        sod / 60 % 60,
        sod % 60,
        time_ms.rem_euclid(1000)
    )
}

fn civil_from_days(z: i64) -> (i64, i64, i64) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    (if m <= 2 { y + 1 } else { y }, m, d)
}

fn write_kv(
    out: &mut String,
    code: &str,
    time_ms: i64,
    fields: &[(&'static str, &'static str, Value)],
) {
    let _ = write!(out, "{} [{code}] {{", seoul_local(time_ms));
    for (i, f) in fields.iter().enumerate() {
        if i > 0 {
            out.push_str(", ");
        }
        out.push_str(name(f, false));
        out.push('=');
        match &f.2 {
            // Game servers write simple words bare and quote the rest.
            Value::Text(s)
                if s.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
                    && !s.is_empty() =>
            {
                out.push_str(s)
            }
            v => write_value(out, v, '\''),
        }
    }
    out.push('}');
}

fn write_ndjson(
    out: &mut String,
    code: &str,
    time_ms: i64,
    fields: &[(&'static str, &'static str, Value)],
) {
    let _ = write!(
        out,
        "{{\"ts\":\"{}\",\"code\":\"{code}\"",
        utc_rfc3339(time_ms)
    );
    for f in fields {
        let _ = write!(out, ",\"{}\":", name(f, false));
        write_value(out, &f.2, '"');
    }
    out.push('}');
}

fn write_bare(
    out: &mut String,
    code: &str,
    time_ms: i64,
    fields: &[(&'static str, &'static str, Value)],
) {
    let _ = write!(out, "{{code:\"{code}\", appId:\"odin\"");
    for f in fields {
        let _ = write!(out, ", {}:", name(f, true));
        write_value(out, &f.2, '"');
    }
    let _ = write!(out, ", modTime:\"{}\"}}", seoul_local(time_ms));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_seed_same_lines() {
        let cfg = GenConfig {
            seed: 7,
            malformed: 0.1,
            ..GenConfig::default()
        };
        let (mut a, mut b) = (Generator::new(cfg.clone()), Generator::new(cfg));
        let (mut x, mut y) = (Vec::new(), Vec::new());
        assert_eq!(
            a.body(200, 1_764_300_000_000, &mut x),
            b.body(200, 1_764_300_000_000, &mut y)
        );
        assert_eq!(x, y);
    }

    #[test]
    fn malformed_share_is_close_to_asked() {
        let mut g = Generator::new(GenConfig {
            seed: 3,
            malformed: 0.2,
            ..GenConfig::default()
        });
        let mut out = Vec::new();
        let ids = g.body(5000, 1_764_300_000_000, &mut out);
        let bad = 5000 - ids.len();
        assert!((800..1200).contains(&bad), "{bad}");
        assert_eq!(out.iter().filter(|b| **b == b'\n').count(), 5000);
    }

    #[test]
    fn times_are_formatted_like_game_servers() {
        // 2026-11-27T17:10:11.123Z is 02:10:11.123 on the 28th in Seoul.
        let ms = 1_795_799_411_123;
        assert_eq!(utc_rfc3339(ms), "2026-11-27T17:10:11.123Z");
        assert_eq!(seoul_local(ms), "2026-11-28 02:10:11.123");
    }

    #[test]
    fn lines_are_about_three_hundred_bytes() {
        let mut g = Generator::new(GenConfig::default());
        let mut out = Vec::new();
        g.body(1000, 1_764_300_000_000, &mut out);
        let avg = out.len() / 1000;
        assert!((150..450).contains(&avg), "{avg}");
    }
}
