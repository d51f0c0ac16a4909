//! UnionPay's transaction file (`INN{yyMMdd}88ZM_{merId}`, inside the zip of file transfer
//! `76/01/000000`): one transaction a line, 42 fixed-width byte fields separated by one space
//! (607 bytes), lines ending CRLF; text fields are GBK, which nothing here needs to decode
//! because every field read is ASCII and offsets count bytes. The layout is the official
//! demo's `parseZMFile` widths (`../shared/reference/more-wallets.md` §1.6); no real file was
//! at hand, so the reader is held to that layout and refuses a line that does not fit it.
//!
//! How a line becomes a [`StatementLine`]:
//! - `txnType` `01` (consume) is a payment: its `orderId` is the payment's, its `queryId` the
//!   provider's transaction number. `04` (refund) and `31` (consume undo) are refunds: their
//!   `orderId` is the refund's own, `origQryId` the consume's `queryId`, and the payment's
//!   order id is the `reqReserved` Moongate sent (the file's `merReserved`), else the
//!   file's `origOrderId`. Any other `txnType` is not something Moongate sends, and the file
//!   is refused rather than read without it.
//! - The file lists what cleared; its failures are in the `ZME` file beside it, so every
//!   line read is settled.
//! - `merCharge`, the merchant's fee, is 13 bytes whose sign convention is not published at
//!   hand: `D` + 12 digits is charged, `C` + 12 digits given back, and 13 plain digits are
//!   charged on a consume and given back on a refund or undo. Blank is no fee.
//! - `txnTime` (`MMDDhhmmss`, Beijing) takes its year from the clearing day in the file's
//!   name: the latest such time not after the end of that day.

use std::io::{BufRead, BufReader, Read, Seek};

use moongate_contract::statement::{
    BEIJING, LineKind, LineReader, StatementError, StatementLimits, StatementLine, StatementTotals,
};
use moongate_contract::{Currency, StatementSink};
use time::{Date, Month, OffsetDateTime, PrimitiveDateTime, Time};

use crate::mapping::moongate_id;

/// Field widths of a ZM line, in order.
const WIDTHS: [usize; 42] = [
    3, 11, 11, 6, 10, 19, 12, 4, 2, 21, 2, 32, 2, 6, 10, 13, 13, 4, 15, 2, 2, 6, 2, 4, 32, 1, 21,
    15, 1, 15, 32, 13, 13, 8, 32, 13, 13, 12, 2, 1, 32, 98,
];

/// The bytes of a ZM line.
pub const LINE_BYTES: usize = 607;

/// Field positions (0-based) of what is read.
mod at {
    pub const TXN_TIME: usize = 4;
    pub const TXN_AMT: usize = 6;
    pub const QUERY_ID: usize = 9;
    pub const ORDER_ID: usize = 11;
    pub const MER_CHARGE: usize = 15;
    pub const TXN_TYPE: usize = 19;
    pub const TXN_SUB_TYPE: usize = 20;
    pub const ORIG_QRY_ID: usize = 26;
    pub const MER_ID: usize = 27;
    pub const MER_RESERVED: usize = 34;
    pub const ORIG_ORDER_ID: usize = 40;
}

/// The fields a reconciliation needs from one ZM line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ZmRecord {
    /// 1-based line number.
    pub line: u64,
    /// `txnTime`, `MMDDhhmmss` (Beijing).
    pub txn_time: String,
    /// `txnAmt` in fen.
    pub txn_amt: i64,
    /// UnionPay's `queryId` of the transaction.
    pub query_id: String,
    /// The transaction's `orderId`.
    pub order_id: String,
    /// `merCharge` as written (13 bytes, trimmed).
    pub mer_charge: String,
    /// `txnType`: `01` consume, `04` refund, `31` undo, …
    pub txn_type: String,
    /// `txnSubType`.
    pub txn_sub_type: String,
    /// For a refund or undo: the `queryId` of the consume it reverses.
    pub orig_qry_id: Option<String>,
    /// `merId`.
    pub mer_id: String,
    /// `merReserved`: the request's `reqReserved` (a refund's payment order id).
    pub mer_reserved: Option<String>,
    /// `origOrderId`: a refund's or undo's consume order id.
    pub orig_order_id: Option<String>,
}

