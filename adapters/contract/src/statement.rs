//! Provider statements (daily trade bills) in Moongate's vocabulary, for reconciliation.
//!
//! A statement is fetched in two steps, both sans-IO like the rest of the contract: ask where
//! the day's file is ([`StatementLocation`]), then download it. The file is stored raw by the
//! core and read back through [`StatementSink`]: lines are handed over one by one, so a
//! million-line bill never sits in memory, and the provider's own control totals are checked
//! at the end. A file that does not add up is refused with a [`StatementError`]; the caller
//! must then discard whatever it collected (nothing is half-imported).

use std::io::{BufRead, Read, Seek};

use time::{Date, OffsetDateTime, UtcOffset};

use crate::money::Currency;

/// China Standard Time (UTC+8): statement days and bill timestamps are in it.
pub const BEIJING: UtcOffset = match UtcOffset::from_hms(8, 0, 0) {
    Ok(offset) => offset,
    Err(_) => UtcOffset::UTC,
};

/// Where a day's statement is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StatementLocation {
    /// Download it from here (the link is short-lived: 30 s at Alipay, 5 minutes at WeChat Pay).
    Download {
        /// The download URL.
        url: String,
        /// SHA-1 (lower-case hex) of the file, when the provider states one (WeChat Pay).
        sha1: Option<String>,
    },
    /// The provider sent the file itself in its answer (UnionPay's file transfer): these bytes
    /// are the statement, stored as they are.
    Inline {
        /// The file.
        bytes: Vec<u8>,
    },
    /// The provider has no statement for that day because nothing happened on it: an empty
    /// statement (every payment the ledger holds for the day is then missing at the provider).
    Empty,
    /// Not generated yet (bills are ready the next day after about 10:00 Beijing time).
    NotReady {
        /// The provider's code.
        code: String,
    },
}

/// What a statement line records.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum LineKind {
    /// Money collected for a payment.
    Payment,
    /// Money returned for a refund.
    Refund,
}

/// One line of a statement, in integer minor units.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StatementLine {
    /// 1-based line number in the statement file (for the break list).
    pub line: u64,
    /// Payment or refund.
    pub kind: LineKind,
    /// True when the provider says the money moved (a paid order, a completed refund); false
    /// for lines in another state (a reversed payment code, …), which the matcher flags.
    pub settled: bool,
    /// The provider's transaction number (Alipay `trade_no`, WeChat Pay `transaction_id`).
    pub provider_txn_id: String,
    /// The merchant order number, i.e. Moongate's payment id (`out_trade_no`).
    pub payment_id: String,
    /// For a refund line: Moongate's refund id (`out_request_no` / `out_refund_no`).
    pub refund_id: Option<String>,
    /// For a refund line: the provider's refund number, when the bill has one.
    pub provider_refund_id: Option<String>,
    /// The amount collected (payment) or returned (refund), minor units, never negative.
    pub amount: i64,
    /// Currency of the amount.
    pub currency: Currency,
    /// The provider's fee on this line in thousandths of a minor unit (WeChat Pay states fees
    /// to 1/100,000 yuan): positive when charged, negative when given back on a refund.
    pub fee_milli: i64,
    /// When the provider completed it, when the bill says.
    pub completed_at: Option<OffsetDateTime>,
    /// The provider's word for its state (`SUCCESS`, `REFUND`, `交易`, `退款`, …).
    pub provider_status: String,
    /// The provider's trade type or business type, as written (`NATIVE`, `交易`, …).
    pub trade_type: String,
}

/// The control totals of a statement, as the provider states them and checked against its lines.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct StatementTotals {
    /// Lines read.
    pub lines: u64,
    /// Payment lines.
    pub payments: u64,
    /// Sum of payment lines, minor units.
    pub payment_total: i64,
    /// Refund lines.
    pub refunds: u64,
    /// Sum of refund lines, minor units.
    pub refund_total: i64,
    /// Sum of fees, thousandths of a minor unit.
    pub fee_total_milli: i64,
}

impl StatementTotals {
    /// Adds one line.
    pub fn add(&mut self, line: &StatementLine) {
        self.lines += 1;
        match line.kind {
            LineKind::Payment => {
                self.payments += 1;
                self.payment_total = self.payment_total.saturating_add(line.amount);
            }
            LineKind::Refund => {
                self.refunds += 1;
                self.refund_total = self.refund_total.saturating_add(line.amount);
            }
        }
        self.fee_total_milli = self.fee_total_milli.saturating_add(line.fee_milli);
    }
}

/// Why a statement was refused: the line (1-based; 0 for the file as a whole) and what is wrong.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("statement line {line}: {message}")]
pub struct StatementError {
    /// 1-based line number, 0 for the file as a whole.
    pub line: u64,
    /// What is wrong.
    pub message: String,
}

