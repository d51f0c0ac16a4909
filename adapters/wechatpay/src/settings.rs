//! The `settings` table of a WeChat Pay account in the merchant config.

use moongate_contract::SecretRef;
use moongate_contract::http::check_base_url;
use serde::Deserialize;

/// Production API host (china-wallets.md B.1).
pub const PRODUCTION_BASE_URL: &str = "https://api.mch.weixin.qq.com";

/// A WeChat Pay direct-merchant account as written in the config file.
///
/// Verification keys: `wechatpay_public_key` + `wechatpay_public_key_id` (public-key mode,
/// every merchant since late 2024), `platform_certificates` (certificate mode), or both while
/// migrating. At least one is required.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    /// Merchant id (`mchid`), digits.
    pub mchid: String,
    /// The app id payments are made under (`appid`, e.g. `wxd678efh567hg6787`).
    pub appid: String,
    /// Serial number (hex) of the merchant API certificate that matches the private key.
    pub merchant_serial_no: String,
    /// Merchant API private key (`apiclient_key.pem`, RSA 2048).
    pub merchant_private_key: SecretRef,
    /// The 32-byte APIv3 key that decrypts notifications.
    pub apiv3_key: SecretRef,
    /// The 32-byte API v2 key; needed only for payment codes (`micropay`).
    #[serde(default)]
    pub api_v2_key: Option<SecretRef>,
    /// WeChat Pay public key (`pub_key.pem`).
    #[serde(default)]
    pub wechatpay_public_key: Option<SecretRef>,
    /// Its id, `PUB_KEY_ID_…`.
    #[serde(default)]
    pub wechatpay_public_key_id: Option<String>,
    /// Platform certificates (PEM), each identified by its own serial.
    #[serde(default)]
    pub platform_certificates: Vec<SecretRef>,
    /// API base URL; defaults to production.
    #[serde(default = "default_base_url")]
    pub api_base_url: String,
    /// The AppSecret of the official account `appid` names: with it Moongate learns a payer's
    /// openid inside WeChat (web OAuth, `snsapi_base`) for `wechat_jsapi`.
    #[serde(default)]
    pub oauth_app_secret: Option<SecretRef>,
    /// The OAuth authorisation page; defaults to WeChat's.
    #[serde(default = "default_authorize_url")]
    pub oauth_authorize_url: String,
    /// The official-account API host of the code exchange; defaults to WeChat's.
    #[serde(default = "default_oauth_api_url")]
    pub oauth_api_url: String,
}

fn default_authorize_url() -> String {
    crate::oauth::PRODUCTION_AUTHORIZE_URL.to_owned()
}

fn default_oauth_api_url() -> String {
    crate::oauth::PRODUCTION_API_URL.to_owned()
}

/// A sub-merchant (特约商户) account under a WeChat Pay service provider, as written in the
/// config file: the provider's `[partners.<id>]` settings (a [`Settings`] table: its `mchid` and
/// `appid` are the `sp_mchid` and `sp_appid`) hold the keys; this table holds only the identity.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SubMerchantSettings {
    /// The sub-merchant's id (`sub_mchid`), digits, bound to the provider's `sp_mchid`.
    pub sub_mchid: String,
    /// The sub-merchant's own app id (`sub_appid`), when its official account or mini
    /// program takes the payments: JSAPI payers are then `sub_openid`s and the pay-sign names
    /// this app.
    #[serde(default)]
    pub sub_appid: Option<String>,
    /// The AppSecret of the `sub_appid` official account (the sub-merchant's own): with it
    /// Moongate learns a payer's `sub_openid` inside WeChat. Under the provider's app, the
    /// partner's `oauth_app_secret` serves instead.
    #[serde(default)]
    pub oauth_app_secret: Option<SecretRef>,
    /// The OAuth authorisation page; defaults to WeChat's.
    #[serde(default = "default_authorize_url")]
    pub oauth_authorize_url: String,
    /// The official-account API host of the code exchange; defaults to WeChat's.
    #[serde(default = "default_oauth_api_url")]
    pub oauth_api_url: String,
}

