//! Reconciliation at scale: `cargo bench --bench reconcile [-- LINES]` (default 1,000,000).
//!
//! Builds a ledger of LINES succeeded payments (plus refunds) in a SQLite file and a WeChat Pay
//! `ALL` trade bill of about the same size with planted breaks of every kind, then runs the real
//! `moongate reconcile --statement …` as a child process and reports its wall time and peak
//! memory (the process's own `VmHWM`, printed in the report). The planted counts are checked,
//! so a fast but wrong run fails. Issue 5's target: ≤ 10 s and ≤ 500 MB on the 2-core machine.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::print_stdout,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::io::{BufWriter, Write};
use std::path::Path;
use std::process::Command;
use std::time::Instant;

use moongate_testkit::sandbox::statements::{self, WechatBillEntry};
use time::OffsetDateTime;

const MCHID: &str = "1230000109";
const APPID: &str = "wxd678efh567hg6787";
const DAY: &str = "2026-11-21";

/// Planted breaks: every Nth payment.
const AMOUNT_EVERY: u64 = 10_000;
const MISSING_PROVIDER_EVERY: u64 = 25_000;
const DUPLICATE_EVERY: u64 = 40_000;
const REFUND_EVERY: u64 = 50;
const MISSING_LEDGER: u64 = 100;

fn fixture(path: &str) -> String {
    format!("{}/fixtures/{path}", env!("CARGO_MANIFEST_DIR"))
}

fn write_config(dir: &Path) -> std::path::PathBuf {
    std::fs::write(
        dir.join("apiv3.secret"),
        "0123456789abcdef0123456789abcdef\n",
    )
    .unwrap();
    std::fs::write(dir.join("k.secret"), "bench-merchant-secret-0123456789\n").unwrap();
    let config = format!(
        r#"[server]
listen = "127.0.0.1:0"
public_base_url = "http://127.0.0.1:0"

[ledger]
path = "ledger.db"

[merchants.bench]
name = "Bench"
keys = [{{ id = "bench_k1", secret = {{ file = "k.secret" }} }}]

[merchants.bench.accounts.wechat]
provider = "wechatpay"
[merchants.bench.accounts.wechat.settings]
mchid = "{MCHID}"
appid = "{APPID}"
merchant_serial_no = "5157F09EFDC096DE15EBE81A47057A7232F1B8E1"
merchant_private_key = {{ file = "{key}" }}
apiv3_key = {{ file = "apiv3.secret" }}
wechatpay_public_key = {{ file = "{public}" }}
wechatpay_public_key_id = "PUB_KEY_ID_0114232134912410000000000000"
api_base_url = "http://127.0.0.1:9"
"#,
        key = fixture("keys/wechatpay-go-merchant-private-key.pem"),
        public = fixture("keys/sandbox-wechatpay-public-key.pem"),
    );
    let path = dir.join("moongate.toml");
    std::fs::write(&path, config).unwrap();
    path
}

fn day_start_ms() -> i64 {
    // 2026-11-21 00:00 Beijing = 2026-11-20 16:00 UTC.
    let start = time::macros::datetime!(2026-11-21 00:00:00 +8);
    (start.unix_timestamp_nanos() / 1_000_000) as i64
}

fn amount(i: u64) -> i64 {
    100 + (i as i64 * 37) % 100_000
}

fn paid_ms(i: u64, lines: u64) -> i64 {
    // Spread over the day, clear of the edges.
    day_start_ms() + 60_000 + (i as i64 * (86_400_000 - 120_000)) / lines as i64
}

