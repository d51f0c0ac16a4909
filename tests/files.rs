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
