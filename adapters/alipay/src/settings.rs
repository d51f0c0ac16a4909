//! The `settings` table of an Alipay account in the merchant config.

use moongate_contract::SecretRef;
use serde::Deserialize;

/// Production gateway (china-wallets.md A.1).
pub const PRODUCTION_GATEWAY: &str = "https://openapi.alipay.com/gateway.do";

/// An Alipay account as written in the config file.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    /// The application id (`app_id`), digits.
    pub app_id: String,
    /// The application private key (RSA 2048, PKCS#1 or PKCS#8, PEM or bare base64).
    pub app_private_key: SecretRef,
    /// Alipay's public key for this app (not secret, but read from a file or env the same way).
    pub alipay_public_key: SecretRef,
    /// The gateway URL; defaults to production.
    #[serde(default = "default_gateway")]
    pub gateway_url: String,
    /// Seller PID (`2088…`), sent as `seller_id` when set.
    #[serde(default)]
    pub seller_id: Option<String>,
}

fn default_gateway() -> String {
    PRODUCTION_GATEWAY.to_owned()
}

impl Settings {
    /// Pure checks; each problem comes back as `(key, message)` relative to the settings table.
    pub fn validate(&self) -> Vec<(&'static str, String)> {
        let mut problems = Vec::new();
        if self.app_id.is_empty()
            || self.app_id.len() > 32
            || !self.app_id.bytes().all(|b| b.is_ascii_digit())
        {
            problems.push(("app_id", "must be 1 to 32 digits".to_owned()));
        }
        if let Some(seller_id) = &self.seller_id
            && (seller_id.len() != 16 || !seller_id.bytes().all(|b| b.is_ascii_digit()))
        {
            problems.push(("seller_id", "must be a 16-digit Alipay PID".to_owned()));
        }
        if let Err(message) = check_gateway_url(&self.gateway_url) {
            problems.push(("gateway_url", message));
        }
        problems
    }
}

pub use moongate_contract::http::check_base_url as check_gateway_url;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gateway_urls_must_be_https_or_loopback() {
        assert!(check_gateway_url(PRODUCTION_GATEWAY).is_ok());
        assert!(check_gateway_url("http://127.0.0.1:8090/gateway.do").is_ok());
        assert!(check_gateway_url("http://localhost:1/gateway.do").is_ok());
        assert!(check_gateway_url("http://[::1]:1/gateway.do").is_ok());
        assert!(check_gateway_url("http://openapi.alipay.com/gateway.do").is_err());
        assert!(check_gateway_url("https://x/gateway.do?charset=utf-8").is_err());
        assert!(check_gateway_url("ftp://x").is_err());
        assert!(check_gateway_url("https://").is_err());
    }
}
