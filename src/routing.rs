//! Routing rules: which provider account a payment goes to, decided by the merchant's config.
//!
//! Rules are tried in order; the first whose matcher accepts the payment decides. A matcher
//! tests wallet/method, currency, an amount range (minor units of the payment's currency), the
//! sales channel and metadata tags; every field left out matches anything. A rule's target is
//! one account, a weighted split (volume split, drawn from the payment id so a retried request
//! lands where the first one did), or a priority list (tried in order when a provider certainly
//! did not take the order). Targets that cannot serve the payment's method or currency are
//! skipped; the config check refuses rules that could only ever route to such accounts.
//!
//! Pure: no I/O, no clock. The gateway asks [`Routes::choose`] and records the rule's name.

use std::collections::BTreeMap;

use moongate_contract::{Capabilities, Currency, PaymentMethod, ProviderKind};
use serde::Deserialize;

/// Where a payment is being made, as the storefront says (`channel` in the API).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Channel {
    /// A desktop browser.
    Web,
    /// A phone's browser.
    MobileWeb,
    /// Inside an app or mini-program (WeChat, Alipay, the merchant's own).
    InApp,
    /// A till: a cashier scans or shows a code.
    PointOfSale,
}

impl Channel {
    /// Every channel.
    pub const ALL: &'static [Channel] = &[
        Channel::Web,
        Channel::MobileWeb,
        Channel::InApp,
        Channel::PointOfSale,
    ];

    /// Stable name.
    pub fn as_str(&self) -> &'static str {
        match self {
            Channel::Web => "web",
            Channel::MobileWeb => "mobile_web",
            Channel::InApp => "in_app",
            Channel::PointOfSale => "point_of_sale",
        }
    }

    /// Parses a stable name.
    pub fn parse(text: &str) -> Option<Channel> {
        Channel::ALL.iter().copied().find(|c| c.as_str() == text)
    }
}

/// `[[merchants.<id>.routes]]` as written.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRoute {
    /// Unique within the merchant; recorded on every payment it routes.
    pub name: String,
    /// Which payments it takes; an empty table takes all.
    #[serde(default, rename = "match")]
    pub matcher: RawMatcher,
    /// Where they go.
    pub to: RawTarget,
}

/// The `match` table.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawMatcher {
    /// Wallets (`alipay`, `wechatpay`).
    #[serde(default)]
    pub wallets: Vec<String>,
    /// Methods (`wechat_native`, …).
    #[serde(default)]
    pub methods: Vec<String>,
    /// ISO 4217 codes.
    #[serde(default)]
    pub currencies: Vec<String>,
    /// Smallest amount taken, minor units, inclusive.
    #[serde(default)]
    pub min_amount: Option<i64>,
    /// Largest amount taken, minor units, inclusive.
    #[serde(default)]
    pub max_amount: Option<i64>,
    /// Channels (`web`, `mobile_web`, `in_app`, `point_of_sale`).
    #[serde(default)]
    pub channels: Vec<String>,
    /// Metadata entries that must all be present with these values.
    #[serde(default)]
    pub tags: BTreeMap<String, String>,
}

/// The `to` table: exactly one of its keys.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "snake_case")]
pub enum RawTarget {
    /// One account.
    Account(String),
    /// A weighted volume split.
    Split(Vec<RawShare>),
    /// Accounts in order of preference.
    Priority(Vec<String>),
}

/// One share of a split.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawShare {
    /// The account.
    pub account: String,
    /// Its weight (positive).
    pub weight: u32,
}

/// A validated matcher.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Matcher {
    wallets: Vec<ProviderKind>,
    methods: Vec<PaymentMethod>,
    currencies: Vec<Currency>,
    min_amount: Option<i64>,
    max_amount: Option<i64>,
    channels: Vec<Channel>,
    tags: BTreeMap<String, String>,
}

/// A validated target.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// One account.
    Account(String),
    /// `(account, weight)` pairs.
    Split(Vec<(String, u32)>),
    /// In order of preference.
    Priority(Vec<String>),
}

