//! UnionPay's transaction file (`INN{yyMMdd}88ZM_{merId}`, inside the zip of file transfer
//! `76/01/000000`): one transaction a line, 42 fixed-width byte fields separated by one space
//! (607 bytes), lines ending CRLF; text fields are GBK, which nothing here needs to decode
//! because every field read is ASCII and offsets count bytes. The layout is the official
//! demo's `parseZMFile` widths (`../shared/reference/more-wallets.md` §1.6); no real file was
//! at hand, so the reader is held to that layout and refuses a line that does not fit it.

use moongate_contract::statement::{LineReader, StatementError, StatementLimits};

/// Field widths of a ZM line, in order.
const WIDTHS: [usize; 42] = [
    3, 11, 11, 6, 10, 19, 12, 4, 2, 21, 2, 32, 2, 6, 10, 13, 13, 4, 15, 2, 2, 6, 2, 4, 32, 1, 21,
    15, 1, 15, 32, 13, 13, 8, 32, 13, 13, 12, 2, 1, 32, 98,
];

/// The bytes of a ZM line.
pub const LINE_BYTES: usize = 607;

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
    /// `txnType`: `01` consume, `04` refund, `31` undo, …
    pub txn_type: String,
    /// For a refund or undo: the `queryId` of the consume it reverses.
    pub orig_qry_id: Option<String>,
    /// `merId`.
    pub mer_id: String,
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
    let txn_amt = text(6, "txnAmt")?
        .parse::<i64>()
        .ok()
        .filter(|a| *a >= 0)
        .ok_or_else(|| StatementError::at(number, "txnAmt is not an amount in fen"))?;
    let required = |index: usize, name: &str| -> Result<String, StatementError> {
        let value = text(index, name)?;
        if value.is_empty() {
            return Err(StatementError::at(number, format!("no {name}")));
        }
        Ok(value)
    };
    let orig_qry_id = text(26, "origQryId")?;
    Ok(ZmRecord {
        line: number,
        txn_time: required(4, "txnTime")?,
        txn_amt,
        query_id: required(9, "queryId")?,
        order_id: required(11, "orderId")?,
        txn_type: required(19, "txnType")?,
        orig_qry_id: (!orig_qry_id.is_empty()).then_some(orig_qry_id),
        mer_id: required(27, "merId")?,
    })
}

/// Reads a ZM file within `limits`, handing each record to `sink`.
pub fn read_zm<R, F>(reader: R, limits: StatementLimits, mut sink: F) -> Result<u64, StatementError>
where
    R: std::io::BufRead,
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

/// Entries a bill zip may hold (ZM, ZME and a few others).
const MAX_ENTRIES: usize = 16;

