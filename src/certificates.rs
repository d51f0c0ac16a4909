//! `moongate wechatpay-certificates` (and any provider that hands out its certificates through
//! its API, [`Operation::Certificates`]): downloads an account's provider certificates through
//! the one provider port, lets the adapter check them (WeChat Pay: decryption with the APIv3
//! key, serial, the answer's signature) and writes one PEM file per certificate for the
//! account's settings.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use moongate_contract::{Operation, ProviderKind};

use crate::circuit::{Circuit, CircuitSettings};
use crate::config::{self, Account};
use crate::outbound::Outbound;
use crate::port::{Caller, ProviderPort};
use crate::registry;

/// Downloads the provider certificates of `merchant`'s `account` into `out_dir`; returns the
/// files written. Only the config's syntax and that account's settings are read, so a merchant
/// with no provider key configured yet can bootstrap.
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
    let Some(kind) = ProviderKind::parse(&settings.provider) else {
        bail!("{at}.provider: unknown provider {:?}", settings.provider);
    };
    let lines = |problems: Vec<(String, String)>, at: &str| -> Vec<String> {
        problems
            .into_iter()
            .map(|(key, message)| format!("{at}.settings{key}: {message}"))
            .collect()
    };
    // A sub-merchant's certificates are its partner's, downloaded with the partner's keys.
    let built = match &settings.partner {
        None => registry::build_adapter(kind, &settings.settings, &base).map_err(|p| lines(p, &at)),
        Some(partner_id) => {
            let partner = raw
                .partners
                .get(partner_id)
                .with_context(|| format!("{at}.partner: unknown partner {partner_id:?}"))?;
            registry::build_partner(kind, &partner.settings, &base)
                .map_err(|p| lines(p, &format!("partners.{partner_id}")))
                .and_then(|keys| {
                    registry::build_sub_merchant_adapter(kind, &keys, &settings.settings, &base)
                        .map(|built| built.adapter)
                        .map_err(|p| lines(p, &at))
                })
        }
    };
    let adapter = built.map_err(|lines| anyhow::anyhow!(lines.join("\n")))?;
    if !adapter.capabilities().supports(Operation::Certificates) {
        bail!("{at} is a {kind} account; {kind} hands out no certificates through its API");
    }
    let client = Outbound::new(Duration::from_secs(5), Duration::from_secs(20))
        .map_err(anyhow::Error::msg)?;
    let port = ProviderPort::without_ledger(client);
    let account = Account {
        id: account.to_owned(),
        kind,
        adapter: Arc::clone(&adapter),
        limit: None,
        circuit: Arc::new(Circuit::new(CircuitSettings::default())),
        partner: None,
        authorisation: None,
        fee_rate_ppm: None,
        state_key: String::new(),
    };
    let caller = Caller {
        merchant_id: merchant,
        account: &account,
        subject: "certificates",
        refund_id: None,
    };
    let prepared = adapter
        .prepare_certificates(&port.call_context())
        .map(moongate_contract::Prepared::Send);
    let certificates = port
        .exchange(caller, "certificates", prepared, |answer| {
            adapter.parse_certificates(answer)
        })
        .await
        .into_answer()
        .map_err(anyhow::Error::msg)?;
    crate::private_fs::create_dir_all(out_dir)
        .with_context(|| format!("creating {}", out_dir.display()))?;
    let mut written = Vec::new();
    for certificate in certificates {
        let path = out_dir.join(format!(
            "{}-platform-{}.pem",
            kind.as_str(),
            certificate.serial_no
        ));
        crate::private_fs::write(&path, &certificate.pem)
            .with_context(|| format!("writing {}", path.display()))?;
        written.push(path);
    }
    Ok(written)
}