impl Target {
    /// Every account the target names.
    pub fn accounts(&self) -> Vec<&str> {
        match self {
            Target::Account(account) => vec![account.as_str()],
            Target::Split(shares) => shares.iter().map(|(a, _)| a.as_str()).collect(),
            Target::Priority(list) => list.iter().map(String::as_str).collect(),
        }
    }
}

/// A validated rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    /// Its name.
    pub name: String,
    /// What it takes.
    pub matcher: Matcher,
    /// Where it sends it.
    pub target: Target,
}

/// What is being routed.
#[derive(Debug, Clone, Copy)]
pub struct RouteRequest<'a> {
    /// The payment id (seeds the weighted draw).
    pub payment_id: &'a str,
    /// Method.
    pub method: PaymentMethod,
    /// Currency.
    pub currency: Currency,
    /// Minor units.
    pub amount: i64,
    /// Channel, when the storefront said.
    pub channel: Option<Channel>,
    /// Merchant metadata.
    pub metadata: &'a serde_json::Map<String, serde_json::Value>,
}

/// The decision.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Choice {
    /// The rule that decided.
    pub rule: String,
    /// Accounts to try, in order (one, unless the rule is a priority list).
    pub accounts: Vec<String>,
}

impl Matcher {
    /// True when the matcher takes the request.
    pub fn accepts(&self, request: &RouteRequest<'_>) -> bool {
        let any_or = |empty: bool, hit: bool| empty || hit;
        any_or(
            self.wallets.is_empty(),
            self.wallets.contains(&request.method.provider()),
        ) && any_or(
            self.methods.is_empty(),
            self.methods.contains(&request.method),
        ) && any_or(
            self.currencies.is_empty(),
            self.currencies.contains(&request.currency),
        ) && self.min_amount.is_none_or(|min| request.amount >= min)
            && self.max_amount.is_none_or(|max| request.amount <= max)
            && any_or(
                self.channels.is_empty(),
                request.channel.is_some_and(|c| self.channels.contains(&c)),
            )
            && self.tags.iter().all(|(key, value)| {
                request.metadata.get(key).and_then(|v| v.as_str()) == Some(value.as_str())
            })
    }

    /// The methods this matcher can take at all (every method when unrestricted).
    pub fn methods(&self) -> Vec<PaymentMethod> {
        PaymentMethod::ALL
            .iter()
            .copied()
            .filter(|m| self.methods.is_empty() || self.methods.contains(m))
            .filter(|m| self.wallets.is_empty() || self.wallets.contains(&m.provider()))
            .collect()
    }

    /// The currencies it names (empty: any).
    pub fn currencies(&self) -> &[Currency] {
        &self.currencies
    }

    /// True when it names methods or wallets.
    pub fn restricts_methods(&self) -> bool {
        !self.methods.is_empty() || !self.wallets.is_empty()
    }
}

/// A stable draw in `0..total` from a payment id (FNV-1a): the same id always lands on the
/// same share, and random ids spread evenly.
fn draw(payment_id: &str, total: u64) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in payment_id.bytes() {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    hash % total.max(1)
}

/// A merchant's rules, in order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Routes(pub Vec<Route>);