/// Reads the ZM file out of a file-transfer answer (`76/01/000000`): its `fileContent` is the
/// base64 of a zlib-deflated zip holding `INN{yyMMdd}88ZM_{merId}` (the transactions) beside
/// `…ZME_…` (errors) and others. Both inflations are held to `limits` (size and ratio), and
/// the ZM entry to its stated size.
pub fn read_file_content<F>(
    file_content: &str,
    limits: StatementLimits,
    sink: F,
) -> Result<u64, StatementError>
where
    F: FnMut(ZmRecord) -> Result<(), StatementError>,
{
    use base64::Engine as _;
    use std::io::Read as _;
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
    let mut archive = zip::ZipArchive::new(std::io::Cursor::new(zipped))
        .map_err(|e| StatementError::at(0, format!("fileContent is not a zip: {e}")))?;
    if archive.len() > MAX_ENTRIES {
        return Err(StatementError::at(
            0,
            format!("the zip holds {} entries; a bill has a few", archive.len()),
        ));
    }
    let mut found = None;
    for index in 0..archive.len() {
        let entry = archive
            .by_index_raw(index)
            .map_err(|e| StatementError::at(0, format!("zip entry {index}: {e}")))?;
        let name = String::from_utf8_lossy(entry.name_raw()).into_owned();
        let base = name.rsplit('/').next().unwrap_or_default();
        if base.contains("ZM_") && !base.contains("ZME_") {
            found = Some(index);
            break;
        }
    }
    let index = found.ok_or_else(|| StatementError::at(0, "no ZM entry in the zip"))?;
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
    read_zm(
        std::io::BufReader::new(limits.inflated(entry, compressed)),
        limits,
        sink,
    )
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

    fn consume() -> Vec<u8> {
        zm_line(&[
            (0, b"S22"),
            (4, b"1201100000"),
            (6, b"000000008888"),
            (9, b"782212011000000000001"),
            (11, b"pay01KBQ3Z5V7W9X1Y3Z5A7B9C1D3"),
            (19, b"01"),
            (27, b"777290058167151"),
            // GBK text in a sub-merchant name: bytes, never decoded.
            (30, &[0xb2, 0xe8, 0xc9, 0xe1]),
        ])
    }

    #[test]
    fn a_line_is_read_by_byte_offsets() {
        let line = consume();
        assert_eq!(line.len(), LINE_BYTES);
        let record = parse_line(1, &line)
            .map_err(|e| e.message)
            .unwrap_or_else(|m| unreachable!("{m}"));
        assert_eq!(record.txn_amt, 8888);
        assert_eq!(record.order_id, "pay01KBQ3Z5V7W9X1Y3Z5A7B9C1D3");
        assert_eq!(record.query_id, "782212011000000000001");
        assert_eq!((record.txn_type.as_str(), record.orig_qry_id), ("01", None));
        assert_eq!(record.mer_id, "777290058167151");
        let refund = zm_line(&[
            (4, b"1201120000"),
            (6, b"000000000100"),
            (9, b"782212011200000000002"),
            (11, b"re01KBQ3Z5V7W9X1Y3Z5A7B9C1D4"),
            (19, b"04"),
            (26, b"782212011000000000001"),
            (27, b"777290058167151"),
        ]);
        let record = parse_line(2, &refund).map_err(|e| e.message);
        assert_eq!(
            record.map(|r| r.orig_qry_id),
            Ok(Some("782212011000000000001".to_owned()))
        );
    }

    /// `fileContent` as UnionPay sends it: a zip of `entries`, zlib-deflated, in base64.
    fn file_content(entries: &[(&str, &[u8])]) -> String {
        use base64::Engine as _;
        use std::io::Write as _;
        let mut zipped = std::io::Cursor::new(Vec::new());
        {
            let mut zip = zip::ZipWriter::new(&mut zipped);
            for (name, bytes) in entries {
                let options = zip::write::SimpleFileOptions::default();
                let _ = zip.start_file(*name, options);
                let _ = zip.write_all(bytes);
            }
            let _ = zip.finish();
        }
        let mut deflate =
            flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::default());
        let _ = deflate.write_all(zipped.get_ref());
        base64::engine::general_purpose::STANDARD.encode(deflate.finish().unwrap_or_default())
    }

    #[test]
    fn the_file_transfer_answer_holds_the_zm_file() {
        let mut zm = consume();
        zm.extend_from_slice(b"\r\n");
        let content = file_content(&[
            ("INN26120188ZME_777290058167151", b"not a ZM line\r\n"),
            ("INN26120188ZM_777290058167151", &zm),
        ]);
        let mut seen = Vec::new();
        let count = read_file_content(&content, StatementLimits::DEFAULT, |r| {
            seen.push(r.order_id);
            Ok(())
        });
        assert_eq!(count.map_err(|e| e.message), Ok(1));
        assert_eq!(seen, ["pay01KBQ3Z5V7W9X1Y3Z5A7B9C1D3"]);
        // No ZM entry, not base64, not a zip.
        let only_errors = file_content(&[("INN26120188ZME_777290058167151", b"x")]);
        assert!(read_file_content(&only_errors, StatementLimits::DEFAULT, |_| Ok(())).is_err());
        assert!(read_file_content("%%%", StatementLimits::DEFAULT, |_| Ok(())).is_err());
        assert!(read_file_content("AAAA", StatementLimits::DEFAULT, |_| Ok(())).is_err());
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
    }
}