fn trimmed(bytes: &[u8]) -> Option<&str> {
    std::str::from_utf8(bytes).ok().map(str::trim)
}

/// Reads one ZM line.
pub fn parse_line(number: u64, line: &[u8]) -> Result<ZmRecord, StatementError> {
    if line.len() != LINE_BYTES {
        return Err(StatementError::at(
            number,
            format!("a ZM line is {LINE_BYTES} bytes, this one {}", line.len()),
        ));
    }
    let mut fields: [&[u8]; 42] = [&[]; 42];
    let mut left = 0;
    for (slot, width) in fields.iter_mut().zip(WIDTHS) {
        *slot = line
            .get(left..left + width)
            .ok_or_else(|| StatementError::at(number, "short line"))?;
        left += width;
        if left < LINE_BYTES && line.get(left) != Some(&b' ') {
            return Err(StatementError::at(
                number,
                format!("no separator at byte {left}"),
            ));
        }
        left += 1;
    }
    let text = |index: usize, name: &str| -> Result<String, StatementError> {
        fields
            .get(index)
            .and_then(|f| trimmed(f))
            .map(str::to_owned)
            .ok_or_else(|| StatementError::at(number, format!("{name} is not ASCII")))
    };
    let optional = |index: usize, name: &str| -> Result<Option<String>, StatementError> {
        let value = text(index, name)?;
        Ok((!value.is_empty()).then_some(value))
    };
    let txn_amt = text(at::TXN_AMT, "txnAmt")?;
    let txn_amt = txn_amt
        .bytes()
        .all(|b| b.is_ascii_digit())
        .then(|| txn_amt.parse::<i64>().ok())
        .flatten()
        .ok_or_else(|| StatementError::at(number, "txnAmt is not an amount in fen"))?;
    let required = |index: usize, name: &str| -> Result<String, StatementError> {
        optional(index, name)?.ok_or_else(|| StatementError::at(number, format!("no {name}")))
    };
    Ok(ZmRecord {
        line: number,
        txn_time: required(at::TXN_TIME, "txnTime")?,
        txn_amt,
        query_id: required(at::QUERY_ID, "queryId")?,
        order_id: required(at::ORDER_ID, "orderId")?,
        mer_charge: text(at::MER_CHARGE, "merCharge")?,
        txn_type: required(at::TXN_TYPE, "txnType")?,
        txn_sub_type: text(at::TXN_SUB_TYPE, "txnSubType")?,
        orig_qry_id: optional(at::ORIG_QRY_ID, "origQryId")?,
        mer_id: required(at::MER_ID, "merId")?,
        mer_reserved: optional(at::MER_RESERVED, "merReserved")?,
        orig_order_id: optional(at::ORIG_ORDER_ID, "origOrderId")?,
    })
}

/// Reads a ZM file within `limits`, handing each record to `sink`.
pub fn read_zm<R, F>(reader: R, limits: StatementLimits, mut sink: F) -> Result<u64, StatementError>
where
    R: BufRead,
    F: FnMut(ZmRecord) -> Result<(), StatementError>,
{
    let mut lines = LineReader::new(reader, limits);
    let mut count = 0;
    while let Some((number, line)) = lines.next_line()? {
        if line.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        sink(parse_line(number, line)?)?;
        count += 1;
    }
    Ok(count)
}

