//! The cashier key: a checkout's URL token is `HMAC-SHA256(cashier key, checkout id)`
//! (base64url, 43 characters), and the ledger keeps only the token's SHA-256. Someone who
//! reads the ledger (or a backup of it) cannot open a cashier; Moongate can still show a
//! checkout's link again (`GET /v1/checkouts/{id}`, an idempotent replay, the page a
//! redirect wallet sends the shopper back to) because it derives the token from the id.
//!
//! The key is `server.cashier_key` (a file or an env variable). With an SQLite ledger and no
//! key configured, Moongate keeps one in a file beside the ledger (`<ledger>.cashier-key`,
//! created owner-only on first start); with PostgreSQL it must be configured, so that every
//! instance renders the same links.

use std::io;
use std::path::{Path, PathBuf};

use base64::Engine;
use hmac::{Hmac, Mac};
use moongate_contract::Secret;
use sha2::{Digest, Sha256};

/// Fewest bytes a configured key may have.
pub const MIN_KEY_BYTES: usize = 32;

/// Where the key comes from, as the config says.
#[derive(Clone, Debug)]
pub enum KeySource {
    /// `server.cashier_key`.
    Configured(Secret<String>),
    /// Kept beside an SQLite ledger (created on first start).
    File(PathBuf),
}

impl KeySource {
    /// The file an SQLite ledger's key lives in.
    pub fn beside(ledger: &Path) -> KeySource {
        let mut name = ledger.file_name().unwrap_or_default().to_os_string();
        name.push(".cashier-key");
        KeySource::File(ledger.with_file_name(name))
    }

    /// Loads the key (creating the ledger's key file when there is none yet).
    pub fn load(&self) -> io::Result<CashierKey> {
        match self {
            KeySource::Configured(secret) => Ok(CashierKey::new(secret.expose().as_bytes())),
            KeySource::File(path) => load_or_create(path),
        }
    }
}

/// The key tokens are derived with.
#[derive(Clone)]
pub struct CashierKey(Secret<Vec<u8>>);

impl std::fmt::Debug for CashierKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("CashierKey(…)")
    }
}

impl CashierKey {
    /// A key from its bytes.
    pub fn new(bytes: &[u8]) -> CashierKey {
        CashierKey(Secret::new(bytes.to_vec()))
    }

    /// A key for another purpose, derived from this one under `label` (HMAC-SHA256), so that
    /// one configured secret serves each purpose with its own key.
    pub fn derive(&self, label: &[u8]) -> Secret<[u8; 32]> {
        let mut mac = match Hmac::<Sha256>::new_from_slice(self.0.expose()) {
            Ok(mac) => mac,
            Err(_) => return Secret::new([0; 32]),
        };
        mac.update(label);
        Secret::new(mac.finalize().into_bytes().into())
    }

    /// The token in a checkout's cashier URL.
    pub fn token(&self, checkout_id: &str) -> String {
        self.token_with(b"moongate cashier v1\n", checkout_id)
    }

    /// What the ledger keeps of a checkout's token.
    pub fn token_hash_of(&self, checkout_id: &str) -> String {
        token_hash(&self.token(checkout_id))
    }

    /// The token in a static code's URL (another label: a code's token never opens a
    /// checkout, nor the reverse).
    pub fn code_token(&self, code_id: &str) -> String {
        self.token_with(b"moongate code v1\n", code_id)
    }

    fn token_with(&self, label: &[u8], id: &str) -> String {
        // HMAC takes keys of any length; `new_from_slice` cannot fail for it.
        let mut mac = match Hmac::<Sha256>::new_from_slice(self.0.expose()) {
            Ok(mac) => mac,
            Err(_) => return String::new(),
        };
        mac.update(label);
        mac.update(id.as_bytes());
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes())
    }
}

/// The SHA-256 (hex) a token is looked up by.
pub fn token_hash(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

fn load_or_create(path: &Path) -> io::Result<CashierKey> {
    match std::fs::read_to_string(path) {
        Ok(text) => parse_file(path, &text),
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            use ring::rand::SecureRandom;
            let mut bytes = [0_u8; 32];
            ring::rand::SystemRandom::new()
                .fill(&mut bytes)
                .map_err(|_| io::Error::other("no randomness"))?;
            let text = format!("{}\n", hex::encode(bytes));
            if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
                crate::private_fs::create_dir_all(dir)?;
            }
            match crate::private_fs::create_new(path) {
                Ok(mut file) => {
                    use std::io::Write;
                    file.write_all(text.as_bytes())?;
                    file.sync_all()?;
                    parse_file(path, &text)
                }
                // Another process created it first: use that one.
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                    parse_file(path, &std::fs::read_to_string(path)?)
                }
                Err(e) => Err(e),
            }
        }
        Err(e) => Err(e),
    }
}

fn parse_file(path: &Path, text: &str) -> io::Result<CashierKey> {
    let key = text.trim();
    if key.len() < MIN_KEY_BYTES {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!(
                "{}: a cashier key needs at least {MIN_KEY_BYTES} bytes",
                path.display()
            ),
        ));
    }
    Ok(CashierKey::new(key.as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_keyed_and_look_like_the_old_random_ones() {
        let a = CashierKey::new(&[1; 32]);
        let b = CashierKey::new(&[2; 32]);
        let token = a.token("co_1");
        assert_eq!(token.len(), 43);
        assert!(crate::http::cashier::plausible(&token));
        assert_eq!(token, a.token("co_1"));
        assert_ne!(token, a.token("co_2"));
        assert_ne!(token, b.token("co_1"));
        assert_eq!(a.token_hash_of("co_1"), token_hash(&token));
        assert_eq!(token_hash(&token).len(), 64);
        assert!(!token_hash(&token).contains(&token));
    }

    #[test]
    fn the_ledger_key_file_is_created_once_owner_only_and_kept() {
        let dir = tempfile::tempdir().unwrap();
        let source = KeySource::beside(&dir.path().join("data/moongate.db"));
        let KeySource::File(path) = &source else {
            panic!("an SQLite ledger keeps its key in a file");
        };
        assert_eq!(
            path.file_name().unwrap().to_str(),
            Some("moongate.db.cashier-key")
        );
        let first = source.load().unwrap().token("co_1");
        assert_eq!(source.load().unwrap().token("co_1"), first);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(path).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, 0o600);
        }
        std::fs::write(path, "short\n").unwrap();
        let error = source.load().unwrap_err().to_string();
        assert!(error.contains("at least 32 bytes"), "{error}");
    }
}
