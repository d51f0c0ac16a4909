//! The one place that maps a [`ProviderKind`] to its adapter. Every match is exhaustive, so a
//! new kind does not compile until it is wired up here.

use std::path::Path;
use std::sync::Arc;

use moongate_adapter_alipay::{AccountKeys, AlipayAdapter};
use moongate_adapter_wechatpay::settings::Settings as WechatPaySettings;
use moongate_adapter_wechatpay::{AccountError as WechatPayAccountError, WechatPayAdapter};
use moongate_contract::{PaymentAdapter, ProviderKind};

use crate::config::{parse_alipay_settings, parse_settings, resolve_secret};

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
        ProviderKind::Alipay => match parse_alipay_settings(table) {
            Err(problem) => vec![problem],
            Ok(settings) => relative(settings.validate()),
        },
        ProviderKind::WechatPay => match parse_settings::<WechatPaySettings>(table) {
            Err(problem) => vec![problem],
            Ok(settings) => relative(settings.validate()),
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
        ProviderKind::WechatPay => Ok(Arc::new(build_wechatpay(table, base_dir)?)),
    }
}

/// Reads the keys and builds a WeChat Pay adapter (also used to download platform
/// certificates, before any is configured).
pub fn build_wechatpay(
    table: &toml::Table,
    base_dir: &Path,
) -> Result<WechatPayAdapter, Vec<(String, String)>> {
    let settings: WechatPaySettings = parse_settings(table).map_err(|p| vec![p])?;
    let read = |key: &str, reference: &moongate_contract::SecretRef| {
        resolve_secret(reference, base_dir).map_err(|m| vec![(format!(".{key}"), m)])
    };
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