impl Routes {
    /// True when the merchant wrote no rules (Moongate then takes the first account that can
    /// serve the method).
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The first rule that takes the request and has an account able to serve it; `serves`
    /// tells whether an account can serve the method and currency.
    pub fn choose(
        &self,
        request: &RouteRequest<'_>,
        serves: impl Fn(&str) -> bool,
    ) -> Option<Choice> {
        for route in &self.0 {
            if !route.matcher.accepts(request) {
                continue;
            }
            let accounts: Vec<String> = match &route.target {
                Target::Account(account) => vec![account.clone()],
                Target::Priority(list) => list.clone(),
                Target::Split(shares) => {
                    let usable: Vec<&(String, u32)> =
                        shares.iter().filter(|(a, _)| serves(a)).collect();
                    let total: u64 = usable.iter().map(|(_, w)| u64::from(*w)).sum();
                    let mut point = draw(request.payment_id, total);
                    let mut chosen = Vec::new();
                    for (account, weight) in usable {
                        if point < u64::from(*weight) {
                            chosen.push(account.clone());
                            break;
                        }
                        point -= u64::from(*weight);
                    }
                    chosen
                }
            };
            let accounts: Vec<String> = accounts.into_iter().filter(|a| serves(a)).collect();
            if !accounts.is_empty() {
                return Some(Choice {
                    rule: route.name.clone(),
                    accounts,
                });
            }
        }
        None
    }
}

/// Validates a merchant's raw rules against its account ids. Problems come back as
/// `(key path suffix, message)`, the suffix starting at `routes[i]`.
pub fn validate(raw: &[RawRoute], account_ids: &[&str]) -> Result<Routes, Vec<(String, String)>> {
    let mut problems = Vec::new();
    let mut routes = Vec::new();
    let mut names = Vec::new();
    for (index, rule) in raw.iter().enumerate() {
        let at = format!("routes[{index}]");
        let mut bad = |key: &str, message: String| problems.push((format!("{at}{key}"), message));
        if rule.name.is_empty() || names.contains(&rule.name.as_str()) {
            bad(
                ".name",
                "must be a non-empty name unique among the merchant's routes".into(),
            );
        }
        names.push(rule.name.as_str());
        let m = &rule.matcher;
        let mut matcher = Matcher {
            min_amount: m.min_amount,
            max_amount: m.max_amount,
            tags: m.tags.clone(),
            ..Matcher::default()
        };
        for (i, wallet) in m.wallets.iter().enumerate() {
            match ProviderKind::parse(wallet) {
                Some(kind) => matcher.wallets.push(kind),
                None => bad(
                    &format!(".match.wallets[{i}]"),
                    format!("unknown wallet {wallet:?}"),
                ),
            }
        }
        for (i, method) in m.methods.iter().enumerate() {
            match PaymentMethod::parse(method) {
                Some(method) => matcher.methods.push(method),
                None => bad(
                    &format!(".match.methods[{i}]"),
                    format!("unknown method {method:?}"),
                ),
            }
        }
        for (i, code) in m.currencies.iter().enumerate() {
            match Currency::parse(code) {
                Ok(currency) => matcher.currencies.push(currency),
                Err(_) => bad(
                    &format!(".match.currencies[{i}]"),
                    format!("unknown currency {code:?}"),
                ),
            }
        }
        for (i, channel) in m.channels.iter().enumerate() {
            match Channel::parse(channel) {
                Some(channel) => matcher.channels.push(channel),
                None => bad(
                    &format!(".match.channels[{i}]"),
                    format!(
                        "unknown channel {channel:?}; use web, mobile_web, in_app or point_of_sale"
                    ),
                ),
            }
        }
        if m.min_amount.is_some_and(|a| a < 1) || m.max_amount.is_some_and(|a| a < 1) {
            bad(".match", "amounts are positive minor units".into());
        }
        if let (Some(min), Some(max)) = (m.min_amount, m.max_amount)
            && min > max
        {
            bad(".match.max_amount", "must be at least min_amount".into());
        }
        let known = |account: &str| account_ids.contains(&account);
        let target = match &rule.to {
            RawTarget::Account(account) => {
                if !known(account) {
                    bad(
                        ".to.account",
                        format!("no account {account:?} for this merchant"),
                    );
                }
                Target::Account(account.clone())
            }
            RawTarget::Split(shares) => {
                if shares.is_empty() {
                    bad(".to.split", "needs at least one share".into());
                }
                for (i, share) in shares.iter().enumerate() {
                    if !known(&share.account) {
                        bad(
                            &format!(".to.split[{i}].account"),
                            format!("no account {:?} for this merchant", share.account),
                        );
                    }
                    if share.weight == 0 {
                        bad(&format!(".to.split[{i}].weight"), "must be positive".into());
                    }
                }
                Target::Split(
                    shares
                        .iter()
                        .map(|s| (s.account.clone(), s.weight))
                        .collect(),
                )
            }
            RawTarget::Priority(list) => {
                if list.is_empty() {
                    bad(".to.priority", "needs at least one account".into());
                }
                for (i, account) in list.iter().enumerate() {
                    if !known(account) {
                        bad(
                            &format!(".to.priority[{i}]"),
                            format!("no account {account:?} for this merchant"),
                        );
                    }
                }
                Target::Priority(list.clone())
            }
        };
        routes.push(Route {
            name: rule.name.clone(),
            matcher,
            target,
        });
    }
    if problems.is_empty() {
        Ok(Routes(routes))
    } else {
        Err(problems)
    }
}

