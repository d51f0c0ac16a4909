//! `moongate wechatpay-certificates`: downloads a certificate-mode merchant's WeChat Pay
//! platform certificates (WeChat Pay hands them out only through `GET /v3/certificates`),
//! checks them (decryption with the APIv3 key, serial, the answer's signature) and writes one
//! PEM file per certificate for the config's `platform_certificates`.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, bail};

use crate::config;
use crate::gateway::Gateway;
use crate::outbound::Outbound;
use crate::registry;

/// Downloads the platform certificates of `merchant`'s WeChat Pay `account` into `out_dir`;
/// returns the files written. Only the config's syntax and that account's settings are read,
/// so a merchant with no platform key configured yet can bootstrap.
pub async fn download(
    config_path: &Path,
    merchant: &str,
    account: &str,
    out_dir: &Path,
) -> anyhow::Result<Vec<PathBuf>> {
    let base = config_path.parent().map(PathBuf::from).unwrap_or_default();
    let raw = config::load(config_path)?;
    let at = format!("merchants.{merchant}.accounts.{account}");
    let settings = raw
        .merchants
        .get(merchant)
        .and_then(|m| m.accounts.get(account))
        .with_context(|| format!("{at} is not in {}", config_path.display()))?;
    if settings.provider != "wechatpay" {
        bail!("{at} is a {} account, not wechatpay", settings.provider);
    }
    let adapter = registry::build_wechatpay(&settings.settings, &base).map_err(|problems| {
        let lines: Vec<String> = problems
            .into_iter()
            .map(|(key, message)| format!("{at}.settings{key}: {message}"))
            .collect();
        anyhow::anyhow!(lines.join("\n"))
    })?;
    let request = adapter.prepare_certificates(&Gateway::call_context())?;
    let client = Outbound::new(Duration::from_secs(5), Duration::from_secs(20))
        .map_err(anyhow::Error::msg)?;
    let response = client.send(&request).await?;
    let certificates = adapter.parse_certificates(&response)?;
    std::fs::create_dir_all(out_dir).with_context(|| format!("creating {}", out_dir.display()))?;
    let mut written = Vec::new();
    for certificate in certificates {
        let path = out_dir.join(format!("wechatpay-platform-{}.pem", certificate.serial_no));
        std::fs::write(&path, &certificate.pem)
            .with_context(|| format!("writing {}", path.display()))?;
        written.push(path);
    }
    Ok(written)
}
