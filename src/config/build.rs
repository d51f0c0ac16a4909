//! Building the runtime configuration: secrets read, adapters built through the registry.

use super::runtime::{PartnerGate, account_state_key, partner_settings_text, partner_state_key};
use super::*;
use crate::cashier::key::KeySource;

/// A partner whose keys loaded: what its sub-merchant accounts are built with.
struct LoadedPartner {
    keys: registry::PartnerKeys,
    gate: Arc<PartnerGate>,
    /// Its settings as its sub-merchants' state keys take them.
    settings_text: String,
}

impl RawConfig {
    /// Validates, then reads every secret and key (relative paths against `base_dir`).
    pub fn build(&self, base_dir: &Path) -> Result<Config, ConfigErrors> {
        self.validate()?;
        let mut problems = Vec::new();
        let shared_limits = match &self.rate_limits.redis_url {
            None => None,
            Some(reference) => match resolve_secret(reference, base_dir) {
                Ok(url) if url.starts_with("rediss://") => {
                    // The Redis client is built without TLS: refuse here rather than fail at
                    // start.
                    problems.push(problem(
                        "rate_limits.redis_url",
                        "rediss:// (TLS) is not supported: use redis:// to a Redis on a private \
                         network or through a local TLS tunnel",
                    ));
                    None
                }
                Ok(url) if url.starts_with("redis://") => Some(SharedLimitSettings {
                    url: Secret::new(url),
                    timeout: std::time::Duration::from_millis(
                        self.rate_limits.redis_timeout_ms.unwrap_or(50),
                    ),
                    prefix: self
                        .rate_limits
                        .redis_key_prefix
                        .clone()
                        .unwrap_or_else(|| "moongate".to_owned()),
                }),
                Ok(_) => {
                    problems.push(problem("rate_limits.redis_url", "must be a redis:// URL"));
                    None
                }
                Err(message) => {
                    problems.push(problem("rate_limits.redis_url", message));
                    None
                }
            },
        };
        let ledger = match &self.ledger.database_url {
            None => LedgerBackend::Sqlite(base_dir.join(&self.ledger.path)),
            Some(reference) => match resolve_secret(reference, base_dir) {
                Ok(url)
                    if (url.starts_with("postgres://") || url.starts_with("postgresql://"))
                        && !verifies_remote_server(url.trim()) =>
                {
                    problems.push(problem(
                        "ledger.database_url",
                        "a database on another machine needs sslmode=verify-full (require and \
                         prefer do not check the server's certificate, and prefer may fall back \
                         to plain text)",
                    ));
                    LedgerBackend::Sqlite(base_dir.join(&self.ledger.path))
                }
                Ok(url) if url.starts_with("postgres://") || url.starts_with("postgresql://") => {
                    LedgerBackend::Postgres {
                        url: Secret::new(url.trim().to_owned()),
                        max_connections: self.ledger.max_connections.unwrap_or(16),
                    }
                }
                Ok(_) => {
                    problems.push(problem(
                        "ledger.database_url",
                        "must be a postgres:// or postgresql:// URL",
                    ));
                    LedgerBackend::Sqlite(base_dir.join(&self.ledger.path))
                }
                Err(message) => {
                    problems.push(problem("ledger.database_url", message));
                    LedgerBackend::Sqlite(base_dir.join(&self.ledger.path))
                }
            },
        };
        let admin_token = match &self.server.admin_token {
            None => None,
            Some(reference) => match resolve_secret(reference, base_dir) {
                Ok(token) if token.len() >= 16 => Some(Secret::new(token)),
                Ok(_) => {
                    problems.push(problem("server.admin_token", "must be at least 16 bytes"));
                    None
                }
                Err(message) => {
                    problems.push(problem("server.admin_token", message));
                    None
                }
            },
        };
        let cashier_key = match (&self.server.cashier_key, &ledger) {
            (Some(reference), _) => match resolve_secret(reference, base_dir) {
                Ok(key) if key.len() >= crate::cashier::key::MIN_KEY_BYTES => {
                    KeySource::Configured(Secret::new(key))
                }
                Ok(_) => {
                    problems.push(problem(
                        "server.cashier_key",
                        format!(
                            "must be at least {} bytes",
                            crate::cashier::key::MIN_KEY_BYTES
                        ),
                    ));
                    KeySource::Configured(Secret::new(String::new()))
                }
                Err(message) => {
                    problems.push(problem("server.cashier_key", message));
                    KeySource::Configured(Secret::new(String::new()))
                }
            },
            (None, LedgerBackend::Sqlite(path)) => KeySource::beside(path),
            (None, LedgerBackend::Postgres { .. }) => {
                problems.push(problem(
                    "server.cashier_key",
                    "is required with a PostgreSQL ledger: every instance must derive the \
                     same cashier links",
                ));
                KeySource::Configured(Secret::new(String::new()))
            }
        };
        // Each partner's keys, read once, and its gate, both shared by its sub-merchant
        // accounts. A partner's problem is reported once, at the partner.
        let mut loaded = BTreeMap::new();
        for (partner_id, partner) in &self.partners {
            let Some(kind) = ProviderKind::parse(&partner.provider) else {
                continue;
            };
            let keys = match registry::build_partner(kind, &partner.settings, base_dir) {
                Ok(keys) => keys,
                Err(errors) => {
                    for (key, message) in errors {
                        problems.push(problem(
                            format!("partners.{partner_id}.settings{key}"),
                            message,
                        ));
                    }
                    continue;
                }
            };
            let circuit = partner.circuit.unwrap_or(self.providers.circuit);
            let settings_text = partner_settings_text(partner);
            let gate = Arc::new(PartnerGate {
                id: partner_id.clone(),
                kind,
                limit: partner.rate_limit.as_ref().map(|l| Arc::new(Limit::new(l))),
                circuit: Arc::new(Circuit::new(circuit)),
                authorising: keys.authorising(),
                state_key: partner_state_key(partner, &settings_text, circuit),
            });
            loaded.insert(
                partner_id.clone(),
                LoadedPartner {
                    keys,
                    gate,
                    settings_text,
                },
            );
        }
        let mut merchants = BTreeMap::new();
        for (merchant_id, raw) in &self.merchants {
            let at = format!("merchants.{merchant_id}");
            let mut keys = Vec::new();
            for (index, key) in raw.keys.iter().enumerate() {
                match resolve_secret(&key.secret, base_dir) {
                    Ok(secret) if secret.len() >= 16 => keys.push(MerchantKey {
                        id: key.id.clone(),
                        secret: Secret::new(secret.into_bytes()),
                    }),
                    Ok(_) => problems.push(problem(
                        format!("{at}.keys[{index}].secret"),
                        "must be at least 16 bytes",
                    )),
                    Err(message) => {
                        problems.push(problem(format!("{at}.keys[{index}].secret"), message))
                    }
                }
            }
            let webhook = match &raw.webhook {
                None => None,
                Some(webhook) => {
                    let mut secrets = Vec::new();
                    for (index, secret) in webhook.secrets.iter().enumerate() {
                        match resolve_secret(secret, base_dir) {
                            Ok(value) if value.len() >= 16 => {
                                secrets.push(Secret::new(value.into_bytes()))
                            }
                            Ok(_) => problems.push(problem(
                                format!("{at}.webhook.secrets[{index}]"),
                                "must be at least 16 bytes",
                            )),
                            Err(message) => problems
                                .push(problem(format!("{at}.webhook.secrets[{index}]"), message)),
                        }
                    }
                    Some(Webhook {
                        url: webhook.url.clone(),
                        secrets,
                    })
                }
            };
            let mut accounts = Vec::new();
            for (account_id, account) in &raw.accounts {
                let at = format!("{at}.accounts.{account_id}.settings");
                let Some(kind) = ProviderKind::parse(&account.provider) else {
                    continue;
                };
                let partner = match &account.partner {
                    None => None,
                    Some(id) => match loaded.get(id) {
                        Some(partner) => Some(partner),
                        // An unknown partner (validation names it) or one whose keys did not
                        // load (said once, at the partner).
                        None => continue,
                    },
                };
                let built = match partner {
                    None => registry::build_adapter(kind, &account.settings, base_dir)
                        .map(|adapter| (adapter, None)),
                    Some(partner) => registry::build_sub_merchant_adapter(
                        kind,
                        &partner.keys,
                        &account.settings,
                        base_dir,
                    )
                    .map(|built| (built.adapter, built.authorisation)),
                };
                match built {
                    Ok((adapter, authorisation)) => accounts.push(Account {
                        id: account_id.clone(),
                        kind,
                        adapter,
                        authorisation,
                        limit: account.rate_limit.as_ref().map(|l| Arc::new(Limit::new(l))),
                        circuit: Arc::new(Circuit::new(self.providers.circuit)),
                        partner: partner.map(|p| Arc::clone(&p.gate)),
                        fee_rate_ppm: account.fee_rate.as_deref().and_then(parse_fee_rate),
                        state_key: account_state_key(
                            account,
                            partner.map(|p| p.settings_text.as_str()),
                            self.providers.circuit,
                        ),
                    }),
                    Err(errors) => {
                        for (key, message) in errors {
                            problems.push(problem(format!("{at}{key}"), message));
                        }
                    }
                }
            }
            let account_ids: Vec<&str> = raw.accounts.keys().map(String::as_str).collect();
            let routes = routing::validate(&raw.routes, &account_ids).unwrap_or_default();
            let capabilities = |id: &str| {
                accounts
                    .iter()
                    .find(|a| a.id == id)
                    .map(|a| a.adapter.capabilities())
            };
            for (key, message) in routing::check_capabilities(&routes, capabilities) {
                problems.push(problem(format!("{at}.{key}"), message));
            }
            merchants.insert(
                merchant_id.clone(),
                Arc::new(Merchant {
                    id: merchant_id.clone(),
                    name: raw.name.clone(),
                    keys,
                    webhook,
                    accounts,
                    routes,
                    limit: Arc::new(Limit::new(
                        &raw.rate_limit.unwrap_or(DEFAULT_MERCHANT_LIMIT),
                    )),
                    limit_key: format!("{:?}", raw.rate_limit),
                    reconciliation_limit: Arc::new(Merchant::new_reconciliation_limit()),
                    return_hosts: return_hosts(&raw.return_hosts, &self.server.public_base_url),
                }),
            );
        }
        if !problems.is_empty() {
            return Err(ConfigErrors(problems));
        }
        let listen = self
            .server
            .listen
            .parse()
            .map_err(|_| ConfigErrors(vec![problem("server.listen", "invalid address")]))?;
        Ok(Config {
            listen,
            public_base_url: self.server.public_base_url.trim_end_matches('/').to_owned(),
            tls: self
                .server
                .tls
                .as_ref()
                .map(|t| (base_dir.join(&t.cert_file), base_dir.join(&t.key_file))),
            signature_tolerance_secs: self.server.signature_tolerance_secs,
            header_read_timeout_ms: self.server.header_read_timeout_ms,
            body_read_timeout_ms: self.server.body_read_timeout_ms,
            max_connections: self.server.max_connections,
            trusted_proxies: self
                .server
                .trusted_proxies
                .iter()
                .filter_map(|p| crate::client_ip::IpRange::parse(p))
                .collect(),
            admin_listen: self
                .server
                .admin_listen
                .as_ref()
                .and_then(|a| a.parse().ok()),
            admin_token,
            cashier_key,
            ledger,
            reconciliation: ReconciliationSettings {
                statement_dir: match &self.reconciliation.statement_dir {
                    Some(dir) => base_dir.join(dir),
                    None => base_dir
                        .join(&self.ledger.path)
                        .parent()
                        .map(|p| p.join("statements"))
                        .unwrap_or_else(|| PathBuf::from("statements")),
                },
                drift_secs: self.reconciliation.drift_secs,
                daily_at: self
                    .reconciliation
                    .daily_at
                    .as_deref()
                    .and_then(parse_daily_at),
            },
            shared_limits,
            sandbox_wallets: self
                .cashier
                .sandbox_wallets
                .iter()
                .filter_map(|(wallet, url)| Some((ProviderKind::parse(wallet)?, url.clone())))
                .collect(),
            webhooks: self.webhooks.clone(),
            providers: self.providers.clone(),
            merchants,
            partners: loaded.into_iter().map(|(id, p)| (id, p.gate)).collect(),
            merchant_files: MerchantFiles::default(),
        })
    }
}

