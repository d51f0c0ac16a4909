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

// Issue 25, finding 8: the ledger keeps a hash of each cashier token. A ledger written before
// keeps its links working: the clear tokens become hashes, a checkout still open keeps its
// token (to show its link) until it expires, and checkout payments drop their copy of the link.
#[tokio::test]
async fn an_older_ledger_keeps_hashes_of_its_cashier_tokens() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("moongate.db");
    let backend = moongate::config::LedgerBackend::Sqlite(path.clone());
    drop(moongate::store::open(&backend).await.unwrap());
    let now = time::OffsetDateTime::now_utc();
    let ms = |t: time::OffsetDateTime| (t.unix_timestamp_nanos() / 1_000_000) as i64;
    let (open_token, ended_token) = ("O".repeat(43), "E".repeat(43));
    {
        let conn = rusqlite::Connection::open(&path).unwrap();
        // The checkouts table as earlier versions created it.
        conn.execute_batch(
            "DROP TABLE checkout_payments; DROP TABLE checkouts;
             CREATE TABLE checkouts (id TEXT PRIMARY KEY, token TEXT NOT NULL UNIQUE,
               merchant_id TEXT NOT NULL, amount INTEGER NOT NULL CHECK (amount > 0),
               currency TEXT NOT NULL, merchant_reference TEXT NOT NULL,
               description TEXT NOT NULL, return_url TEXT NOT NULL, cancel_url TEXT,
               methods TEXT NOT NULL, openid TEXT, metadata TEXT NOT NULL,
               expires_at INTEGER NOT NULL, created_at INTEGER NOT NULL, payment_id TEXT);
             CREATE TABLE checkout_payments (payment_id TEXT PRIMARY KEY,
               checkout_id TEXT NOT NULL REFERENCES checkouts (id), opened_at INTEGER NOT NULL);",
        )
        .unwrap();
        for (id, token, expires) in [
            ("co_open", &open_token, now + time::Duration::minutes(10)),
            ("co_ended", &ended_token, now - time::Duration::minutes(10)),
        ] {
            conn.execute(
                "INSERT INTO checkouts VALUES (?1, ?2, 'shop', 100, 'CNY', 'r', 'd', \
                 'https://shop.example/', NULL, '[]', NULL, '{}', ?3, 0, NULL)",
                rusqlite::params![id, token, ms(expires)],
            )
            .unwrap();
        }
        conn.execute(
            "INSERT INTO payments (id, merchant_id, account_id, provider, method, amount, \
             currency, merchant_reference, description, return_url, metadata, \
             provider_order_id, status, expires_at, created_at, updated_at, payer) VALUES \
             ('pay_1', 'shop', 'main', 'alipay', 'alipay_wap', 100, 'CNY', 'r', 'd', ?1, '{}', \
             'pay_1', 'pending', 0, 0, 0, '{}')",
            [format!("https://pay.example/cashier/{open_token}")],
        )
        .unwrap();
        conn.execute(
            "INSERT INTO checkout_payments VALUES ('pay_1', 'co_open', 0)",
            [],
        )
        .unwrap();
        conn.pragma_update(None, "user_version", 1).unwrap();
    }
    let store = moongate::store::open(&backend).await.unwrap();
    let hash = moongate::cashier::key::token_hash;
    let open = store
        .checkout_by_token_hash(&hash(&open_token))
        .await
        .unwrap()
        .expect("a link handed out before still opens");
    assert_eq!(open.id, "co_open");
    assert_eq!(open.legacy_token.as_deref(), Some(open_token.as_str()));
    let ended = store
        .checkout_by_token_hash(&hash(&ended_token))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        ended.legacy_token, None,
        "an expired checkout keeps no token"
    );
    let payment = store.payment(None, "pay_1").await.unwrap().unwrap();
    assert_eq!(payment.return_url, None);
    drop(store);
    // Nothing in the ledger holds the expired checkout's token any more.
    let conn = rusqlite::Connection::open(&path).unwrap();
    conn.execute_batch("VACUUM").unwrap();
    drop(conn);
    let bytes = std::fs::read(&path).unwrap();
    let holds = |needle: &str| bytes.windows(needle.len()).any(|w| w == needle.as_bytes());
    assert!(!holds(&ended_token));
    assert!(holds(&open_token), "kept while its checkout is open");
}
