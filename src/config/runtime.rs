//! The built configuration the gateway runs on: merchants with their keys, webhooks,
//! routing, limits and accounts (adapters built, secrets read).

use super::*;

/// A validated merchant key.
#[derive(Debug)]
pub struct MerchantKey {
    /// Key id.
    pub id: String,
    /// HMAC secret.
    pub secret: Secret<Vec<u8>>,
}

/// A validated webhook endpoint.
#[derive(Debug)]
pub struct Webhook {
    /// Endpoint.
    pub url: String,
    /// Active secrets.
    pub secrets: Vec<Secret<Vec<u8>>>,
}

/// A provider account with its adapter built.
#[derive(Debug)]
pub struct Account {
    /// Account id within the merchant.
    pub id: String,
    /// Provider.
    pub kind: ProviderKind,
    /// The adapter, keys loaded.
    pub adapter: Arc<dyn PaymentAdapter>,
    /// Outbound limit, when configured (shared with the next config when a reload leaves the
    /// account's settings as they were).
    pub limit: Option<Arc<Limit>>,
    /// Circuit breaker (likewise kept across reloads).
    pub circuit: Arc<Circuit>,
    /// For a sub-merchant: what it shares with its partner's other sub-merchants.
    pub partner: Option<Arc<PartnerGate>>,
    /// For a sub-merchant that authorises its partner's app through Moongate: the slot of the
    /// token its adapter calls with, and the identity the authorisation must name.
    pub authorisation: Option<ManagedAuthorisation>,
    /// Agreed fee rate, parts per million, when configured.
    pub fee_rate_ppm: Option<i64>,
    /// What the limit and circuit were built from (provider, settings, limit, circuit
    /// settings): a reload keeps them when this is unchanged.
    pub state_key: String,
}

/// A sub-merchant account's authorisation of its partner's app, obtained and kept by Moongate
/// (`gateway/authorisations.rs`): the ledger holds the tokens, sealed; the slot the one in use.
#[derive(Clone, Debug)]
pub struct ManagedAuthorisation {
    /// The token the account's adapter calls with (empty until the merchant authorises).
    pub slot: TokenSlot,
    /// The merchant's identity at the provider (Alipay: its `auth_app_id`): an authorisation
    /// naming another is refused.
    pub identity: String,
}

/// The limit and breaker every sub-merchant account of one partner passes on its way to the
/// provider, besides its own: calls under one contract, limited and broken together.
#[derive(Debug)]
pub struct PartnerGate {
    /// Partner id.
    pub id: String,
    /// Provider.
    pub kind: ProviderKind,
    /// Outbound limit of all its sub-merchants together, when configured.
    pub limit: Option<Arc<Limit>>,
    /// Its breaker.
    pub circuit: Arc<Circuit>,
    /// The partner's app merchants authorise (for partners of that kind): consent page and
    /// token calls.
    pub authorising: Option<Arc<dyn Authorising>>,
    /// What the gate was built from (provider, settings, limit, circuit settings): a reload
    /// keeps the gate when this is unchanged.
    pub state_key: String,
}

/// A partner's credentials as its state keys take them (`settings` as TOML text), written
/// once for all its sub-merchants.
pub(super) fn partner_settings_text(partner: &RawPartner) -> String {
    toml::to_string(&partner.settings).unwrap_or_default()
}

/// What a partner's live state (limit, circuit) depends on.
pub(super) fn partner_state_key(
    partner: &RawPartner,
    settings_text: &str,
    circuit: CircuitSettings,
) -> String {
    format!(
        "{}|{settings_text}|{:?}|{circuit:?}",
        partner.provider, partner.rate_limit
    )
}

/// What an account's live state (limit, circuit) depends on: for a sub-merchant, its
/// partner's credentials too ([`partner_settings_text`]).
pub(super) fn account_state_key(
    account: &RawAccount,
    partner_settings: Option<&str>,
    circuit: CircuitSettings,
) -> String {
    format!(
        "{}|{}|{:?}|{circuit:?}|{}",
        account.provider,
        toml::to_string(&account.settings).unwrap_or_default(),
        account.rate_limit,
        partner_settings.unwrap_or_default()
    )
}

impl Config {
    /// Carries live state over from the config in force: every account whose settings are
    /// unchanged keeps its circuit breaker (an open circuit stays open) and outbound limit (its
    /// bucket is not refilled), and every merchant whose limit is unchanged keeps its limiter.
    /// Changed or new ones start fresh.
    pub fn keep_state_from(&mut self, old: &Config) {
        for (id, gate) in &mut self.partners {
            if let Some(was) = old.partners.get(id)
                && was.state_key == gate.state_key
            {
                *gate = Arc::clone(was);
            }
        }
        for (id, merchant) in &mut self.merchants {
            let Some(before) = old.merchants.get(id) else {
                continue;
            };
            // A freshly built config holds the only reference to its merchants.
            let Some(merchant) = Arc::get_mut(merchant) else {
                continue;
            };
            if merchant.limit_key == before.limit_key {
                merchant.limit = Arc::clone(&before.limit);
            }
            merchant.reconciliation_limit = Arc::clone(&before.reconciliation_limit);
            for account in &mut merchant.accounts {
                // The partner's gate in force, whether kept or new.
                if let Some(gate) = &mut account.partner
                    && let Some(current) = self.partners.get(&gate.id)
                {
                    *gate = Arc::clone(current);
                }
                let Some(was) = before.account(&account.id) else {
                    continue;
                };
                if was.state_key == account.state_key {
                    account.circuit = Arc::clone(&was.circuit);
                    account.limit = was.limit.clone();
                }
                // The token in use goes on to the rebuilt adapter of the same authorisation.
                if let (Some(new), Some(old)) = (&account.authorisation, &was.authorisation)
                    && new.identity == old.identity
                    && account.partner.as_ref().map(|g| &g.id)
                        == was.partner.as_ref().map(|g| &g.id)
                {
                    new.slot.replace(old.slot.current());
                }
            }
        }
    }
}