/// Reads a secret: an env variable or a file (relative to `base_dir`), trailing newline trimmed.
/// Errors name the source, never the value.
pub fn resolve_secret(reference: &SecretRef, base_dir: &Path) -> Result<String, String> {
    let value = match reference {
        SecretRef::Env(name) => std::env::var(name)
            .map_err(|_| format!("environment variable {name} is not set or not UTF-8"))?,
        SecretRef::File(path) => {
            let full = base_dir.join(path);
            std::fs::read_to_string(&full)
                .map_err(|e| format!("cannot read {}: {}", full.display(), e.kind()))?
        }
    };
    let trimmed = value.trim_end_matches(['\n', '\r']).to_owned();
    if trimmed.is_empty() {
        return Err(format!("{reference:?} is empty"));
    }
    Ok(trimmed)
}

/// Resolves a binary secret (a key store): a file's bytes, or the base64 an environment
/// variable holds.
pub fn resolve_secret_bytes(reference: &SecretRef, base_dir: &Path) -> Result<Vec<u8>, String> {
    use base64::Engine as _;
    let bytes = match reference {
        SecretRef::Env(name) => {
            let text = std::env::var(name)
                .map_err(|_| format!("environment variable {name} is not set or not UTF-8"))?;
            let compact: String = text.chars().filter(|c| !c.is_ascii_whitespace()).collect();
            base64::engine::general_purpose::STANDARD
                .decode(compact.as_bytes())
                .map_err(|_| format!("environment variable {name} is not base64"))?
        }
        SecretRef::File(path) => {
            let full = base_dir.join(path);
            std::fs::read(&full)
                .map_err(|e| format!("cannot read {}: {}", full.display(), e.kind()))?
        }
    };
    if bytes.is_empty() {
        return Err(format!("{reference:?} is empty"));
    }
    Ok(bytes)
}

