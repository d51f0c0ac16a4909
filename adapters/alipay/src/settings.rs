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
    /// Public-key mode: Alipay's public key for this app (not secret, but read from a file or
    /// env the same way).
    #[serde(default)]
    pub alipay_public_key: Option<SecretRef>,
    /// Certificate mode: the application's public-key certificate (`appCertPublicKey_….crt`).
    #[serde(default)]
    pub app_cert: Option<SecretRef>,
    /// Certificate mode: Alipay's public-key certificates (`alipayCertPublicKey_RSA2.crt`), the
    /// current one and, while Alipay rotates, the next; an answer is verified with the one whose
    /// SN it names.
    #[serde(default)]
    pub alipay_certs: Vec<SecretRef>,
    /// Certificate mode: Alipay's root certificate bundle (`alipayRootCert.crt`).
    #[serde(default)]
    pub alipay_root_cert: Option<SecretRef>,
    /// The gateway URL; defaults to production.
    #[serde(default = "default_gateway")]
    pub gateway_url: String,
    /// Seller PID (`2088…`), sent as `seller_id` when set.
    #[serde(default)]
    pub seller_id: Option<String>,
    /// An ISV app's: the page where merchants authorise it (`appToAppAuth`); defaults to
    /// production.
    #[serde(default = "default_consent_url")]
    pub consent_url: String,
    /// The app has Alipay's JSAPI payment product and the `auth_base` user authorisation: it
    /// takes `alipay_jsapi`, and inside the Alipay app the cashier learns the payer's id and
    /// opens the app's payment sheet (without it the app's WAP cashier). The app's
    /// authorisation callback domain (授权回调地址) must be Moongate's `public_base_url`.
    #[serde(default)]
    pub jsapi: bool,
    /// The user authorisation page (`publicAppAuthorize.htm`); defaults to production.
    #[serde(default = "default_user_authorize_url")]
    pub user_authorize_url: String,
}

/// A merchant served through an ISV (第三方应用, more-wallets.md §7): the account's settings
/// when it names a partner, whose settings (the ISV app's keys, in either mode) sign its calls.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SubMerchantSettings {
    /// The merchant's own app id, which its authorisation names and its notifications carry as
    /// `auth_app_id`.
    pub auth_app_id: String,
    /// The token of the merchant's authorisation (`app_auth_token`), a secret. Without it,
    /// Moongate obtains the token itself when the merchant authorises through it, keeps it
    /// (sealed) in the ledger and refreshes it.
    #[serde(default)]
    pub app_auth_token: Option<SecretRef>,
    /// The merchant's PID (`2088…`): its notifications' `seller_id`, its bills' account.
    #[serde(default)]
    pub seller_id: Option<String>,
    /// The merchant's app has the JSAPI product (see [`Settings::jsapi`]); the ISV's
    /// `user_authorize_url` is used, with the merchant's app id.
    #[serde(default)]
    pub jsapi: bool,
}

impl SubMerchantSettings {
    /// Pure checks, as [`Settings::validate`].
    pub fn validate(&self) -> Vec<(&'static str, String)> {
        let mut problems = Vec::new();
        if !is_app_id(&self.auth_app_id) {
            problems.push(("auth_app_id", "must be 1 to 32 digits".to_owned()));
        }
        problems.extend(seller_id_problem(self.seller_id.as_deref()));
        problems
    }
}

/// A `seller_id` that is not a PID, for either settings table.
fn seller_id_problem(seller_id: Option<&str>) -> Option<(&'static str, String)> {
    seller_id
        .filter(|pid| !is_pid(pid))
        .map(|_| ("seller_id", "must be a 16-digit Alipay PID".to_owned()))
}

fn is_app_id(text: &str) -> bool {
    !text.is_empty() && text.len() <= 32 && text.bytes().all(|b| b.is_ascii_digit())
}

fn is_pid(text: &str) -> bool {
    text.len() == 16 && text.bytes().all(|b| b.is_ascii_digit())
}

fn default_gateway() -> String {
    PRODUCTION_GATEWAY.to_owned()
}

fn default_consent_url() -> String {
    crate::auth::PRODUCTION_CONSENT_URL.to_owned()
}

fn default_user_authorize_url() -> String {
    crate::buyer::PRODUCTION_AUTHORIZE_URL.to_owned()
}