/// `merCharge` in fen, positive when charged: `D…` charged, `C…` given back, plain digits
/// charged on a consume and given back on a refund.
fn fee_fen(text: &str, refund: bool) -> Option<i64> {
    let digits = |t: &str| {
        (!t.is_empty() && t.bytes().all(|b| b.is_ascii_digit()))
            .then(|| t.parse::<i64>().ok())
            .flatten()
    };
    if text.is_empty() {
        return Some(0);
    }
    if let Some(rest) = text.strip_prefix('D') {
        return digits(rest);
    }
    if let Some(rest) = text.strip_prefix('C') {
        return digits(rest).map(|f| -f);
    }
    digits(text).map(|f| if refund { -f } else { f })
}

/// The number the ASCII digits of `text[range]` write (two digits of a date or time).
fn digits_at(text: &str, range: std::ops::Range<usize>) -> Option<u8> {
    let part = text.get(range)?;
    part.bytes()
        .all(|b| b.is_ascii_digit())
        .then(|| part.parse().ok())
        .flatten()
}

/// `txnTime` (`MMDDhhmmss`, Beijing) in the year that puts it last before the end of the
/// clearing day `day` (a bill of 1 January holds the evening of 31 December).
fn txn_instant(text: &str, day: Date) -> Option<OffsetDateTime> {
    let number = |range| digits_at(text, range);
    if text.len() != 10 {
        return None;
    }
    let month = Month::try_from(number(0..2)?).ok()?;
    let time = Time::from_hms(number(4..6)?, number(6..8)?, number(8..10)?).ok()?;
    let at = |year: i32| {
        Date::from_calendar_date(year, month, number(2..4)?)
            .ok()
            .map(|d| PrimitiveDateTime::new(d, time).assume_offset(BEIJING))
    };
    let end = day
        .next_day()?
        .with_time(Time::MIDNIGHT)
        .assume_offset(BEIJING);
    match at(day.year()) {
        Some(this_year) if this_year < end => Some(this_year),
        _ => at(day.year() - 1),
    }
}

/// A ZM record as a statement line of merchant `mer_id`'s bill of clearing day `day`.
pub fn statement_line(
    record: ZmRecord,
    mer_id: &str,
    day: Date,
) -> Result<StatementLine, StatementError> {
    let number = record.line;
    let bad = |message: String| StatementError::at(number, message);
    if record.mer_id != mer_id {
        return Err(bad(format!(
            "the line is merchant {}'s, the account is {mer_id}",
            record.mer_id
        )));
    }
    let moongate = |order: &str| {
        moongate_id(order).ok_or_else(|| bad(format!("{order} is not an order id Moongate made")))
    };
    let (kind, payment_id, refund_id, provider_txn_id, provider_refund_id) =
        match record.txn_type.as_str() {
            "01" => (
                LineKind::Payment,
                moongate(&record.order_id)?,
                None,
                record.query_id.clone(),
                None,
            ),
            "04" | "31" => {
                let payment = record
                    .mer_reserved
                    .as_deref()
                    .or(record.orig_order_id.as_deref())
                    .ok_or_else(|| bad("a refund line names no payment".to_owned()))?;
                (
                    LineKind::Refund,
                    moongate(payment)?,
                    Some(moongate(&record.order_id)?),
                    record.orig_qry_id.clone().unwrap_or_default(),
                    Some(record.query_id.clone()),
                )
            }
            other => {
                return Err(bad(format!(
                    "txnType {other} is not a consume (01), refund (04) or undo (31)"
                )));
            }
        };
    let refund = kind == LineKind::Refund;
    let fee = fee_fen(&record.mer_charge, refund).ok_or_else(|| {
        bad(format!(
            "merCharge {:?} is not an amount",
            record.mer_charge
        ))
    })?;
    Ok(StatementLine {
        line: number,
        kind,
        settled: true,
        provider_txn_id,
        payment_id,
        refund_id,
        provider_refund_id,
        amount: record.txn_amt,
        currency: Currency::CNY,
        fee_milli: fee.saturating_mul(1000),
        completed_at: txn_instant(&record.txn_time, day),
        provider_status: record.txn_type.clone(),
        trade_type: format!("{}/{}", record.txn_type, record.txn_sub_type),
    })
}

