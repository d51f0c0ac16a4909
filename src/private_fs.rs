//! Files Moongate writes hold payment data and credentials (the ledger with its payer
//! records, the cashier key, statements, reports, downloaded certificates): they are created
//! readable by their owner only (0600), and the folders it creates for them 0700.

use std::io;
use std::path::Path;

#[cfg(unix)]
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};

/// Creates a folder and its missing parents, owner-only.
pub fn create_dir_all(path: &Path) -> io::Result<()> {
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    builder.mode(0o700);
    builder.create(path)
}

/// Creates (or truncates) a file for writing, owner-only.
pub fn create(path: &Path) -> io::Result<std::fs::File> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    options.mode(0o600);
    options.open(path)
}

/// Creates a file that must not exist yet, owner-only.
pub fn create_new(path: &Path) -> io::Result<std::fs::File> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    options.mode(0o600);
    options.open(path)
}

/// Writes a whole file, owner-only.
pub fn write(path: &Path, contents: impl AsRef<[u8]>) -> io::Result<()> {
    use std::io::Write;
    create(path)?.write_all(contents.as_ref())
}

/// Creates the file if it does not exist yet (owner-only), leaving an existing one as it is:
/// SQLite then gives its `-wal` and `-shm` files the same permissions.
pub fn touch(path: &Path) -> io::Result<()> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(false);
    #[cfg(unix)]
    options.mode(0o600);
    options.open(path).map(|_| ())
}

/// The asynchronous twin of [`create`], for downloads.
pub async fn create_async(path: &Path) -> io::Result<tokio::fs::File> {
    let mut options = tokio::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    options.mode(0o600);
    options.open(path).await
}

#[cfg(all(test, unix))]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    fn mode(path: &std::path::Path) -> u32 {
        std::fs::metadata(path)
            .map(|m| m.permissions().mode() & 0o777)
            .unwrap_or(0)
    }

    #[test]
    fn files_and_folders_are_owner_only() {
        let dir = std::env::temp_dir().join(crate::ledger::new_id("perm"));
        let nested = dir.join("a/b");
        super::create_dir_all(&nested).unwrap_or_default();
        assert_eq!(mode(&dir.join("a")), 0o700);
        assert_eq!(mode(&nested), 0o700);
        let file = nested.join("report.csv");
        super::write(&file, b"x").unwrap_or_default();
        assert_eq!(mode(&file), 0o600);
        let db = nested.join("ledger.db");
        super::touch(&db).unwrap_or_default();
        assert_eq!(mode(&db), 0o600);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