/// Checks built routes against what the accounts can do: a rule that names methods (or
/// wallets) or currencies must not send them to an account that cannot serve them.
pub fn check_capabilities(
    routes: &Routes,
    capabilities: impl Fn(&str) -> Option<Capabilities>,
) -> Vec<(String, String)> {
    let mut problems = Vec::new();
    for (index, route) in routes.0.iter().enumerate() {
        let target_keys: Vec<(String, &str)> = match &route.target {
            Target::Account(a) => vec![(".to.account".to_owned(), a.as_str())],
            Target::Split(shares) => shares
                .iter()
                .enumerate()
                .map(|(i, (a, _))| (format!(".to.split[{i}].account"), a.as_str()))
                .collect(),
            Target::Priority(list) => list
                .iter()
                .enumerate()
                .map(|(i, a)| (format!(".to.priority[{i}]"), a.as_str()))
                .collect(),
        };
        for (key, account) in target_keys {
            let Some(caps) = capabilities(account) else {
                continue;
            };
            if route.matcher.restricts_methods() {
                for method in route.matcher.methods() {
                    if !caps.supports_method(method) {
                        problems.push((
                            format!("routes[{index}]{key}"),
                            format!("account {account:?} cannot serve {}", method.as_str()),
                        ));
                    }
                }
            }
            for currency in route.matcher.currencies() {
                if !caps.supports_currency(*currency) {
                    problems.push((
                        format!("routes[{index}]{key}"),
                        format!("account {account:?} cannot charge {currency}"),
                    ));
                }
            }
        }
    }
    problems
}

#[cfg(test)]
mod tests {
    use super::*;

    fn routes(toml_text: &str, accounts: &[&str]) -> Routes {
        #[derive(Deserialize)]
        struct File {
            routes: Vec<RawRoute>,
        }
        let file: File = toml::from_str(toml_text).unwrap();
        validate(&file.routes, accounts).unwrap()
    }