/// Entries a bill zip may hold (ZM, ZME and a few others).
const MAX_ENTRIES: usize = 16;

/// The clearing day a ZM entry's name states: `INN{yyMMdd}88ZM_{merId}`.
fn zm_name_day(name: &str) -> Option<(Date, &str)> {
    let rest = name.strip_prefix("INN")?;
    let (digits, tail) = (rest.get(..6)?, rest.get(6..)?);
    let mer_id = tail.strip_prefix("88ZM_")?;
    let number = |range| digits_at(digits, range);
    let day = Date::from_calendar_date(
        2000 + i32::from(number(0..2)?),
        Month::try_from(number(2..4)?).ok()?,
        number(4..6)?,
    )
    .ok()?;
    Some((day, mer_id))
}

/// Reads merchant `mer_id`'s bill zip (the file transfer's `fileName`): its ZM entry, named
/// for the clearing day, line by line into `sink`. The entry is held to `limits` (its stated
/// size, what it really inflates to, and its ratio). The ZM file states no control totals;
/// the totals returned are its lines'.
pub fn read_bill_zip<R: Read + Seek>(
    source: R,
    mer_id: &str,
    limits: &StatementLimits,
    sink: &mut StatementSink<'_>,
) -> Result<StatementTotals, StatementError> {
    let mut archive = zip::ZipArchive::new(source)
        .map_err(|e| StatementError::at(0, format!("not a zip archive: {e}")))?;
    if archive.len() > MAX_ENTRIES {
        return Err(StatementError::at(
            0,
            format!("the zip holds {} entries; a bill has a few", archive.len()),
        ));
    }
    let mut found = None;
    let mut names = Vec::new();
    for index in 0..archive.len() {
        let entry = archive
            .by_index_raw(index)
            .map_err(|e| StatementError::at(0, format!("zip entry {index}: {e}")))?;
        let name = String::from_utf8_lossy(entry.name_raw()).into_owned();
        let base = name.rsplit('/').next().unwrap_or_default().to_owned();
        if let Some((day, owner)) = zm_name_day(&base) {
            if owner != mer_id {
                return Err(StatementError::at(
                    0,
                    format!("{base} is merchant {owner}'s bill, the account is {mer_id}"),
                ));
            }
            found = Some((index, day));
            break;
        }
        names.push(base);
    }
    let (index, day) = found.ok_or_else(|| {
        StatementError::at(
            0,
            format!(
                "no INN…88ZM_{mer_id} entry in the zip (entries: {})",
                names.join(", ")
            ),
        )
    })?;
    let entry = archive
        .by_index(index)
        .map_err(|e| StatementError::at(0, format!("zip entry: {e}")))?;
    if entry.size() > limits.max_bytes {
        return Err(StatementError::at(
            0,
            format!(
                "the ZM file states {} bytes, more than {}",
                entry.size(),
                limits.max_bytes
            ),
        ));
    }
    let compressed = entry.compressed_size();
    let mut totals = StatementTotals::default();
    read_zm(
        BufReader::with_capacity(1 << 16, limits.inflated(entry, compressed)),
        *limits,
        |record| {
            let line = statement_line(record, mer_id, day)?;
            totals.add(&line);
            sink(line)
        },
    )?;
    Ok(totals)
}

/// The bill zip out of a file-transfer answer's `fileContent`: base64 of the zlib-deflated
/// zip (the official SDK's `deCodeFileContent`). The inflation is held to `limits` (size and
/// ratio).
pub fn file_content_zip(
    file_content: &str,
    limits: &StatementLimits,
) -> Result<Vec<u8>, StatementError> {
    use base64::Engine as _;
    let compact: String = file_content
        .chars()
        .filter(|c| !c.is_ascii_whitespace())
        .collect();
    let deflated = base64::engine::general_purpose::STANDARD
        .decode(compact.as_bytes())
        .map_err(|e| StatementError::at(0, format!("fileContent is not base64: {e}")))?;
    let mut zipped = Vec::new();
    limits
        .inflated(
            flate2::read::ZlibDecoder::new(deflated.as_slice()),
            deflated.len() as u64,
        )
        .read_to_end(&mut zipped)
        .map_err(|e| StatementError::at(0, format!("fileContent does not inflate: {e}")))?;
    Ok(zipped)
}