/// Parses a provider's settings table with its strict struct, keeping the key path of errors.
pub fn parse_settings<T: serde::de::DeserializeOwned>(
    table: &toml::Table,
) -> Result<T, (String, String)> {
    let text = toml::to_string(table).map_err(|e| (String::new(), e.to_string()))?;
    let deserializer =
        toml::Deserializer::parse(&text).map_err(|e| (String::new(), e.message().to_owned()))?;
    serde_path_to_error::deserialize(deserializer).map_err(|e| {
        let path = e.path().to_string();
        let path = if path == "." {
            String::new()
        } else {
            format!(".{path}")
        };
        (path, e.inner().message().to_owned())
    })
}

/// True when a PostgreSQL URL is safe to use: its server is on this machine (a loopback
/// address, `localhost`, or a Unix socket), or the connection verifies the server's certificate
/// and name (`sslmode=verify-full`). Never prints the URL, which may hold a password.
fn verifies_remote_server(text: &str) -> bool {
    let Ok(parsed) = url::Url::parse(text) else {
        // Not a URL the parser reads (the driver will say so at start); nothing to check.
        return true;
    };
    let socket = parsed
        .query_pairs()
        .any(|(key, value)| key == "host" && value.starts_with('/'));
    if parsed.host().is_none() || socket || moongate_contract::http::is_loopback(&parsed) {
        return true;
    }
    parsed
        .query_pairs()
        .any(|(key, value)| key == "sslmode" && value == "verify-full")
}

/// The merchant's return hosts, lower case, plus Moongate's own (the cashier sends redirect
/// wallets back to its page); empty when the merchant lists none.
fn return_hosts(listed: &[String], public_base_url: &str) -> Vec<String> {
    if listed.is_empty() {
        return Vec::new();
    }
    let mut hosts: Vec<String> = listed.iter().map(|h| h.to_ascii_lowercase()).collect();
    if let Some(own) = url::Url::parse(public_base_url)
        .ok()
        .and_then(|u| u.host_str().map(str::to_ascii_lowercase))
    {
        hosts.push(own);
    }
    hosts
}