fn seed_ledger(db: &Path, lines: u64) {
    // Create the schema through Moongate itself, then bulk-load.
    drop(moongate::store::sqlite::SqliteStore::open(db).unwrap());
    let mut conn = rusqlite::Connection::open(db).unwrap();
    conn.pragma_update(None, "synchronous", "OFF").unwrap();
    let tx = conn.transaction().unwrap();
    {
        let mut payment = tx
            .prepare(
                "INSERT INTO payments (id, merchant_id, account_id, provider, method, amount, currency, \
                 merchant_reference, description, metadata, provider_order_id, provider_ref, status, \
                 amount_refunded, expires_at, created_at, updated_at, paid_at) \
                 VALUES (?1, 'bench', 'wechat', 'wechatpay', 'wechat_native', ?2, 'CNY', ?1, 'Tea', '{}', ?1, ?3, \
                 'succeeded', ?4, ?5, ?5, ?5, ?5)",
            )
            .unwrap();
        let mut refund = tx
            .prepare(
                "INSERT INTO refunds (id, payment_id, merchant_id, amount, currency, status, created_at, updated_at) \
                 VALUES (?1, ?2, 'bench', ?3, 'CNY', 'succeeded', ?4, ?4)",
            )
            .unwrap();
        for i in 0..lines {
            let id = format!("pay_{i:010}");
            let at = paid_ms(i, lines);
            let refunded = if i % REFUND_EVERY == 0 {
                amount(i) / 2
            } else {
                0
            };
            payment
                .execute(rusqlite::params![
                    id,
                    amount(i),
                    format!("42000{i:023}"),
                    refunded,
                    at
                ])
                .unwrap();
            if refunded > 0 {
                refund
                    .execute(rusqlite::params![
                        format!("re_{i:010}"),
                        id,
                        refunded,
                        at + 1000
                    ])
                    .unwrap();
            }
        }
    }
    tx.commit().unwrap();
}

fn write_statement(path: &Path, lines: u64) -> u64 {
    let file = std::fs::File::create(path).unwrap();
    let mut out = BufWriter::with_capacity(1 << 20, file);
    let at = |ms: i64| {
        OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms - 2_000) * 1_000_000).unwrap()
    };
    let entry = |i: u64, amount: i64| WechatBillEntry {
        at: at(paid_ms(i, lines)),
        appid: APPID.to_owned(),
        mchid: MCHID.to_owned(),
        sub_mchid: "0".to_owned(),
        transaction_id: format!("42000{i:023}"),
        out_trade_no: format!("pay_{i:010}"),
        openid: "oUpF8uMuAJO_M2pxb1Q9zNjWeS6o".to_owned(),
        trade_type: "NATIVE".to_owned(),
        refund: None,
        amount,
        fee_e5: statements::wechat_fee_e5(amount),
        description: "Tea".to_owned(),
        currency: "CNY".to_owned(),
    };
    let mut written = 0_u64;
    let iter = (0..lines).flat_map(|i| {
        let mut rows = Vec::with_capacity(3);
        if i % MISSING_PROVIDER_EVERY != 7 {
            let planted = if i % AMOUNT_EVERY == 3 { 1 } else { 0 };
            rows.push(entry(i, amount(i) + planted));
            if i % DUPLICATE_EVERY == 11 {
                rows.push(entry(i, amount(i)));
            }
        }
        if i % REFUND_EVERY == 0 {
            let mut refund = entry(i, amount(i) / 2);
            refund.at = at(paid_ms(i, lines) + 1000);
            refund.refund = Some((format!("5030{i:024}"), format!("re_{i:010}")));
            rows.push(refund);
        }
        if i < MISSING_LEDGER {
            rows.push(WechatBillEntry {
                out_trade_no: format!("pay_x{i:09}"),
                transaction_id: format!("42009{i:023}"),
                ..entry(i, 4242)
            });
        }
        rows
    });
    let counted = iter.inspect(|_| written += 1);
    statements::write_wechat_trade_bill(&mut out, counted).unwrap();
    out.flush().unwrap();
    written
}