/// Builds a ZM line from the fields a test names (the rest blank), for tests and the sandbox.
pub fn zm_line(fields: &[(usize, &[u8])]) -> Vec<u8> {
    let mut line = Vec::with_capacity(LINE_BYTES);
    for (index, width) in WIDTHS.iter().enumerate() {
        if index > 0 {
            line.push(b' ');
        }
        let value = fields
            .iter()
            .find(|(i, _)| *i == index)
            .map_or(&[][..], |(_, v)| *v);
        let mut cell = value
            .get(..(*width).min(value.len()))
            .unwrap_or_default()
            .to_vec();
        cell.resize(*width, b' ');
        line.extend_from_slice(&cell);
    }
    line
}

#[cfg(test)]
mod tests {
    use super::*;

    const MER: &str = "777290058167151";
    const PAY: &[u8] = b"pay01KBQ3Z5V7W9X1Y3Z5A7B9C1";
    const REFUND: &[u8] = b"re01KBQ3Z5V7W9X1Y3Z5A7B9C2";

    fn consume() -> Vec<u8> {
        zm_line(&[
            (0, b"S22"),
            (4, b"1201100000"),
            (6, b"000000008888"),
            (9, b"782212011000000000001"),
            (11, PAY),
            (15, b"D000000000053"),
            (19, b"01"),
            (20, b"07"),
            (27, MER.as_bytes()),
            // GBK text in a sub-merchant name: bytes, never decoded.
            (30, &[0xb2, 0xe8, 0xc9, 0xe1]),
        ])
    }

    fn refund(txn_type: &[u8], reserved: Option<&[u8]>) -> Vec<u8> {
        let mut fields: Vec<(usize, &[u8])> = vec![
            (4, b"1201120000"),
            (6, b"000000000100"),
            (9, b"782212011200000000002"),
            (11, REFUND),
            (15, b"0000000000001"),
            (19, txn_type),
            (20, b"00"),
            (26, b"782212011000000000001"),
            (27, MER.as_bytes()),
        ];
        if let Some(reserved) = reserved {
            fields.push((34, reserved));
        }
        zm_line(&fields)
    }

    fn day() -> Date {
        time::macros::date!(2026 - 12 - 01)
    }

    fn line_of(bytes: &[u8]) -> Result<StatementLine, String> {
        parse_line(1, bytes)
            .and_then(|r| statement_line(r, MER, day()))
            .map_err(|e| e.message)
    }

    #[test]
    fn a_line_is_read_by_byte_offsets() {
        let line = consume();
        assert_eq!(line.len(), LINE_BYTES);
        let record = parse_line(1, &line).map_err(|e| e.message);
        let record = record.unwrap_or_else(|m| unreachable!("{m}"));
        assert_eq!(record.txn_amt, 8888);
        assert_eq!(record.order_id.as_bytes(), PAY);
        assert_eq!(record.query_id, "782212011000000000001");
        assert_eq!((record.txn_type.as_str(), record.orig_qry_id), ("01", None));
        assert_eq!(record.mer_id, MER);
        let record = parse_line(2, &refund(b"04", Some(PAY))).map_err(|e| e.message);
        assert_eq!(
            record.map(|r| (r.orig_qry_id, r.mer_reserved)),
            Ok((
                Some("782212011000000000001".to_owned()),
                Some("pay01KBQ3Z5V7W9X1Y3Z5A7B9C1".to_owned())
            ))
        );
    }