    fn request<'a>(
        id: &'a str,
        method: PaymentMethod,
        amount: i64,
        channel: Option<Channel>,
        metadata: &'a serde_json::Map<String, serde_json::Value>,
    ) -> RouteRequest<'a> {
        RouteRequest {
            payment_id: id,
            method,
            currency: Currency::CNY,
            amount,
            channel,
            metadata,
        }
    }

    const TABLE: &str = include_str!("../fixtures/routing/rules.toml");

    #[test]
    fn rules_match_in_order() {
        let routes = routes(TABLE, &["ali_a", "ali_b", "wx"]);
        let all = |_: &str| true;
        let alipay_only = |a: &str| a.starts_with("ali");
        let none = serde_json::Map::new();
        let mut gold = serde_json::Map::new();
        gold.insert("tier".into(), "gold".into());
        type Serves<'s> = &'s dyn Fn(&str) -> bool;
        let table: Vec<(RouteRequest<'_>, Serves<'_>, &str, Vec<&str>)> = vec![
            (
                request("p1", PaymentMethod::WechatNative, 100, None, &gold),
                &all,
                "vip",
                vec!["ali_b", "ali_a"],
            ),
            (
                request("p2", PaymentMethod::AlipayQr, 100_000, None, &none),
                &all,
                "big-alipay",
                vec!["ali_b"],
            ),
            (
                request(
                    "p3",
                    PaymentMethod::AlipayQr,
                    99_999,
                    Some(Channel::PointOfSale),
                    &none,
                ),
                &all,
                "till",
                vec!["wx", "ali_a"],
            ),
            // The till rule's wx account cannot serve an Alipay code: it is skipped.
            (
                request(
                    "p4",
                    PaymentMethod::AlipayPaymentCode,
                    500,
                    Some(Channel::PointOfSale),
                    &none,
                ),
                &alipay_only,
                "till",
                vec!["ali_a"],
            ),
            (
                request(
                    "p5",
                    PaymentMethod::WechatH5,
                    500,
                    Some(Channel::MobileWeb),
                    &none,
                ),
                &all,
                "rest",
                vec!["wx", "ali_a"],
            ),
            (
                request(
                    "p6",
                    PaymentMethod::AlipayWap,
                    500,
                    Some(Channel::MobileWeb),
                    &none,
                ),
                &alipay_only,
                "rest",
                vec!["ali_a"],
            ),
        ];
        for (req, serves, rule, accounts) in table {
            let choice = routes.choose(&req, serves).unwrap();
            assert_eq!(choice.rule, rule, "{}", req.payment_id);
            assert_eq!(choice.accounts, accounts, "{}", req.payment_id);
        }
        assert_eq!(
            routes.choose(
                &request("p7", PaymentMethod::WechatNative, 1, None, &none),
                |_| false
            ),
            None
        );
    }

    #[test]
    fn weighted_split_is_stable_and_within_tolerance() {
        let routes = routes(TABLE, &["ali_a", "ali_b", "wx"]);
        let none = serde_json::Map::new();
        let mut a = 0;
        let n = 20_000;
        for i in 0..n {
            let id = crate::ledger::new_id("pay");
            let req = request(&id, PaymentMethod::AlipayQr, 500 + i, None, &none);
            let choice = routes.choose(&req, |_| true).unwrap();
            assert_eq!(choice.rule, "alipay-split");
            // The same payment id always lands on the same account.
            assert_eq!(routes.choose(&req, |_| true).unwrap(), choice);
            if choice.accounts == ["ali_a"] {
                a += 1;
            }
        }
        let share = a * 1000 / n;
        assert!(
            (680..=720).contains(&share),
            "ali_a got {share}‰, expected ~700‰"
        );
        // A share that cannot serve is left out of the draw, not picked and dropped.
        let req = request("pay_X", PaymentMethod::AlipayQr, 500, None, &none);
        assert_eq!(
            routes.choose(&req, |a| a == "ali_b").unwrap().accounts,
            ["ali_b"]
        );
    }

    #[test]
    fn bad_rules_are_reported_with_their_key_paths() {
        #[derive(Deserialize)]
        struct File {
            routes: Vec<RawRoute>,
        }
        let file: File = toml::from_str(
            r#"
[[routes]]
name = "x"
match = { methods = ["wechat_qr"], channels = ["kiosk"], min_amount = 10, max_amount = 5 }
to = { split = [{ account = "nope", weight = 0 }] }

[[routes]]
name = "x"
to = { priority = [] }
"#,
        )
        .unwrap();
        let problems = validate(&file.routes, &["a"]).unwrap_err();
        let keys: Vec<&str> = problems.iter().map(|(k, _)| k.as_str()).collect();
        for key in [
            "routes[0].match.methods[0]",
            "routes[0].match.channels[0]",
            "routes[0].match.max_amount",
            "routes[0].to.split[0].account",
            "routes[0].to.split[0].weight",
            "routes[1].name",
            "routes[1].to.priority",
        ] {
            assert!(keys.contains(&key), "{key} missing from {keys:?}");
        }
    }
}