impl StatementError {
    /// An error at a line.
    pub fn at(line: u64, message: impl Into<String>) -> StatementError {
        StatementError {
            line,
            message: message.into(),
        }
    }
}

/// A seekable byte source (a stored statement file; zips need to seek).
pub trait StatementSource: Read + Seek {}

impl<T: Read + Seek> StatementSource for T {}

/// Receives statement lines one by one; an error stops the reading.
pub type StatementSink<'a> = dyn FnMut(StatementLine) -> Result<(), StatementError> + 'a;

/// Bounds on what a statement reader accepts: a statement comes from outside, and a file that
/// exceeds one of them is refused whole before it can take the gateway's memory or hours of
/// its time. The defaults are well above real bills: a line of either wallet's bill is under
/// 1 KB; a million-line day (a very large merchant) is about 250 MB of text and compresses
/// 5–10 times.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StatementLimits {
    /// Longest line, bytes (its end of line excluded).
    pub max_line_bytes: usize,
    /// Most lines in the file.
    pub max_lines: u64,
    /// Most bytes of text read (after decompression).
    pub max_bytes: u64,
    /// Most bytes of text per compressed byte, once past [`StatementLimits::RATIO_GRACE`]
    /// bytes of text (a zip bomb inflates a thousand times).
    pub max_ratio: u64,
}

impl StatementLimits {
    /// What Moongate reads: 64 KiB lines, 10 million lines, 2 GiB of text, 100 : 1 (ten
    /// times the largest day measured, a million lines; raise them here for an account that
    /// really has more).
    pub const DEFAULT: StatementLimits = StatementLimits {
        max_line_bytes: 64 << 10,
        max_lines: 10_000_000,
        max_bytes: 2 << 30,
        max_ratio: 100,
    };

    /// Text allowed before the compression ratio is held against the file.
    pub const RATIO_GRACE: u64 = 1 << 20;

    /// Wraps the decompressed stream of `compressed` bytes so that reading fails once it
    /// yields more than `max_bytes`, or more than `max_ratio` times `compressed` (past the
    /// grace).
    pub fn inflated<R: Read>(&self, inner: R, compressed: u64) -> Inflated<R> {
        let by_ratio = compressed
            .saturating_mul(self.max_ratio)
            .max(Self::RATIO_GRACE);
        Inflated {
            inner,
            read: 0,
            limit: by_ratio.min(self.max_bytes),
            ratio: by_ratio < self.max_bytes,
        }
    }
}

impl Default for StatementLimits {
    fn default() -> StatementLimits {
        StatementLimits::DEFAULT
    }
}

/// A decompressed stream with a ceiling (see [`StatementLimits::inflated`]).
#[derive(Debug)]
pub struct Inflated<R> {
    inner: R,
    read: u64,
    limit: u64,
    ratio: bool,
}

impl<R: Read> Read for Inflated<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.read = self.read.saturating_add(n as u64);
        if self.read > self.limit {
            let why = if self.ratio {
                "it inflates more than the compression ratio limit (a zip bomb?)"
            } else {
                "it is larger than the size limit once decompressed"
            };
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!("refused after {} bytes: {why}", self.limit),
            ));
        }
        Ok(n)
    }
}

/// Reads a statement's lines within [`StatementLimits`]: each line is read into one reused
/// buffer, never more than the longest line allowed (an endless line costs 64 KiB, not the
/// gateway's memory), and the line count and total size are held to their limits.
#[derive(Debug)]
pub struct LineReader<R> {
    inner: R,
    limits: StatementLimits,
    buffer: Vec<u8>,
    number: u64,
    bytes: u64,
}

impl<R: BufRead> LineReader<R> {
    /// Reads `inner` within `limits`.
    pub fn new(inner: R, limits: StatementLimits) -> LineReader<R> {
        LineReader {
            inner,
            limits,
            buffer: Vec::with_capacity(512),
            number: 0,
            bytes: 0,
        }
    }

    /// The next line's 1-based number and its bytes without the `\n` or `\r\n`, or `None`
    /// at the end of the file.
    pub fn next_line(&mut self) -> Result<Option<(u64, &[u8])>, StatementError> {
        self.buffer.clear();
        let cap = self.limits.max_line_bytes as u64 + 2;
        let read = (&mut self.inner)
            .take(cap)
            .read_until(b'\n', &mut self.buffer)
            .map_err(|e| StatementError::at(self.number, format!("read failed: {e}")))?;
        if read == 0 {
            return Ok(None);
        }
        self.number += 1;
        self.bytes = self.bytes.saturating_add(read as u64);
        if self.number > self.limits.max_lines {
            return Err(StatementError::at(
                self.number,
                format!("more than {} lines", self.limits.max_lines),
            ));
        }
        if self.bytes > self.limits.max_bytes {
            return Err(StatementError::at(
                self.number,
                format!("more than {} bytes", self.limits.max_bytes),
            ));
        }
        let mut line = self.buffer.as_slice();
        let ended = line.last() == Some(&b'\n');
        line = line.strip_suffix(b"\n").unwrap_or(line);
        line = line.strip_suffix(b"\r").unwrap_or(line);
        if line.len() > self.limits.max_line_bytes || !ended && read as u64 == cap {
            return Err(StatementError::at(
                self.number,
                format!("line longer than {} bytes", self.limits.max_line_bytes),
            ));
        }
        Ok(Some((self.number, line)))
    }
}

