#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]
//! Golden tests of the Alipay trade bill reader on fixture zips written by Python's own
//! `zipfile` (`fixtures/alipay/make_bills.py`) from the sample in china-wallets.md A.11.

use std::path::PathBuf;

use moongate_adapter_alipay::bill::read_trade_bill_zip;
use moongate_contract::statement::parse_beijing_datetime;
use moongate_contract::{
    Currency, LineKind, StatementError, StatementLimits, StatementLine, StatementTotals,
};

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../fixtures/alipay")
        .join(name)
}

fn read(
    name: &str,
    account: Option<&str>,
) -> Result<(Vec<StatementLine>, StatementTotals), StatementError> {
    let mut file = std::fs::File::open(fixture(name)).unwrap();
    let mut lines = Vec::new();
    let totals = read_trade_bill_zip(&mut file, account, &StatementLimits::DEFAULT, &mut |line| {
        lines.push(line);
        Ok(())
    })?;
    Ok((lines, totals))
}

#[test]
fn the_reference_sample_reads_into_integer_lines() {
    let (lines, totals) = read("trade-20190916.csv.zip", Some("20880211096256330156")).unwrap();
    assert_eq!(lines.len(), 2);
    let trade = &lines[0];
    assert_eq!(trade.kind, LineKind::Payment);
    assert!(trade.settled);
    assert_eq!(trade.provider_txn_id, "2019091622001458860515315453");
    assert_eq!(trade.payment_id, "service_1568601259302");
    assert_eq!(trade.refund_id, None);
    assert_eq!(trade.amount, 1);
    assert_eq!(trade.currency, Currency::CNY);
    assert_eq!(trade.fee_milli, 0);
    assert_eq!(trade.provider_status, "交易");
    assert_eq!(
        trade.completed_at,
        parse_beijing_datetime("2019-09-16 10:55:23")
    );
    assert_eq!(trade.line, 6);
    let refund = &lines[1];
    assert_eq!(refund.kind, LineKind::Refund);
    assert_eq!(refund.payment_id, "service_1568601259302");
    assert_eq!(refund.refund_id.as_deref(), Some("re_test_1568602607356"));
    assert_eq!(refund.amount, 1);
    assert_eq!(
        totals,
        StatementTotals {
            lines: 2,
            payments: 1,
            payment_total: 1,
            refunds: 1,
            refund_total: 1,
            fee_total_milli: 0,
        }
    );
}

#[test]
fn utf8_names_half_width_headers_and_quoted_cells_read_the_same() {
    let (lines, _) = read("trade-variant.csv.zip", None).unwrap();
    let (reference, _) = read("trade-20190916.csv.zip", None).unwrap();
    assert_eq!(lines, reference);
}

#[test]
fn another_accounts_bill_is_refused() {
    let error = read("trade-20190916.csv.zip", Some("20889999999999990156")).unwrap_err();
    assert!(error.message.contains("20880211096256330156"), "{error}");
    assert_eq!(error.line, 2);
}

#[test]
fn totals_that_do_not_add_up_refuse_the_file() {
    // The sample as published: its footer counts 6 trades and 4 refunds for the 2 lines shown.
    let error = read("trade-footer-mismatch.csv.zip", None).unwrap_err();
    assert!(error.message.contains("do not match"), "{error}");
}

#[test]
fn a_cut_file_is_refused() {
    let error = read("trade-truncated.csv.zip", None).unwrap_err();
    assert!(error.message.contains("truncated"), "{error}");
}

#[test]
fn not_a_zip_is_refused_with_the_likely_reason() {
    let mut page = std::io::Cursor::new(b"<html>\xcf\xc2\xd4\xd8\xb3\xac\xca\xb1</html>".to_vec());
    let error = read_trade_bill_zip(&mut page, None, &StatementLimits::DEFAULT, &mut |_| Ok(()))
        .unwrap_err();
    assert!(error.message.contains("30 s"), "{error}");
}

/// A zip with the detail entry holding `text` (GBK-compatible ASCII here), written with the
/// zip crate's deflate.
fn zip_of(entries: &[(&str, &[u8])]) -> std::io::Cursor<Vec<u8>> {
    let mut out = std::io::Cursor::new(Vec::new());
    {
        let mut zip = zip::ZipWriter::new(&mut out);
        let options = zip::write::SimpleFileOptions::default()
            .compression_method(zip::CompressionMethod::Deflated);
        for (name, body) in entries {
            zip.start_file(*name, options).unwrap();
            std::io::Write::write_all(&mut zip, body).unwrap();
        }
        zip.finish().unwrap();
    }
    out.set_position(0);
    out
}

const DETAIL: &str = "20880211096256330156_20190916_业务明细.csv";

fn refused(mut zip: std::io::Cursor<Vec<u8>>, limits: &StatementLimits) -> StatementError {
    let mut lines = 0;
    let error = read_trade_bill_zip(&mut zip, None, limits, &mut |_| {
        lines += 1;
        Ok(())
    })
    .unwrap_err();
    assert_eq!(lines, 0, "no line of a refused file is handed over");
    error
}

#[test]
fn an_endless_line_is_refused_at_the_line_limit() {
    // Seen in review: one 256 MiB line in a 255 KB zip took the reader to 1 GB. 32 MiB here
    // (a 32 KB zip): the reader stops 64 KiB into it.
    let mut body = b"#\xd6\xa7\xb8\xb6\xb1\xa6\r\n".to_vec();
    body.resize(32 << 20, b'7');
    let zip = zip_of(&[(DETAIL, &body)]);
    assert!(zip.get_ref().len() < 64 << 10);
    let error = refused(zip, &StatementLimits::DEFAULT);
    assert_eq!(error.line, 2);
    assert!(
        error.message.contains("line longer than 65536 bytes"),
        "{error}"
    );
}

#[test]
fn a_zip_bomb_is_refused_by_its_compression_ratio() {
    // Short comment lines (read and skipped before the list): 16 MiB from about 16 KB.
    let body = b"#x\r\n".repeat(4 << 20);
    let zip = zip_of(&[(DETAIL, &body)]);
    let compressed = zip.get_ref().len();
    assert!(compressed < 256 << 10, "{compressed}");
    let error = refused(zip, &StatementLimits::DEFAULT);
    assert!(error.message.contains("compression ratio"), "{error}");
    // A stated size beyond the limit is refused before anything is inflated.
    let zip = zip_of(&[(DETAIL, &body)]);
    let small = StatementLimits {
        max_bytes: 8 << 20,
        ..StatementLimits::DEFAULT
    };
    let error = refused(zip, &small);
    assert!(
        error.message.contains("states 16777216 bytes uncompressed"),
        "{error}"
    );
}

#[test]
fn line_count_and_entry_count_are_bounded() {
    let mut file = std::fs::File::open(fixture("trade-20190916.csv.zip")).unwrap();
    let few = StatementLimits {
        max_lines: 5,
        ..StatementLimits::DEFAULT
    };
    let error = read_trade_bill_zip(&mut file, None, &few, &mut |_| Ok(())).unwrap_err();
    assert_eq!(error, StatementError::at(6, "more than 5 lines"));
    // A real bill zip holds two entries (older ones four).
    let names: Vec<String> = (0..17).map(|i| format!("{i}.csv")).collect();
    let entries: Vec<(&str, &[u8])> = names.iter().map(|n| (n.as_str(), &b"#"[..])).collect();
    let error = refused(zip_of(&entries), &StatementLimits::DEFAULT);
    assert!(error.message.contains("17 entries"), "{error}");
}
