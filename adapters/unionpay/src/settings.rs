//! The `settings` table of a UnionPay account in the merchant config.

use moongate_contract::SecretRef;
use serde::Deserialize;

/// Production gateway base (more-wallets.md §1.1); the operations append their `….do`.
pub const PRODUCTION_GATEWAY: &str = "https://gateway.95516.com/gateway/api";

/// Production file-transfer endpoint, where the daily bill is asked for (§1.1).
pub const PRODUCTION_FILES: &str = "https://filedownload.95516.com/";

/// A UnionPay account as written in the config file.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    /// `merId`, 15 digits.
    pub mer_id: String,
    /// The merchant's signing key store as UnionPay issues it (`acp_…_sign.pfx`, PKCS#12: a
    /// file, or an environment variable holding its base64), with `signing_pfx_password`.
    /// Either this or `signing_key` with `signing_certificate`.
    #[serde(default)]
    pub signing_pfx: Option<SecretRef>,
    /// The password of `signing_pfx`.
    #[serde(default)]
    pub signing_pfx_password: Option<SecretRef>,
    /// The merchant's signing key (RSA 2048, PKCS#1 or PKCS#8 PEM), as exported from its
    /// `.pfx`.
    #[serde(default)]
    pub signing_key: Option<SecretRef>,
    /// The merchant's signing certificate (PEM): its decimal serial is the `certId`.
    #[serde(default)]
    pub signing_certificate: Option<SecretRef>,
    /// UnionPay's middle certificate (`acp_…_middle.cer`, PEM), through which the signing
    /// certificate inside every answer must chain.
    pub middle_certificate: SecretRef,
    /// UnionPay's root certificate (`acp_…_root.cer`, PEM).
    pub root_certificate: SecretRef,
    /// The gateway base URL; defaults to production.
    #[serde(default = "default_gateway")]
    pub gateway_url: String,
    /// The file-transfer endpoint (the bill, `76/01/000000`); defaults to production (test:
    /// `https://filedownload.test.95516.com/`).
    #[serde(default = "default_files")]
    pub file_url: String,
}

fn default_gateway() -> String {
    PRODUCTION_GATEWAY.to_owned()
}

fn default_files() -> String {
    PRODUCTION_FILES.to_owned()
}

impl Settings {
    /// Pure checks; each problem comes back as `(key, message)` relative to the settings table.
    pub fn validate(&self) -> Vec<(&'static str, String)> {
        let mut problems = Vec::new();
        if self.mer_id.len() != 15 || !self.mer_id.bytes().all(|b| b.is_ascii_digit()) {
            problems.push(("mer_id", "must be UnionPay's 15-digit merId".to_owned()));
        }
        let (key, certificate) = (
            self.signing_key.is_some(),
            self.signing_certificate.is_some(),
        );
        let (store, password) = (
            self.signing_pfx.is_some(),
            self.signing_pfx_password.is_some(),
        );
        let (pem, pfx) = (key || certificate, store || password);
        if pem && pfx {
            problems.push((
                "signing_pfx",
                "give either signing_pfx or signing_key with signing_certificate, not both"
                    .to_owned(),
            ));
        } else if !pem && !pfx {
            problems.push((
                "signing_pfx",
                "the signing key is missing: give signing_pfx with signing_pfx_password, or signing_key with signing_certificate".to_owned(),
            ));
        } else if pfx {
            if !store {
                problems.push((
                    "signing_pfx",
                    "signing_pfx_password without signing_pfx".to_owned(),
                ));
            }
            if !password {
                problems.push((
                    "signing_pfx_password",
                    "signing_pfx needs its password".to_owned(),
                ));
            }
        } else {
            if !key {
                problems.push((
                    "signing_key",
                    "signing_certificate without signing_key".to_owned(),
                ));
            }
            if !certificate {
                problems.push((
                    "signing_certificate",
                    "signing_key needs its certificate (its serial is the certId)".to_owned(),
                ));
            }
        }
        if let Err(message) = moongate_contract::http::check_base_url(&self.gateway_url) {
            problems.push(("gateway_url", message));
        }
        if let Err(message) = moongate_contract::http::check_base_url(&self.file_url) {
            problems.push(("file_url", message));
        }
        problems
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(mer_id: &str, gateway_url: &str) -> Settings {
        Settings {
            mer_id: mer_id.to_owned(),
            signing_pfx: None,
            signing_pfx_password: None,
            signing_key: Some(SecretRef::File("k".into())),
            signing_certificate: Some(SecretRef::File("c".into())),
            middle_certificate: SecretRef::File("m".into()),
            root_certificate: SecretRef::File("r".into()),
            gateway_url: gateway_url.to_owned(),
            file_url: PRODUCTION_FILES.to_owned(),
        }
    }

    #[test]
    fn mer_id_and_gateway_are_checked() {
        assert!(
            settings("777290058167151", PRODUCTION_GATEWAY)
                .validate()
                .is_empty()
        );
        let keys = |s: Settings| s.validate().into_iter().map(|(k, _)| k).collect::<Vec<_>>();
        assert_eq!(
            keys(settings("7772900581671", PRODUCTION_GATEWAY)),
            ["mer_id"]
        );
        assert_eq!(
            keys(settings("77729005816715x", PRODUCTION_GATEWAY)),
            ["mer_id"]
        );
        assert_eq!(
            keys(settings(
                "777290058167151",
                "http://gateway.95516.com/gateway/api"
            )),
            ["gateway_url"]
        );
        assert!(
            settings("777290058167151", "http://127.0.0.1:1/gateway/api")
                .validate()
                .is_empty()
        );
        // The key: a store with its password, or a PEM key with its certificate; not both,
        // not half of either.
        let file = |name: &str| Some(SecretRef::File(name.into()));
        let mut store = settings("777290058167151", PRODUCTION_GATEWAY);
        (store.signing_key, store.signing_certificate) = (None, None);
        (store.signing_pfx, store.signing_pfx_password) = (file("p"), file("w"));
        assert!(store.clone().validate().is_empty());
        let mut half = store.clone();
        half.signing_pfx_password = None;
        assert_eq!(keys(half), ["signing_pfx_password"]);
        let mut both = store.clone();
        both.signing_key = file("k");
        assert_eq!(keys(both), ["signing_pfx"]);
        let mut neither = store;
        (neither.signing_pfx, neither.signing_pfx_password) = (None, None);
        assert_eq!(keys(neither), ["signing_pfx"]);
        let mut key_only = settings("777290058167151", PRODUCTION_GATEWAY);
        key_only.signing_certificate = None;
        assert_eq!(keys(key_only), ["signing_certificate"]);
        let mut files = settings("777290058167151", PRODUCTION_GATEWAY);
        files.file_url = "http://filedownload.95516.com/".to_owned();
        assert_eq!(keys(files), ["file_url"]);
    }
}