/// The Beijing calendar day of an instant.
pub fn beijing_day(at: OffsetDateTime) -> Date {
    at.to_offset(BEIJING).date()
}

/// `yyyy-MM-dd`: how both providers and Moongate write a statement day.
pub fn format_day(day: Date) -> String {
    format!(
        "{:04}-{:02}-{:02}",
        day.year(),
        u8::from(day.month()),
        day.day()
    )
}

/// Parses `yyyy-MM-dd` exactly (no surrounding spaces).
pub fn parse_day(text: &str) -> Option<Date> {
    let format = time::macros::format_description!("[year]-[month]-[day]");
    Date::parse(text, &format).ok()
}

/// Parses `yyyy-MM-dd HH:mm:ss` as Beijing time.
pub fn parse_beijing_datetime(text: &str) -> Option<OffsetDateTime> {
    let text = text.trim();
    // The bills' own shape, read by hand (a million lines a day); the same checks as the
    // format below, which reads anything else.
    if let [
        y0,
        y1,
        y2,
        y3,
        b'-',
        m0,
        m1,
        b'-',
        d0,
        d1,
        b' ',
        h0,
        h1,
        b':',
        n0,
        n1,
        b':',
        s0,
        s1,
    ] = *text.as_bytes()
    {
        let digit = |b: u8| b.is_ascii_digit().then(|| b - b'0');
        let two = |a, b| Some(digit(a)? * 10 + digit(b)?);
        let year = i32::from(two(y0, y1)?) * 100 + i32::from(two(y2, y3)?);
        let month = time::Month::try_from(two(m0, m1)?).ok()?;
        let date = time::Date::from_calendar_date(year, month, two(d0, d1)?).ok()?;
        let time = time::Time::from_hms(two(h0, h1)?, two(n0, n1)?, two(s0, s1)?).ok()?;
        return Some(time::PrimitiveDateTime::new(date, time).assume_offset(BEIJING));
    }
    let format = time::macros::format_description!("[year]-[month]-[day] [hour]:[minute]:[second]");
    time::PrimitiveDateTime::parse(text.trim(), &format)
        .ok()
        .map(|t| t.assume_offset(BEIJING))
}