fn main() {
    let lines: u64 = std::env::args()
        .skip(1)
        .find_map(|a| a.parse().ok())
        .unwrap_or(1_000_000);
    // MOONGATE_BENCH_DIR keeps the files (config, ledger, bill) for other runs to reuse, as
    // scripts/reconcile-vs-polars.sh does.
    let kept = std::env::var_os("MOONGATE_BENCH_DIR").map(std::path::PathBuf::from);
    let temp = tempfile::tempdir().unwrap();
    let dir_path = kept.clone().unwrap_or_else(|| temp.path().to_path_buf());
    std::fs::create_dir_all(&dir_path).unwrap();
    let dir = &dir_path;
    let config = write_config(dir);
    let bill = dir.join("bill.csv");
    let built = dir.join(format!("built-{lines}"));
    if kept.is_some() && built.exists() {
        println!("reusing the ledger and bill in {}", dir.display());
    } else {
        let _ = std::fs::remove_file(dir.join("ledger.db"));
        let started = Instant::now();
        seed_ledger(&dir.join("ledger.db"), lines);
        println!(
            "ledger: {lines} payments (+{} refunds) seeded in {:.1?}",
            lines / REFUND_EVERY,
            started.elapsed()
        );
        let started = Instant::now();
        let written = write_statement(&bill, lines);
        let size = std::fs::metadata(&bill).unwrap().len();
        println!(
            "statement: {written} lines, {} MB, written in {:.1?}",
            size / 1_000_000,
            started.elapsed()
        );
        std::fs::write(&built, "").unwrap();
    }

    let out = dir.join("out");
    let started = Instant::now();
    let status = Command::new(env!("CARGO_BIN_EXE_moongate"))
        .args(["reconcile", "--config"])
        .arg(&config)
        .args(["--merchant", "bench", "--account", "wechat", "--date", DAY])
        .arg("--statement")
        .arg(&bill)
        .arg("--out")
        .arg(&out)
        .env("RUST_LOG", "error")
        .status()
        .unwrap();
    let wall = started.elapsed();
    assert!(status.success(), "moongate reconcile failed");
    let report: serde_json::Value = serde_json::from_slice(
        &std::fs::read(out.join(format!("recon-bench-wechat-{DAY}.json"))).unwrap(),
    )
    .unwrap();
    let count = |name: &str| -> u64 {
        report["summary"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|t| t["category"] == name)
            .map(|t| t["count"].as_u64().unwrap())
            .sum()
    };
    let expect = |name: &str, n: u64| {
        assert_eq!(count(name), n, "{name}");
    };
    let every = |n: u64, r: u64| (0..lines).filter(|i| i % n == r).count() as u64;
    let missing_provider = every(MISSING_PROVIDER_EVERY, 7);
    let amount_breaks = (0..lines)
        .filter(|i| i % AMOUNT_EVERY == 3 && i % MISSING_PROVIDER_EVERY != 7)
        .count() as u64;
    let duplicates = (0..lines)
        .filter(|i| i % DUPLICATE_EVERY == 11 && i % MISSING_PROVIDER_EVERY != 7)
        .count() as u64;
    expect("missing_in_provider", missing_provider);
    expect("amount_mismatch", amount_breaks);
    expect("duplicate", duplicates);
    expect("missing_in_ledger", MISSING_LEDGER.min(lines));
    expect("refund", every(REFUND_EVERY, 0));
    expect("matched", lines - missing_provider - amount_breaks);
    let peak = report["resources"]["peak_rss_bytes"].as_u64().unwrap_or(0);
    println!(
        "reconcile: {} statement lines in {:.2?} wall ({} ms inside the run), peak memory {} MB; {} breaks, all planted ones found",
        report["statement_totals"]["lines"],
        wall,
        report["resources"]["elapsed_ms"],
        peak / 1_048_576,
        report["break_count"],
    );
    let phases = &report["resources"]["phases_ms"];
    println!(
        "  phases (ms): obtain (import + SHA-256) {}, ledger load {}, parse + match {}, lookup {}, store {}",
        phases["obtain"],
        phases["ledger"],
        phases["parse_and_match"],
        phases["lookup"],
        phases["store"],
    );
}
