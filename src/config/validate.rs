//! Pure validation of a parsed file: every problem, with its key path, in one pass.

use super::*;

pub(super) fn is_identifier(value: &str) -> bool {
    !value.is_empty()
        && value.len() <= 64
        && value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

pub(super) fn check_url(url: &str) -> Result<(), String> {
    moongate_contract::http::check_base_url(url)
}

impl RawConfig {
    /// Checks an account under a partner: the partner exists and is of the account's provider,
    /// the provider has a partner mode, the identity is well formed and no other account holds
    /// it under the same partner.
    fn validate_sub_merchant(
        &self,
        kind: ProviderKind,
        (merchant_id, account_id, account, partner_id): (&str, &str, &RawAccount, &str),
        sub_merchants: &mut HashMap<(String, String), String>,
        problems: &mut Vec<ConfigProblem>,
    ) {
        let at = format!("merchants.{merchant_id}.accounts.{account_id}");
        let Some(partner) = self.partners.get(partner_id) else {
            let declared: Vec<&str> = self.partners.keys().map(String::as_str).collect();
            problems.push(problem(
                format!("{at}.partner"),
                format!(
                    "unknown partner {partner_id:?}; declared: [{}]",
                    declared.join(", ")
                ),
            ));
            return;
        };
        if ProviderKind::parse(&partner.provider) != Some(kind) {
            problems.push(problem(
                format!("{at}.partner"),
                format!(
                    "partner {partner_id:?} is a {} partner, this is a {kind} account",
                    partner.provider
                ),
            ));
            return;
        }
        let check = match registry::validate_sub_merchant(kind, &account.settings) {
            Err(message) => {
                problems.push(problem(format!("{at}.partner"), message));
                return;
            }
            Ok(check) => check,
        };
        for (key, message) in check.problems {
            problems.push(problem(format!("{at}.settings{key}"), message));
        }
        if let Some((key, identity)) = check.identity {
            let holder = sub_merchants
                .entry((partner_id.to_owned(), identity.clone()))
                .or_insert_with(|| at.clone());
            if *holder != at {
                problems.push(problem(
                    format!("{at}.settings.{key}"),
                    format!(
                        "sub-merchant {identity} of partner {partner_id:?} is already {holder}"
                    ),
                ));
            }
        }
    }

    /// Pure validation: every problem, with its key path.
    pub fn validate(&self) -> Result<(), ConfigErrors> {
        let mut problems = Vec::new();
        // (partner, identity) → the account that holds it, as `merchants.m.accounts.a`.
        let mut sub_merchants: HashMap<(String, String), String> = HashMap::new();
        for (partner_id, partner) in &self.partners {
            let at = format!("partners.{partner_id}");
            if !is_identifier(partner_id) {
                problems.push(problem(&at, "partner ids are identifiers"));
            }
            match ProviderKind::parse(&partner.provider) {
                None => problems.push(problem(
                    format!("{at}.provider"),
                    format!("unknown provider {:?}", partner.provider),
                )),
                Some(kind) => {
                    for (key, message) in registry::validate_settings(kind, &partner.settings) {
                        problems.push(problem(format!("{at}.settings{key}"), message));
                    }
                    if partner.settings.contains_key("seller_id") {
                        problems.push(problem(
                            format!("{at}.settings.seller_id"),
                            "a partner sells nothing itself: set seller_id on each sub-merchant",
                        ));
                    }
                }
            }
            if let Some(limit) = &partner.rate_limit {
                for (key, message) in limit.validate() {
                    problems.push(problem(format!("{at}.rate_limit.{key}"), message));
                }
            }
            if let Some(circuit) = &partner.circuit {
                for (key, message) in circuit.validate() {
                    problems.push(problem(format!("{at}.circuit.{key}"), message));
                }
            }
        }
        if self.server.listen.parse::<SocketAddr>().is_err() {
            problems.push(problem(
                "server.listen",
                "must be an address like 127.0.0.1:8080",
            ));
        }
        // Cashier URLs (whose token is the shopper's only credential) and notification URLs
        // are built from it: https, or plain http only on this machine.
        if let Err(message) = check_url(&self.server.public_base_url) {
            problems.push(problem("server.public_base_url", message));
        }
        match self
            .server
            .admin_listen
            .as_ref()
            .map(|a| a.parse::<SocketAddr>())
        {
            Some(Err(_)) => problems.push(problem(
                "server.admin_listen",
                "must be an address like 127.0.0.1:9090",
            )),
            Some(Ok(addr)) if !addr.ip().is_loopback() && !self.server.admin_allow_remote => {
                problems.push(problem(
                    "server.admin_listen",
                    "is reachable from other machines, and the admin endpoints have no \
                     authentication: use a loopback address, or set \
                     server.admin_allow_remote = true behind your own network controls",
                ))
            }
            _ => {}
        }
        if self.server.admin_allow_remote && self.server.admin_token.is_none() {
            problems.push(problem(
                "server.admin_token",
                "an admin listener other machines can reach needs an admin_token",
            ));
        }
        if self
            .reconciliation
            .daily_at
            .as_deref()
            .is_some_and(|t| parse_daily_at(t).is_none())
        {
            problems.push(problem(
                "reconciliation.daily_at",
                "must be a Beijing time like \"10:30\"",
            ));
        }
        if self
            .ledger
            .max_connections
            .is_some_and(|n| n == 0 || n > 1_000)
        {
            problems.push(problem(
                "ledger.max_connections",
                "must be between 1 and 1000",
            ));
        }
        if self
            .rate_limits
            .redis_timeout_ms
            .is_some_and(|ms| ms == 0 || ms > 5_000)
        {
            problems.push(problem(
                "rate_limits.redis_timeout_ms",
                "must be between 1 and 5000",
            ));
        }
        if self
            .rate_limits
            .redis_key_prefix
            .as_deref()
            .is_some_and(|p| !is_identifier(p))
        {
            problems.push(problem(
                "rate_limits.redis_key_prefix",
                "must be 1-64 of [A-Za-z0-9_-]",
            ));
        }
        for (wallet, url) in &self.cashier.sandbox_wallets {
            let path = format!("cashier.sandbox_wallets.{wallet}");
            if ProviderKind::parse(wallet).is_none() {
                problems.push(problem(
                    &path,
                    format!(
                        "must be a provider kind ({})",
                        ProviderKind::ALL
                            .iter()
                            .map(|k| k.as_str())
                            .collect::<Vec<_>>()
                            .join(", ")
                    ),
                ));
            } else if !(url.starts_with("http://") || url.starts_with("https://")) {
                problems.push(problem(&path, "must be an http(s) URL"));
            }
        }
        if self.reconciliation.drift_secs > 86_400 {
            problems.push(problem(
                "reconciliation.drift_secs",
                "must be at most 86400 (one statement day)",
            ));
        }
        if self.server.header_read_timeout_ms == 0 {
            problems.push(problem("server.header_read_timeout_ms", "must be positive"));
        }
        if self.server.body_read_timeout_ms == 0 {
            problems.push(problem("server.body_read_timeout_ms", "must be positive"));
        }
        if self.server.max_connections == 0 {
            problems.push(problem("server.max_connections", "must be positive"));
        }
        for (i, proxy) in self.server.trusted_proxies.iter().enumerate() {
            if crate::client_ip::IpRange::parse(proxy).is_none() {
                problems.push(problem(
                    format!("server.trusted_proxies[{i}]"),
                    "must be an IP address or a range like 10.0.0.0/8",
                ));
            }
        }
        if self.server.signature_tolerance_secs == 0 || self.server.signature_tolerance_secs > 900 {
            problems.push(problem(
                "server.signature_tolerance_secs",
                "must be 1 to 900 seconds",
            ));
        }
        let w = &self.webhooks;
        if w.initial_backoff_ms == 0 || w.max_backoff_ms < w.initial_backoff_ms {
            problems.push(problem(
                "webhooks.max_backoff_ms",
                "must be at least initial_backoff_ms, which must be positive",
            ));
        }
        if w.max_attempts == 0 {
            problems.push(problem("webhooks.max_attempts", "must be at least 1"));
        }
        if self.providers.call_timeout_ms == 0 || self.providers.connect_timeout_ms == 0 {
            problems.push(problem("providers", "timeouts must be positive"));
        }
        for (key, message) in self.providers.circuit.validate() {
            problems.push(problem(format!("providers.circuit.{key}"), message));
        }
        if self.providers.payment_code_poll_ms == 0 {
            problems.push(problem(
                "providers.payment_code_poll_ms",
                "must be positive",
            ));
        }
        if self.merchants.is_empty() {
            problems.push(problem("merchants", "at least one merchant is required"));
        }
        let mut key_ids = BTreeMap::new();
        for (merchant_id, merchant) in &self.merchants {
            let at = format!("merchants.{merchant_id}");
            if !is_identifier(merchant_id) {
                problems.push(problem(
                    &at,
                    "merchant ids are 1-64 letters, digits, '-' or '_'",
                ));
            }
            if merchant.keys.is_empty() {
                problems.push(problem(
                    format!("{at}.keys"),
                    "at least one signing key is required",
                ));
            }
            for (index, key) in merchant.keys.iter().enumerate() {
                if !is_identifier(&key.id) {
                    problems.push(problem(
                        format!("{at}.keys[{index}].id"),
                        "must be an identifier",
                    ));
                } else if let Some(other) = key_ids.insert(key.id.clone(), merchant_id.clone()) {
                    problems.push(problem(
                        format!("{at}.keys[{index}].id"),
                        format!("key id {:?} is already used by merchant {other:?}", key.id),
                    ));
                }
            }
            if let Some(webhook) = &merchant.webhook {
                if let Err(message) = check_url(&webhook.url) {
                    problems.push(problem(format!("{at}.webhook.url"), message));
                }
                if webhook.secrets.is_empty() {
                    problems.push(problem(
                        format!("{at}.webhook.secrets"),
                        "at least one secret",
                    ));
                }
            }
            if merchant.accounts.is_empty() {
                problems.push(problem(
                    format!("{at}.accounts"),
                    "at least one account is required",
                ));
            }
            for (index, host) in merchant.return_hosts.iter().enumerate() {
                let plain = !host.is_empty()
                    && host.len() <= 253
                    && host
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'-')
                    && !host.starts_with(['.', '-']);
                if !plain {
                    problems.push(problem(
                        format!("{at}.return_hosts[{index}]"),
                        "must be a host name like shop.example (no scheme, port or path)",
                    ));
                }
            }
            for (account_id, account) in &merchant.accounts {
                let at = format!("{at}.accounts.{account_id}");
                if !is_identifier(account_id) {
                    problems.push(problem(&at, "account ids are identifiers"));
                }
                match ProviderKind::parse(&account.provider) {
                    None => problems.push(problem(
                        format!("{at}.provider"),
                        format!(
                            "unknown provider {:?}; known: {}",
                            account.provider,
                            ProviderKind::ALL
                                .iter()
                                .map(|k| k.as_str())
                                .collect::<Vec<_>>()
                                .join(", ")
                        ),
                    )),
                    Some(kind) => match &account.partner {
                        None => {
                            for (key, message) in
                                registry::validate_settings(kind, &account.settings)
                            {
                                problems.push(problem(format!("{at}.settings{key}"), message));
                            }
                        }
                        Some(partner_id) => self.validate_sub_merchant(
                            kind,
                            (merchant_id, account_id, account, partner_id),
                            &mut sub_merchants,
                            &mut problems,
                        ),
                    },
                }
            }
            if let Some(limit) = &merchant.rate_limit {
                for (key, message) in limit.validate() {
                    problems.push(problem(format!("{at}.rate_limit.{key}"), message));
                }
            }
            for (account_id, account) in &merchant.accounts {
                if account
                    .fee_rate
                    .as_deref()
                    .is_some_and(|rate| parse_fee_rate(rate).is_none())
                {
                    problems.push(problem(
                        format!("{at}.accounts.{account_id}.fee_rate"),
                        "must be a percentage like \"0.6%\" (at most four decimals, at most 100%)",
                    ));
                }
                if let Some(limit) = &account.rate_limit {
                    for (key, message) in limit.validate() {
                        problems.push(problem(
                            format!("{at}.accounts.{account_id}.rate_limit.{key}"),
                            message,
                        ));
                    }
                }
            }
            let account_ids: Vec<&str> = merchant.accounts.keys().map(String::as_str).collect();
            if let Err(route_problems) = routing::validate(&merchant.routes, &account_ids) {
                for (key, message) in route_problems {
                    problems.push(problem(format!("{at}.{key}"), message));
                }
            }
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(ConfigErrors(problems))
        }
    }
}