/// Parses a decimal amount with up to `scale` decimals into an integer of `10^-scale` units,
/// accepting a leading `-` (returned as is) and rejecting anything else.
pub fn parse_scaled(text: &str, scale: u32) -> Option<i64> {
    let text = text.trim();
    let (negative, digits) = match text.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, text.strip_prefix('+').unwrap_or(text)),
    };
    let (whole, fraction) = digits.split_once('.').unwrap_or((digits, ""));
    if whole.is_empty()
        || fraction.len() > scale as usize
        || !whole.bytes().all(|b| b.is_ascii_digit())
        || !fraction.bytes().all(|b| b.is_ascii_digit())
        || whole.len() > 15
    {
        return None;
    }
    let whole: i64 = whole.parse().ok()?;
    let mut value = whole.checked_mul(10_i64.checked_pow(scale)?)?;
    let mut unit = 10_i64.checked_pow(scale)?;
    for b in fraction.bytes() {
        unit /= 10;
        value = value.checked_add(i64::from(b - b'0').checked_mul(unit)?)?;
    }
    Some(if negative { -value } else { value })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn beijing_datetimes_read_by_hand_as_the_format_reads_them() {
        let format =
            time::macros::format_description!("[year]-[month]-[day] [hour]:[minute]:[second]");
        let by_format = |t: &str| {
            time::PrimitiveDateTime::parse(t.trim(), &format)
                .ok()
                .map(|t| t.assume_offset(BEIJING))
        };
        for text in [
            "2026-11-21 09:30:05",
            " 2026-11-21 23:59:59 ",
            "2024-02-29 00:00:00",
            "2026-02-29 00:00:00",
            "2026-13-01 00:00:00",
            "2026-00-10 00:00:00",
            "2026-11-31 10:00:00",
            "2026-11-21 24:00:00",
            "2026-11-21 10:60:00",
            "2026-11-21 10:00:61",
            "2026-11-21T10:00:00",
            "2026-1-21 10:00:000",
            "2026-11-2a 10:00:00",
            "２026-11-21 10:00:0",
            "",
        ] {
            assert_eq!(parse_beijing_datetime(text), by_format(text), "{text:?}");
        }
        assert!(parse_beijing_datetime("2026-11-21 09:30:05").is_some());
    }

    fn lines(text: &[u8], limits: StatementLimits) -> Result<Vec<Vec<u8>>, StatementError> {
        let mut reader = LineReader::new(text, limits);
        let mut out = Vec::new();
        while let Some((number, line)) = reader.next_line()? {
            assert_eq!(number, out.len() as u64 + 1);
            out.push(line.to_vec());
        }
        Ok(out)
    }

    #[test]
    fn lines_within_limits() {
        let limits = StatementLimits {
            max_line_bytes: 4,
            max_lines: 3,
            max_bytes: 100,
            max_ratio: 100,
        };
        assert_eq!(
            lines(b"ab\r\ncdef\n\nxy", limits),
            Err(StatementError::at(4, "more than 3 lines"))
        );
        assert_eq!(
            lines(b"ab\r\ncdef\nxy", limits),
            Ok(vec![b"ab".to_vec(), b"cdef".to_vec(), b"xy".to_vec()])
        );
        // Exactly the longest line, with or without its CRLF, then one byte more.
        assert!(lines(b"abcd\r\n", limits).is_ok());
        assert!(lines(b"abcd", limits).is_ok());
        assert_eq!(
            lines(b"ok\nabcde\n", limits),
            Err(StatementError::at(2, "line longer than 4 bytes"))
        );
        assert_eq!(
            lines(&[b'x'; 10_000], limits),
            Err(StatementError::at(1, "line longer than 4 bytes"))
        );
        let small = StatementLimits {
            max_bytes: 6,
            ..limits
        };
        assert_eq!(
            lines(b"abc\nde\nf\n", small),
            Err(StatementError::at(2, "more than 6 bytes"))
        );
    }

    #[test]
    fn inflation_is_bounded() {
        let limits = StatementLimits::DEFAULT;
        let zeros = std::io::repeat(0).take(3 << 20);
        // 3 MiB out of 10 KiB compressed: past the 1 MiB grace at 100 : 1.
        let mut bomb = limits.inflated(zeros, 10 << 10);
        let error = std::io::copy(&mut bomb, &mut std::io::sink()).unwrap_err();
        assert!(error.to_string().contains("compression ratio"), "{error}");
        // 3 MiB out of 100 KiB is 30 : 1.
        let zeros = std::io::repeat(0).take(3 << 20);
        let mut fine = limits.inflated(zeros, 100 << 10);
        assert_eq!(
            std::io::copy(&mut fine, &mut std::io::sink()).ok(),
            Some(3 << 20)
        );
        let capped = StatementLimits {
            max_bytes: 1 << 20,
            ..limits
        };
        let zeros = std::io::repeat(0).take(2 << 20);
        let mut big = capped.inflated(zeros, 1 << 20);
        let error = std::io::copy(&mut big, &mut std::io::sink()).unwrap_err();
        assert!(error.to_string().contains("size limit"), "{error}");
    }

    #[test]
    fn scaled_amounts() {
        assert_eq!(parse_scaled("0.01", 2), Some(1));
        assert_eq!(parse_scaled("-0.01", 2), Some(-1));
        assert_eq!(parse_scaled("12", 2), Some(1200));
        assert_eq!(parse_scaled("1.5", 2), Some(150));
        assert_eq!(parse_scaled("0.01000", 5), Some(1000));
        assert_eq!(parse_scaled("0.001", 2), None);
        assert_eq!(parse_scaled("", 2), None);
        assert_eq!(parse_scaled("1e3", 2), None);
        assert_eq!(parse_scaled(".5", 2), None);
        assert_eq!(parse_scaled("99999999999999999999", 2), None);
    }

    #[test]
    fn days_round_trip() {
        let day = time::macros::date!(2026 - 01 - 05);
        assert_eq!(format_day(day), "2026-01-05");
        assert_eq!(parse_day("2026-01-05"), Some(day));
        assert_eq!(parse_day(" 2026-01-05"), None);
        assert_eq!(parse_day("2026-13-01"), None);
    }

    #[test]
    fn beijing_days() {
        // 01:00 in Beijing is still the previous day in UTC.
        let t = parse_beijing_datetime("2026-11-22 01:00:00").map(|t| t.to_offset(UtcOffset::UTC));
        assert_eq!(
            t.map(|t| t.date()),
            Some(time::macros::date!(2026 - 11 - 21))
        );
        assert_eq!(
            t.map(beijing_day),
            Some(time::macros::date!(2026 - 11 - 22))
        );
    }
}
