//! The one place that maps a [`ProviderKind`] to its adapter crate: its facts (what the core
//! must know before it has an account: methods, payer needs, payment codes, names, statement
//! files), its settings check and its builder. Every match is exhaustive, so a new kind does not
//! compile until it is wired up here, and no other core module names a provider or a method.

use std::path::Path;
use std::sync::Arc;

use moongate_adapter_alipay::settings::Mode as AlipayMode;
use moongate_adapter_alipay::{AccountKeys, AlipayAdapter, AlipayKeys};
use moongate_adapter_wechatpay::settings::Settings as WechatPaySettings;
use moongate_adapter_wechatpay::settings::SubMerchantSettings as WechatPaySubMerchant;
use moongate_adapter_wechatpay::{AccountError as WechatPayAccountError, WechatPayAdapter};
use moongate_contract::{
    Authorising, MethodFacts, PaymentAdapter, PaymentMethod, ProviderFacts, ProviderKind, Secret,
    TokenSlot,
};

use moongate_adapter_alipay::settings::Settings as AlipaySettings;
use moongate_adapter_alipay::settings::SubMerchantSettings as AlipaySubMerchant;
use moongate_adapter_unionpay::settings::Settings as UnionPaySettings;
use moongate_adapter_unionpay::{AccountError as UnionPayAccountError, UnionPayAdapter};

use crate::config::{ManagedAuthorisation, parse_settings, resolve_secret};

/// What a provider declares about itself.
pub fn facts(kind: ProviderKind) -> &'static ProviderFacts {
    match kind {
        ProviderKind::Alipay => &moongate_adapter_alipay::FACTS,
        ProviderKind::WechatPay => &moongate_adapter_wechatpay::FACTS,
        ProviderKind::UnionPay => &moongate_adapter_unionpay::FACTS,
    }
}

/// Every provider's facts, in [`ProviderKind::ALL`] order (the cashier shows wallets so).
pub fn all_facts() -> impl Iterator<Item = &'static ProviderFacts> {
    ProviderKind::ALL.iter().map(|&kind| facts(kind))
}

/// What a method needs, as its provider declares it; `None` only for a method its provider's
/// crate does not declare (a test below proves there is none).
pub fn method_facts(method: PaymentMethod) -> Option<&'static MethodFacts> {
    facts(method.provider()).method(method)
}

/// True for methods where the till scans a code the shopper shows.
pub fn is_payment_code(method: PaymentMethod) -> bool {
    method_facts(method).is_some_and(|m| m.payment_code.is_some())
}

/// Tells the wallet of a scanned payment code by the formats the providers declare
/// (prefix and length, as aggregators do). Anything else is `None`.
pub fn method_for_payment_code(code: &str) -> Option<PaymentMethod> {
    all_facts()
        .flat_map(|p| p.methods.iter())
        .find(|m| m.payment_code.is_some_and(|f| f.matches(code)))
        .map(|m| m.method)
}

/// The payment-code formats, for error messages: `WeChat Pay: 18 digits from 10-15; …`.
pub fn payment_code_formats() -> String {
    all_facts()
        .flat_map(|p| {
            p.methods
                .iter()
                .filter_map(|m| m.payment_code)
                .map(|f| format!("{}: {}", p.wallet.name_en, f.describe()))
        })
        .collect::<Vec<_>>()
        .join("; ")
}

