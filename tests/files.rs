//! What Moongate writes to disk is readable by its owner only: the ledger (with its WAL) and
//! the folders created for it.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
#![cfg(unix)]

use std::os::unix::fs::PermissionsExt;

fn mode(path: &std::path::Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

#[tokio::test]
async fn the_sqlite_ledger_and_its_folder_are_owner_only() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("var/moongate/moongate.db");
    let store = moongate::store::open(&moongate::config::LedgerBackend::Sqlite(path.clone()))
        .await
        .unwrap();
    // A write, so that the WAL exists.
    let now = time::OffsetDateTime::now_utc();
    store
        .remember_nonce(
            "shop",
            "nonce-0123456789",
            now,
            now + time::Duration::minutes(5),
        )
        .await
        .unwrap();
    assert_eq!(mode(&path), 0o600, "the ledger file");
    let wal = path.with_file_name("moongate.db-wal");
    assert!(wal.exists(), "WAL mode writes a -wal file");
    assert_eq!(mode(&wal), 0o600, "its WAL");
    assert_eq!(mode(&dir.path().join("var/moongate")), 0o700);
    assert_eq!(mode(&dir.path().join("var")), 0o700);
}

// Issue 25, finding 8: settled payments keep no scanned payment code; a ledger written by an
// earlier version loses the codes of its settled payments once, when it is opened.
#[tokio::test]
async fn an_older_ledger_loses_the_payment_codes_of_settled_payments() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("moongate.db");
    let backend = moongate::config::LedgerBackend::Sqlite(path.clone());
    drop(moongate::store::open(&backend).await.unwrap());
    {
        let conn = rusqlite::Connection::open(&path).unwrap();
        for (id, status) in [("pay_settled", "succeeded"), ("pay_open", "pending")] {
            conn.execute(
                "INSERT INTO payments (id, merchant_id, account_id, provider, method, amount, \
                 currency, merchant_reference, description, metadata, provider_order_id, status, \
                 expires_at, created_at, updated_at, payer) VALUES (?1, 'shop', 'main', \
                 'wechatpay', 'wechat_payment_code', 100, 'CNY', 'r', 'd', '{}', ?1, ?2, 0, 0, 0, \
                 '{\"client_ip\":\"198.51.100.4\",\"payment_code\":\"134567890123456789\"}')",
                [id, status],
            )
            .unwrap();
        }
        conn.pragma_update(None, "user_version", 0).unwrap();
    }
    let store = moongate::store::open(&backend).await.unwrap();
    let code = |payment: Option<moongate::ledger::Payment>| payment.unwrap().payer.payment_code;
    assert_eq!(
        code(store.payment(None, "pay_settled").await.unwrap()),
        None
    );
    // The client IP stays; an open payment keeps its code until it settles.
    let settled = store.payment(None, "pay_settled").await.unwrap().unwrap();
    assert_eq!(settled.payer.client_ip.as_deref(), Some("198.51.100.4"));
    assert_eq!(
        code(store.payment(None, "pay_open").await.unwrap()).as_deref(),
        Some("134567890123456789")
    );
}