/// A merchant ready to serve.
#[derive(Debug)]
pub struct Merchant {
    /// Merchant id.
    pub id: String,
    /// Display name.
    pub name: String,
    /// Signing keys.
    pub keys: Vec<MerchantKey>,
    /// Webhook endpoint.
    pub webhook: Option<Webhook>,
    /// Accounts in id order.
    pub accounts: Vec<Account>,
    /// Routing rules; empty means "the first account that serves the method".
    pub routes: routing::Routes,
    /// Inbound limit (kept across reloads that leave it unchanged).
    pub limit: Arc<Limit>,
    /// What the inbound limit was built from.
    pub limit_key: String,
    /// Its limit on starting reconciliation runs through the API
    /// ([`Merchant::RECONCILIATIONS_PER_MINUTE`]).
    pub reconciliation_limit: Arc<Limit>,
    /// Hosts the shopper may be sent back to (lower case, Moongate's own included); empty:
    /// any.
    pub return_hosts: Vec<String>,
}

impl Merchant {
    /// Reconciliation runs a merchant may start through the API per minute (a burst of as many):
    /// each loads a day of the ledger and downloads a statement, so far fewer than requests.
    pub const RECONCILIATIONS_PER_MINUTE: u32 = 10;

    /// The limit on starting reconciliation runs.
    pub fn new_reconciliation_limit() -> Limit {
        Limit::every(
            std::time::Duration::from_secs(60 / u64::from(Self::RECONCILIATIONS_PER_MINUTE)),
            Self::RECONCILIATIONS_PER_MINUTE,
        )
    }
}

impl Merchant {
    /// Finds an account.
    pub fn account(&self, id: &str) -> Option<&Account> {
        self.accounts.iter().find(|a| a.id == id)
    }
}

/// The built configuration.
#[derive(Debug)]
pub struct Config {
    /// Parsed listen address.
    pub listen: SocketAddr,
    /// Public base URL, no trailing slash.
    pub public_base_url: String,
    /// TLS files, resolved.
    pub tls: Option<(PathBuf, PathBuf)>,
    /// Signature tolerance.
    pub signature_tolerance_secs: u64,
    /// Admin listener address.
    pub admin_listen: Option<SocketAddr>,
    /// The bearer token admin requests must carry, when configured.
    pub admin_token: Option<Secret<String>>,
    /// Where the cashier key comes from.
    pub cashier_key: crate::cashier::key::KeySource,
    /// Header read timeout.
    pub header_read_timeout_ms: u64,
    /// Body read timeout.
    pub body_read_timeout_ms: u64,
    /// Most client connections at once.
    pub max_connections: usize,
    /// Proxies whose `X-Forwarded-For` is believed.
    pub trusted_proxies: Vec<crate::client_ip::IpRange>,
    /// Where the ledger lives (a SQLite file's folder also keeps statements by default).
    pub ledger: LedgerBackend,
    /// Webhook tuning.
    pub webhooks: WebhookSection,
    /// Provider call tuning.
    pub providers: ProviderSection,
    /// Reconciliation.
    pub reconciliation: ReconciliationSettings,
    /// Shared (Redis) merchant rate limits, when configured.
    pub shared_limits: Option<SharedLimitSettings>,
    /// Sandbox wallet pages linked from the cashier (demo and tests only).
    pub sandbox_wallets: Vec<(ProviderKind, String)>,
    /// Merchants by id.
    pub merchants: BTreeMap<String, Arc<Merchant>>,
    /// Partners' gates by partner id (their sub-merchant accounts hold them too).
    pub partners: BTreeMap<String, Arc<PartnerGate>>,
    /// The files of `merchants_dir` in force, by merchant id (their text): a reload that
    /// refuses one file keeps serving its merchant as this text declared it.
    pub merchant_files: MerchantFiles,
}

/// The texts of merchant files, in one buffer: 10,000 small files are one allocation beside the
/// config, not 10,000 scattered ones.
#[derive(Clone, Debug, Default)]
pub struct MerchantFiles {
    text: String,
    /// Merchant id and where its text lies, in id order.
    spans: Vec<(Box<str>, usize, usize)>,
}

impl MerchantFiles {
    /// Adds a file's text (ids in ascending order keep lookups fast; any order is kept right).
    pub fn push(&mut self, id: &str, text: &str) {
        let start = self.text.len();
        self.text.push_str(text);
        let entry = (Box::from(id), start, self.text.len());
        match self.spans.binary_search_by(|(k, _, _)| (**k).cmp(id)) {
            Ok(at) => {
                if let Some(slot) = self.spans.get_mut(at) {
                    *slot = entry;
                }
            }
            Err(at) => self.spans.insert(at, entry),
        }
    }

    /// A merchant's text.
    pub fn get(&self, id: &str) -> Option<&str> {
        let at = self
            .spans
            .binary_search_by(|(k, _, _)| (**k).cmp(id))
            .ok()?;
        let (_, start, end) = self.spans.get(at)?;
        self.text.get(*start..*end)
    }

    /// Every merchant id and text, in id order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.spans
            .iter()
            .filter_map(|(id, start, end)| Some((&**id, self.text.get(*start..*end)?)))
    }
}