impl SubMerchantSettings {
    /// Pure checks, as [`Settings::validate`].
    pub fn validate(&self) -> Vec<(&'static str, String)> {
        let mut problems = Vec::new();
        if !is_mchid(&self.sub_mchid) {
            problems.push(("sub_mchid", "must be 1 to 32 digits".to_owned()));
        }
        if self.sub_appid.as_deref().is_some_and(|a| !is_appid(a)) {
            problems.push(("sub_appid", "must be 1 to 32 letters or digits".to_owned()));
        }
        if self.oauth_app_secret.is_some() && self.sub_appid.is_none() {
            problems.push((
                "oauth_app_secret",
                "is the sub_appid official account's: set sub_appid (under the provider's app \
                 the partner's oauth_app_secret serves)"
                    .to_owned(),
            ));
        }
        if let Err(message) = check_base_url(&self.oauth_authorize_url) {
            problems.push(("oauth_authorize_url", message));
        }
        if let Err(message) = check_base_url(&self.oauth_api_url) {
            problems.push(("oauth_api_url", message));
        }
        problems
    }
}

fn is_mchid(text: &str) -> bool {
    !text.is_empty() && text.len() <= 32 && text.bytes().all(|b| b.is_ascii_digit())
}

fn is_appid(text: &str) -> bool {
    !text.is_empty() && text.len() <= 32 && text.bytes().all(|b| b.is_ascii_alphanumeric())
}

fn default_base_url() -> String {
    PRODUCTION_BASE_URL.to_owned()
}

impl Settings {
    /// Pure checks; each problem comes back as `(key, message)` relative to the settings table.
    pub fn validate(&self) -> Vec<(&'static str, String)> {
        let mut problems = Vec::new();
        if !is_mchid(&self.mchid) {
            problems.push(("mchid", "must be 1 to 32 digits".to_owned()));
        }
        if !is_appid(&self.appid) {
            problems.push(("appid", "must be 1 to 32 letters or digits".to_owned()));
        }
        if self.merchant_serial_no.is_empty()
            || self.merchant_serial_no.len() > 64
            || !self
                .merchant_serial_no
                .bytes()
                .all(|b| b.is_ascii_hexdigit())
        {
            problems.push((
                "merchant_serial_no",
                "must be the merchant certificate's serial in hex".to_owned(),
            ));
        }
        match (&self.wechatpay_public_key, &self.wechatpay_public_key_id) {
            (Some(_), None) => problems.push((
                "wechatpay_public_key_id",
                "is required with wechatpay_public_key".to_owned(),
            )),
            (None, Some(_)) => problems.push((
                "wechatpay_public_key",
                "is required with wechatpay_public_key_id".to_owned(),
            )),
            _ => {}
        }
        if let Some(id) = &self.wechatpay_public_key_id {
            let ok = id.len() <= 64
                && id.strip_prefix("PUB_KEY_ID_").is_some_and(|rest| {
                    !rest.is_empty() && rest.bytes().all(|b| b.is_ascii_alphanumeric())
                });
            if !ok {
                problems.push((
                    "wechatpay_public_key_id",
                    "must look like PUB_KEY_ID_0114232134912410000000000000000001".to_owned(),
                ));
            }
        }
        if self.wechatpay_public_key.is_none() && self.platform_certificates.is_empty() {
            problems.push((
                "wechatpay_public_key",
                "a WeChat Pay public key or at least one platform certificate is required"
                    .to_owned(),
            ));
        }
        if let Err(message) = check_base_url(&self.api_base_url) {
            problems.push(("api_base_url", message));
        }
        if let Err(message) = check_base_url(&self.oauth_authorize_url) {
            problems.push(("oauth_authorize_url", message));
        }
        if let Err(message) = check_base_url(&self.oauth_api_url) {
            problems.push(("oauth_api_url", message));
        }
        problems
    }
}
