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
use moongate_contract::{Currency, LineKind, StatementError, StatementLine, StatementTotals};

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
    let totals = read_trade_bill_zip(&mut file, account, &mut |line| {
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
    let error = read_trade_bill_zip(&mut page, None, &mut |_| Ok(())).unwrap_err();
    assert!(error.message.contains("30 s"), "{error}");
}