    #[test]
    fn consumes_are_payments_and_refunds_and_undos_are_refunds_of_their_payment() {
        let paid = line_of(&consume()).unwrap_or_else(|m| unreachable!("{m}"));
        assert_eq!(paid.kind, LineKind::Payment);
        assert_eq!(paid.payment_id, "pay_01KBQ3Z5V7W9X1Y3Z5A7B9C1");
        assert_eq!(paid.provider_txn_id, "782212011000000000001");
        assert_eq!((paid.amount, paid.fee_milli), (8888, 53_000));
        assert!(paid.settled);
        assert_eq!(paid.trade_type, "01/07");
        assert_eq!(
            paid.completed_at,
            Some(time::macros::datetime!(2026-12-01 10:00 +08:00))
        );
        for kind in [b"04", b"31"] {
            let line = line_of(&refund(kind, Some(PAY))).unwrap_or_else(|m| unreachable!("{m}"));
            assert_eq!(line.kind, LineKind::Refund);
            assert_eq!(line.payment_id, "pay_01KBQ3Z5V7W9X1Y3Z5A7B9C1");
            assert_eq!(
                line.refund_id.as_deref(),
                Some("re_01KBQ3Z5V7W9X1Y3Z5A7B9C2")
            );
            assert_eq!(line.provider_txn_id, "782212011000000000001");
            assert_eq!(
                line.provider_refund_id.as_deref(),
                Some("782212011200000000002")
            );
            // A plain fee on a refund is given back.
            assert_eq!((line.amount, line.fee_milli), (100, -1000));
        }
        // Without merReserved, the consume's order id comes from origOrderId.
        let mut bare = refund(b"04", None);
        bare.splice(476..476 + PAY.len(), PAY.iter().copied());
        assert_eq!(
            line_of(&bare).map(|l| l.payment_id),
            Ok("pay_01KBQ3Z5V7W9X1Y3Z5A7B9C1".to_owned())
        );
        // Neither: the refund names no payment.
        assert!(line_of(&refund(b"04", None)).is_err());
        // A transaction Moongate does not send, another merchant's line, an id Moongate
        // did not make: refused, never skipped.
        assert!(line_of(&refund(b"02", Some(PAY))).is_err());
        assert!(
            parse_line(1, &consume())
                .and_then(|r| statement_line(r, "777290058167152", day()))
                .is_err()
        );
        let mut foreign = consume();
        foreign.splice(112..112 + 12, b"ORDER1234567".iter().copied());
        assert!(line_of(&foreign).is_err());
    }

    #[test]
    fn fees_and_times_follow_their_stated_rules() {
        assert_eq!(fee_fen("", false), Some(0));
        assert_eq!(fee_fen("D000000000053", true), Some(53));
        assert_eq!(fee_fen("C000000000053", false), Some(-53));
        assert_eq!(fee_fen("0000000000053", false), Some(53));
        assert_eq!(fee_fen("0000000000053", true), Some(-53));
        assert_eq!(fee_fen("X000000000053", false), None);
        assert_eq!(fee_fen("D", false), None);
        // The bill of 1 January holds the evening of 31 December (after 23:00).
        let new_year = time::macros::date!(2027 - 01 - 01);
        assert_eq!(
            txn_instant("1231233000", new_year),
            Some(time::macros::datetime!(2026-12-31 23:30 +08:00))
        );
        assert_eq!(
            txn_instant("0101120000", new_year),
            Some(time::macros::datetime!(2027-01-01 12:00 +08:00))
        );
        assert_eq!(txn_instant("1301120000", new_year), None);
        assert_eq!(txn_instant("01011200", new_year), None);
    }

    fn zip_of(entries: &[(&str, &[u8])]) -> Vec<u8> {
        use std::io::Write as _;
        let mut zipped = std::io::Cursor::new(Vec::new());
        {
            let mut zip = zip::ZipWriter::new(&mut zipped);
            for (name, bytes) in entries {
                let _ = zip.start_file(*name, zip::write::SimpleFileOptions::default());
                let _ = zip.write_all(bytes);
            }
            let _ = zip.finish();
        }
        zipped.into_inner()
    }