impl Settings {
    /// Pure checks; each problem comes back as `(key, message)` relative to the settings table.
    pub fn validate(&self) -> Vec<(&'static str, String)> {
        let mut problems = Vec::new();
        if !is_app_id(&self.app_id) {
            problems.push(("app_id", "must be 1 to 32 digits".to_owned()));
        }
        problems.extend(seller_id_problem(self.seller_id.as_deref()));
        if let Err(message) = check_gateway_url(&self.gateway_url) {
            problems.push(("gateway_url", message));
        }
        if let Err(message) = check_gateway_url(&self.consent_url) {
            problems.push(("consent_url", message));
        }
        if let Err(message) = check_gateway_url(&self.user_authorize_url) {
            problems.push(("user_authorize_url", message));
        }
        if let Err(problem) = self.mode() {
            problems.push(problem);
        }
        problems
    }

    /// Which of Alipay's two signing modes the settings choose: exactly one must be complete.
    pub fn mode(&self) -> Result<Mode<'_>, (&'static str, String)> {
        let certificate_mode = self.app_cert.is_some()
            || !self.alipay_certs.is_empty()
            || self.alipay_root_cert.is_some();
        match (&self.alipay_public_key, certificate_mode) {
            (Some(key), false) => Ok(Mode::PublicKey {
                alipay_public_key: key,
            }),
            (Some(_), true) => Err((
                "alipay_public_key",
                "is public-key mode; app_cert, alipay_certs and alipay_root_cert are certificate \
                 mode: set one mode"
                    .to_owned(),
            )),
            (None, false) => Err((
                "alipay_public_key",
                "is missing: set it (public-key mode) or app_cert, alipay_certs and \
                 alipay_root_cert (certificate mode)"
                    .to_owned(),
            )),
            (None, true) => {
                let missing = |key| {
                    Err((key, "is missing (certificate mode needs app_cert, alipay_certs and alipay_root_cert)".to_owned()))
                };
                let Some(app_cert) = &self.app_cert else {
                    return missing("app_cert");
                };
                let Some(alipay_root_cert) = &self.alipay_root_cert else {
                    return missing("alipay_root_cert");
                };
                if self.alipay_certs.is_empty() {
                    return missing("alipay_certs");
                }
                Ok(Mode::Certificates {
                    app_cert,
                    alipay_certs: &self.alipay_certs,
                    alipay_root_cert,
                })
            }
        }
    }
}

/// The key material of one signing mode, as the settings name it.
#[derive(Debug, Clone, Copy)]
pub enum Mode<'a> {
    /// Public-key mode (公钥模式).
    PublicKey {
        /// Alipay's public key.
        alipay_public_key: &'a SecretRef,
    },
    /// Public-key certificate mode (公钥证书模式, china-wallets.md A.9).
    Certificates {
        /// The application's certificate.
        app_cert: &'a SecretRef,
        /// Alipay's certificates, at least one.
        alipay_certs: &'a [SecretRef],
        /// Alipay's root bundle.
        alipay_root_cert: &'a SecretRef,
    },
}

pub use moongate_contract::http::check_base_url as check_gateway_url;

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(extra: &str) -> Settings {
        let text =
            format!("app_id = \"2021000122671081\"\napp_private_key = {{ file = \"k\" }}\n{extra}");
        toml::from_str(&text).expect("settings parse")
    }

    #[test]
    fn exactly_one_signing_mode_must_be_complete() {
        let key_of = |extra: &str| settings(extra).mode().err().map(|(key, _)| key);
        assert_eq!(key_of("alipay_public_key = { file = \"p\" }"), None);
        let certificates = "app_cert = { file = \"a\" }\nalipay_certs = [{ file = \"b\" }, { file = \"c\" }]\nalipay_root_cert = { file = \"r\" }";
        assert_eq!(key_of(certificates), None);
        let parsed = settings(certificates);
        let Ok(Mode::Certificates { alipay_certs, .. }) = parsed.mode() else {
            panic!("certificate mode")
        };
        assert_eq!(alipay_certs.len(), 2);
        assert_eq!(key_of(""), Some("alipay_public_key"));
        assert_eq!(
            key_of(&format!(
                "alipay_public_key = {{ file = \"p\" }}\n{certificates}"
            )),
            Some("alipay_public_key")
        );
        assert_eq!(
            key_of("app_cert = { file = \"a\" }\nalipay_root_cert = { file = \"r\" }"),
            Some("alipay_certs")
        );
        assert_eq!(
            key_of("alipay_certs = [{ file = \"b\" }]\nalipay_root_cert = { file = \"r\" }"),
            Some("app_cert")
        );
        assert_eq!(
            key_of("app_cert = { file = \"a\" }\nalipay_certs = [{ file = \"b\" }]"),
            Some("alipay_root_cert")
        );
    }

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
