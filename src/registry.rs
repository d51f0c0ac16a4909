//! The one place that maps a [`ProviderKind`] to its adapter. Every match is exhaustive, so a
//! new kind does not compile until it is wired up here.

use std::path::Path;
use std::sync::Arc;

use moongate_adapter_alipay::{AccountKeys, AlipayAdapter};
use moongate_contract::{PaymentAdapter, ProviderKind};

use crate::config::{parse_alipay_settings, resolve_secret};

/// Pure checks of an account's `settings` table: `(key path suffix, message)` pairs, where the
/// suffix starts with `.` (or is empty for the table itself).
pub fn validate_settings(kind: ProviderKind, table: &toml::Table) -> Vec<(String, String)> {
    match kind {
        ProviderKind::Alipay => match parse_alipay_settings(table) {
            Err(problem) => vec![problem],
            Ok(settings) => settings
                .validate()
                .into_iter()
                .map(|(key, message)| (format!(".{key}"), message))
                .collect(),
        },
    }
}

/// Reads the keys and builds the adapter of one account.
pub fn build_adapter(
    kind: ProviderKind,
    table: &toml::Table,
    base_dir: &Path,
) -> Result<Arc<dyn PaymentAdapter>, Vec<(String, String)>> {
    match kind {
        ProviderKind::Alipay => {
            let settings = parse_alipay_settings(table).map_err(|p| vec![p])?;
            let private = resolve_secret(&settings.app_private_key, base_dir)
                .map_err(|m| vec![(".app_private_key".to_owned(), m)])?;
            let public = resolve_secret(&settings.alipay_public_key, base_dir)
                .map_err(|m| vec![(".alipay_public_key".to_owned(), m)])?;
            let adapter = AlipayAdapter::new(&AccountKeys {
                app_id: &settings.app_id,
                gateway_url: &settings.gateway_url,
                seller_id: settings.seller_id.as_deref(),
                app_private_key: &private,
                alipay_public_key: &public,
            })
            .map_err(|e| {
                let key = match e {
                    moongate_adapter_alipay::AccountError::AppPrivateKey(_) => ".app_private_key",
                    moongate_adapter_alipay::AccountError::AlipayPublicKey(_) => {
                        ".alipay_public_key"
                    }
                };
                vec![(key.to_owned(), e.to_string())]
            })?;
            Ok(Arc::new(adapter))
        }
    }
}