    /// `fileContent` as UnionPay sends it: the zip, zlib-deflated, in base64.
    fn file_content(zip: &[u8]) -> String {
        use base64::Engine as _;
        use std::io::Write as _;
        let mut deflate =
            flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::default());
        let _ = deflate.write_all(zip);
        base64::engine::general_purpose::STANDARD.encode(deflate.finish().unwrap_or_default())
    }

    fn read(zip: Vec<u8>) -> Result<(StatementTotals, Vec<String>), String> {
        let mut seen = Vec::new();
        let totals = read_bill_zip(
            std::io::Cursor::new(zip),
            MER,
            &StatementLimits::DEFAULT,
            &mut |line| {
                seen.push(line.refund_id.unwrap_or(line.payment_id));
                Ok(())
            },
        )
        .map_err(|e| e.message)?;
        Ok((totals, seen))
    }

    #[test]
    fn the_file_transfer_answer_holds_the_bill_zip() {
        let mut zm = consume();
        zm.extend_from_slice(b"\r\n");
        zm.extend_from_slice(&refund(b"04", Some(PAY)));
        zm.extend_from_slice(b"\r\n");
        let zip = zip_of(&[
            ("INN26120188ZME_777290058167151", b"not a ZM line\r\n"),
            ("INN26120188ZM_777290058167151", &zm),
        ]);
        let unpacked = file_content_zip(&file_content(&zip), &StatementLimits::DEFAULT);
        assert_eq!(unpacked.as_ref().map_err(|e| &e.message), Ok(&zip));
        let (totals, seen) = read(zip).unwrap_or_else(|m| unreachable!("{m}"));
        assert_eq!(
            seen,
            [
                "pay_01KBQ3Z5V7W9X1Y3Z5A7B9C1",
                "re_01KBQ3Z5V7W9X1Y3Z5A7B9C2"
            ]
        );
        assert_eq!(
            (totals.payments, totals.payment_total, totals.refunds),
            (1, 8888, 1)
        );
        // No ZM entry; another merchant's; not base64, not zlib.
        assert!(read(zip_of(&[("INN26120188ZME_777290058167151", b"x")])).is_err());
        assert!(read(zip_of(&[("INN26120188ZM_777290058167152", &zm)])).is_err());
        assert!(file_content_zip("%%%", &StatementLimits::DEFAULT).is_err());
        assert!(file_content_zip("AAAA", &StatementLimits::DEFAULT).is_err());
        // A zlib bomb stops at the ratio limit.
        let bomb = file_content(&vec![0_u8; 8 << 20]);
        assert!(file_content_zip(&bomb, &StatementLimits::DEFAULT).is_err());
    }

    #[test]
    fn a_file_reads_its_lines_and_refuses_what_does_not_fit() {
        let mut file = consume();
        file.extend_from_slice(b"\r\n");
        file.extend_from_slice(&consume());
        file.extend_from_slice(b"\r\n\r\n");
        let mut seen = Vec::new();
        let count = read_zm(&file[..], StatementLimits::DEFAULT, |r| {
            seen.push(r.line);
            Ok(())
        });
        assert_eq!(count.map_err(|e| e.message), Ok(2));
        assert_eq!(seen, [1, 2]);
        let mut short = consume();
        short.pop();
        assert!(parse_line(1, &short).is_err());
        let mut shifted = consume();
        shifted.insert(3, b'X');
        shifted.pop();
        assert!(parse_line(1, &shifted).is_err());
        let mut bad_amount = consume();
        bad_amount[66..78].copy_from_slice(b"00000000888x");
        assert!(parse_line(1, &bad_amount).is_err());
        let mut signed_amount = consume();
        signed_amount[66..78].copy_from_slice(b"+00000008888");
        assert!(parse_line(1, &signed_amount).is_err());
    }
}