fn relative(problems: Vec<(&'static str, String)>) -> Vec<(String, String)> {
    problems
        .into_iter()
        .map(|(key, message)| (format!(".{key}"), message))
        .collect()
}

/// Pure checks of an account's `settings` table: `(key path suffix, message)` pairs, where the
/// suffix starts with `.` (or is empty for the table itself).
pub fn validate_settings(kind: ProviderKind, table: &toml::Table) -> Vec<(String, String)> {
    match kind {
        ProviderKind::Alipay => match parse_settings::<AlipaySettings>(table) {
            Err(problem) => vec![problem],
            Ok(settings) => relative(settings.validate()),
        },
        ProviderKind::WechatPay => match parse_settings::<WechatPaySettings>(table) {
            Err(problem) => vec![problem],
            Ok(settings) => relative(settings.validate()),
        },
        ProviderKind::UnionPay => match parse_settings::<UnionPaySettings>(table) {
            Err(problem) => vec![problem],
            Ok(settings) => relative(settings.validate()),
        },
    }
}

/// Reads the secret or file a setting names; a problem comes back at the setting's key path.
fn read_setting(
    key: &str,
    reference: &moongate_contract::SecretRef,
    base_dir: &Path,
) -> Result<String, Vec<(String, String)>> {
    resolve_secret(reference, base_dir).map_err(|m| vec![(format!(".{key}"), m)])
}

/// Reads the keys and builds the adapter of one account.
pub fn build_adapter(
    kind: ProviderKind,
    table: &toml::Table,
    base_dir: &Path,
) -> Result<Arc<dyn PaymentAdapter>, Vec<(String, String)>> {
    match kind {
        ProviderKind::Alipay => Ok(Arc::new(build_alipay(table, base_dir)?)),
        ProviderKind::WechatPay => Ok(Arc::new(build_wechatpay(table, base_dir)?)),
        ProviderKind::UnionPay => Ok(Arc::new(build_unionpay(table, base_dir)?)),
    }
}

/// What the pure checks of a sub-merchant account's own settings found.
#[derive(Debug, Default)]
pub struct SubMerchantCheck {
    /// Problems, with their keys relative to the settings table.
    pub problems: Vec<(String, String)>,
    /// Its identity under its partner (Alipay: the authorising app id; WeChat Pay: the
    /// `sub_mchid`), which no two accounts
    /// may share: the setting that holds it and its value; `None` when the settings did not
    /// parse.
    pub identity: Option<(&'static str, String)>,
}

/// Pure checks of a sub-merchant account's own settings (its identity under its partner),
/// parsed once; `Err` when the provider has no partner mode in Moongate.
pub fn validate_sub_merchant(
    kind: ProviderKind,
    table: &toml::Table,
) -> Result<SubMerchantCheck, String> {
    match kind {
        ProviderKind::Alipay => Ok(match parse_settings::<AlipaySubMerchant>(table) {
            Err(problem) => SubMerchantCheck {
                problems: vec![problem],
                identity: None,
            },
            Ok(settings) => SubMerchantCheck {
                problems: relative(settings.validate()),
                identity: Some(("auth_app_id", settings.auth_app_id)),
            },
        }),
        ProviderKind::WechatPay => Ok(match parse_settings::<WechatPaySubMerchant>(table) {
            Err(problem) => SubMerchantCheck {
                problems: vec![problem],
                identity: None,
            },
            Ok(settings) => SubMerchantCheck {
                problems: relative(settings.validate()),
                identity: Some(("sub_mchid", settings.sub_mchid)),
            },
        }),
        ProviderKind::UnionPay => Err(format!(
            "{kind} accounts cannot use a partner yet (Alipay ISV authorisations and WeChat Pay \
             sub-merchants can)"
        )),
    }
}

/// A partner's credentials, loaded once: the adapter its sub-merchants' adapters are made
/// from, sharing its keys (a partner may serve thousands of sub-merchants).
#[derive(Debug)]
pub enum PartnerKeys {
    /// An Alipay ISV app.
    Alipay(Arc<AlipayAdapter>),
    /// A WeChat Pay service provider.
    WechatPay(WechatPayAdapter),
}

/// Reads a partner's keys, once for all its sub-merchants; problems at key paths relative to
/// its `settings`.
pub fn build_partner(
    kind: ProviderKind,
    table: &toml::Table,
    base_dir: &Path,
) -> Result<PartnerKeys, Vec<(String, String)>> {
    match kind {
        ProviderKind::Alipay => Ok(PartnerKeys::Alipay(Arc::new(build_alipay(
            table, base_dir,
        )?))),
        ProviderKind::WechatPay => Ok(PartnerKeys::WechatPay(build_wechatpay(table, base_dir)?)),
        ProviderKind::UnionPay => Err(vec![(
            String::new(),
            format!("{kind} has no partner mode in Moongate"),
        )]),
    }
}

impl PartnerKeys {
    /// The partner's app that merchants authorise through Moongate, for partners whose
    /// sub-merchants authorise it (Alipay ISV apps); `None` for the others.
    pub fn authorising(&self) -> Option<Arc<dyn Authorising>> {
        match self {
            PartnerKeys::Alipay(isv) => Some(Arc::clone(isv) as Arc<dyn Authorising>),
            PartnerKeys::WechatPay(_) => None,
        }
    }
}

/// A sub-merchant account's adapter, and the slot of its token when Moongate keeps it (an
/// authorisation the merchant gives through Moongate rather than a configured token).
#[derive(Debug)]
pub struct SubMerchantAdapter {
    /// The adapter.
    pub adapter: Arc<dyn PaymentAdapter>,
    /// When Moongate obtains its token (no token configured): the slot its adapter reads and
    /// the identity the authorisation must name.
    pub authorisation: Option<ManagedAuthorisation>,
}

/// Builds the adapter of one sub-merchant account from its partner's loaded keys and its own
/// identity (its `settings`; problems at key paths relative to them).
pub fn build_sub_merchant_adapter(
    kind: ProviderKind,
    partner: &PartnerKeys,
    table: &toml::Table,
    base_dir: &Path,
) -> Result<SubMerchantAdapter, Vec<(String, String)>> {
    match (kind, partner) {
        (ProviderKind::Alipay, PartnerKeys::Alipay(isv)) => {
            let own = parse_settings::<AlipaySubMerchant>(table).map_err(|p| vec![p])?;
            let (slot, managed) = match &own.app_auth_token {
                Some(reference) => {
                    let token = read_setting("app_auth_token", reference, base_dir)?;
                    let token = Secret::new(token.trim_end().to_owned());
                    (TokenSlot::new(Some(token)), false)
                }
                None => (TokenSlot::new(None), true),
            };
            let adapter = isv
                .for_authorisation(
                    &moongate_adapter_alipay::Authorisation {
                        auth_app_id: &own.auth_app_id,
                        app_auth_token: slot.clone(),
                    },
                    own.seller_id.as_deref(),
                )
                .with_jsapi(own.jsapi);
            Ok(SubMerchantAdapter {
                adapter: Arc::new(adapter),
                authorisation: managed.then_some(ManagedAuthorisation {
                    slot,
                    identity: own.auth_app_id,
                }),
            })
        }
        (ProviderKind::WechatPay, PartnerKeys::WechatPay(provider)) => {
            let own = parse_settings::<WechatPaySubMerchant>(table).map_err(|p| vec![p])?;
            let mut adapter = provider.for_sub_merchant(moongate_adapter_wechatpay::SubMerchant {
                sub_mchid: &own.sub_mchid,
                sub_appid: own.sub_appid.as_deref(),
            });
            if let Some(reference) = &own.oauth_app_secret {
                let secret = read_setting("oauth_app_secret", reference, base_dir)?;
                adapter = adapter.with_oauth(moongate_adapter_wechatpay::oauth::OAuth {
                    app_secret: Secret::new(secret.trim_end().to_owned()),
                    authorize_url: own.oauth_authorize_url.clone(),
                    api_url: own.oauth_api_url.trim_end_matches('/').to_owned(),
                });
            }
            Ok(SubMerchantAdapter {
                adapter: Arc::new(adapter),
                authorisation: None,
            })
        }
        (ProviderKind::Alipay | ProviderKind::WechatPay | ProviderKind::UnionPay, _) => {
            Err(vec![(
                String::new(),
                format!("{kind} accounts cannot use this partner"),
            )])
        }
    }
}

/// Reads the keys (public-key mode) or certificates (certificate mode) and builds an Alipay
/// adapter (an ISV's too: its sub-merchants are made from it).
fn build_alipay(
    table: &toml::Table,
    base_dir: &Path,
) -> Result<AlipayAdapter, Vec<(String, String)>> {
    let settings = parse_settings::<AlipaySettings>(table).map_err(|p| vec![p])?;
    let read = |key: &str, reference| read_setting(key, reference, base_dir);
    let private = read("app_private_key", &settings.app_private_key)?;
    let mode = settings
        .mode()
        .map_err(|(key, message)| vec![(format!(".{key}"), message)])?;
    // The texts the keys borrow from.
    enum Texts {
        PublicKey(String),
        Certificates {
            app: String,
            root: String,
            alipay: Vec<String>,
        },
    }
    let texts = match mode {
        AlipayMode::PublicKey { alipay_public_key } => {
            Texts::PublicKey(read("alipay_public_key", alipay_public_key)?)
        }
        AlipayMode::Certificates {
            app_cert,
            alipay_certs,
            alipay_root_cert,
        } => Texts::Certificates {
            app: read("app_cert", app_cert)?,
            root: read("alipay_root_cert", alipay_root_cert)?,
            alipay: alipay_certs
                .iter()
                .enumerate()
                .map(|(index, reference)| read(&format!("alipay_certs[{index}]"), reference))
                .collect::<Result<_, _>>()?,
        },
    };
    let alipay = match &texts {
        Texts::PublicKey(key) => AlipayKeys::PublicKey(key),
        Texts::Certificates { app, root, alipay } => AlipayKeys::Certificates {
            app_cert: app,
            alipay_root_cert: root,
            alipay_certs: alipay.iter().map(String::as_str).collect(),
        },
    };
    AlipayAdapter::new(&AccountKeys {
        consent_url: Some(&settings.consent_url),
        app_id: &settings.app_id,
        gateway_url: &settings.gateway_url,
        seller_id: settings.seller_id.as_deref(),
        app_private_key: &private,
        alipay,
    })
    .map(|adapter| {
        adapter
            .with_user_authorize_url(&settings.user_authorize_url)
            .with_jsapi(settings.jsapi)
    })
    .map_err(|e| vec![e.setting()])
}

/// Reads the keys and certificates and builds a UnionPay adapter.
fn build_unionpay(
    table: &toml::Table,
    base_dir: &Path,
) -> Result<UnionPayAdapter, Vec<(String, String)>> {
    let settings: UnionPaySettings = parse_settings(table).map_err(|p| vec![p])?;
    let read = |key: &str, reference| read_setting(key, reference, base_dir);
    let missing = |key: &str| vec![(format!(".{key}"), "is missing".to_owned())];
    // Either a key store with its password, or a PEM key with its certificate (the settings'
    // own check says which is missing).
    enum Given {
        Pem(String, String),
        Pfx(Vec<u8>, String),
    }
    let given = match (&settings.signing_pfx, &settings.signing_pfx_password) {
        (Some(store), Some(password)) => {
            let der = crate::config::resolve_secret_bytes(store, base_dir)
                .map_err(|m| vec![(".signing_pfx".to_owned(), m)])?;
            Given::Pfx(der, read("signing_pfx_password", password)?)
        }
        _ => {
            let key = settings
                .signing_key
                .as_ref()
                .ok_or_else(|| missing("signing_key"))?;
            let certificate = settings
                .signing_certificate
                .as_ref()
                .ok_or_else(|| missing("signing_certificate"))?;
            Given::Pem(
                read("signing_key", key)?,
                read("signing_certificate", certificate)?,
            )
        }
    };
    let signing = match &given {
        Given::Pem(key, certificate) => {
            moongate_adapter_unionpay::SigningKey::Pem { key, certificate }
        }
        Given::Pfx(der, password) => moongate_adapter_unionpay::SigningKey::Pfx { der, password },
    };
    let middle = read("middle_certificate", &settings.middle_certificate)?;
    let root = read("root_certificate", &settings.root_certificate)?;
    UnionPayAdapter::new(&moongate_adapter_unionpay::AccountKeys {
        mer_id: &settings.mer_id,
        signing,
        middle_certificate: &middle,
        root_certificate: &root,
        gateway_url: &settings.gateway_url,
        file_url: &settings.file_url,
    })
    .map_err(|e| {
        let (key, problem) = match e {
            UnionPayAccountError::SigningStore(p) => (".signing_pfx", p),
            UnionPayAccountError::SigningKey(p) => (".signing_key", p),
            UnionPayAccountError::SigningCertificate(p) => (".signing_certificate", p),
            UnionPayAccountError::Middle(p) => (".middle_certificate", p),
            UnionPayAccountError::Root(p) => (".root_certificate", p),
        };
        // The message names the key and the problem, never the value.
        vec![(key.to_owned(), problem.to_string())]
    })
}

/// Reads the keys and builds a WeChat Pay adapter (platform keys are optional, so a
/// certificate-mode merchant can download its first certificates); a service provider's too:
/// its sub-merchants are made from it.
fn build_wechatpay(
    table: &toml::Table,
    base_dir: &Path,
) -> Result<WechatPayAdapter, Vec<(String, String)>> {
    let settings: WechatPaySettings = parse_settings(table).map_err(|p| vec![p])?;
    let read = |key: &str, reference| read_setting(key, reference, base_dir);
    let private = read("merchant_private_key", &settings.merchant_private_key)?;
    let apiv3 = read("apiv3_key", &settings.apiv3_key)?;
    let v2 = match &settings.api_v2_key {
        Some(reference) => Some(read("api_v2_key", reference)?),
        None => None,
    };
    let public = match &settings.wechatpay_public_key {
        Some(reference) => Some(read("wechatpay_public_key", reference)?),
        None => None,
    };
    let mut certificates = Vec::new();
    for (index, reference) in settings.platform_certificates.iter().enumerate() {
        certificates.push(read(&format!("platform_certificates[{index}]"), reference)?);
    }
    let public_key = match (&public, &settings.wechatpay_public_key_id) {
        (Some(pem), Some(id)) => Some((id.as_str(), pem.as_str())),
        _ => None,
    };
    let oauth = match &settings.oauth_app_secret {
        Some(reference) => Some(moongate_adapter_wechatpay::oauth::OAuth {
            app_secret: Secret::new(read("oauth_app_secret", reference)?.trim_end().to_owned()),
            authorize_url: settings.oauth_authorize_url.clone(),
            api_url: settings.oauth_api_url.trim_end_matches('/').to_owned(),
        }),
        None => None,
    };
    let adapter = WechatPayAdapter::new(&moongate_adapter_wechatpay::AccountKeys {
        mchid: &settings.mchid,
        appid: &settings.appid,
        merchant_serial_no: &settings.merchant_serial_no,
        merchant_private_key: &private,
        apiv3_key: &apiv3,
        api_v2_key: v2.as_deref(),
        wechatpay_public_key: public_key,
        platform_certificates: &certificates,
        api_base_url: &settings.api_base_url,
        oauth,
    })
    .map_err(|e| {
        let key = match &e {
            WechatPayAccountError::MerchantPrivateKey(_) => ".merchant_private_key".to_owned(),
            WechatPayAccountError::ApiV3Key => ".apiv3_key".to_owned(),
            WechatPayAccountError::ApiV2Key => ".api_v2_key".to_owned(),
            WechatPayAccountError::PublicKey(_) => ".wechatpay_public_key".to_owned(),
            WechatPayAccountError::Certificate(index, _) => {
                format!(".platform_certificates[{index}]")
            }
        };
        // The message names the key and the problem, never the value.
        let message = e.to_string();
        let message = message
            .split_once(": ")
            .map_or(message.clone(), |(_, rest)| rest.to_owned());
        vec![(key, message)]
    })?;
    Ok(adapter)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_method_is_declared_once_by_its_provider() {
        for &method in PaymentMethod::ALL {
            let declared: Vec<_> = all_facts()
                .flat_map(|p| p.methods.iter().map(move |m| (p.kind, m.method)))
                .filter(|(_, m)| *m == method)
                .collect();
            assert_eq!(declared, vec![(method.provider(), method)], "{method:?}");
        }
        for &kind in ProviderKind::ALL {
            assert_eq!(facts(kind).kind, kind);
            let fit = facts(kind).wallet.cashier;
            for m in fit.in_app.iter().chain(fit.mobile).chain(fit.desktop) {
                assert_eq!(m.provider(), kind, "{kind}'s cashier lists {m:?}");
                assert!(!is_payment_code(*m), "{m:?} cannot start in a browser");
            }
        }
    }

    #[test]
    fn payment_codes_are_routed_by_prefix() {
        assert_eq!(
            method_for_payment_code("134567890123456789"),
            Some(PaymentMethod::WechatPaymentCode)
        );
        assert_eq!(
            method_for_payment_code("104567890123456789"),
            Some(PaymentMethod::WechatPaymentCode)
        );
        assert_eq!(
            method_for_payment_code("284567890123456789"),
            Some(PaymentMethod::AlipayPaymentCode)
        );
        assert_eq!(
            method_for_payment_code("2545678901234567"),
            Some(PaymentMethod::AlipayPaymentCode)
        );
        assert_eq!(
            method_for_payment_code("6212345678901234567"),
            Some(PaymentMethod::UnionpayPaymentCode)
        );
        assert_eq!(method_for_payment_code("621234567890123456"), None);
        assert_eq!(method_for_payment_code("6312345678901234567"), None);
        assert_eq!(method_for_payment_code("16456789012345678"), None);
        assert_eq!(method_for_payment_code("1345678901234567890"), None);
        assert_eq!(method_for_payment_code("13456789012345678x"), None);
        assert_eq!(method_for_payment_code(""), None);
        assert_eq!(
            payment_code_formats(),
            "Alipay: 16-24 digits from 25-30; WeChat Pay: 18 digits from 10-15; UnionPay: 19 digits from 62"
        );
    }
}
