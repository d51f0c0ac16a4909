//! The hosted cashier (收银台): a checkout (`co_…`) a storefront creates through the signed API,
//! and the page a shopper opens from its unguessable, expiring URL to choose a wallet and pay.
//!
//! A checkout holds the order (amount, currency, description, return URL); the shopper's choice
//! of wallet creates a payment through the same validation, routing and provider path as
//! `POST /v1/payments`. Switching wallets first closes the previous payment at its provider,
//! and only one payment is current at a time (a conditional update in the store), so a double
//! click or two tabs never open two orders the shopper could both pay.
//!
//! Pure parts live here and in [`page`] (what to offer in which browser, the state a page
//! shows, its HTML); [`http`] holds the handlers.

pub mod key;
pub mod page;
pub mod raster;

pub use crate::ledger::checkout::Checkout;

use moongate_contract::{PayerField, PaymentMethod, ProviderKind};
use time::OffsetDateTime;

use crate::config::{Account, Merchant};
use crate::ledger::{Payment, PaymentStatus, rfc3339};
use crate::registry;
use crate::routing::{Channel, RouteRequest};

/// How many payments one checkout may open (wallet switches included): a bound on what a
/// shopper (or someone holding the link) can make Moongate ask of the providers.
pub const MAX_PAYMENTS_PER_CHECKOUT: usize = 10;

/// A payment needs at least this much time before the checkout expires.
pub const MIN_PAYMENT_SECS: i64 = 60;

/// Where a checkout stands, from the checkout and its payments.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum State {
    /// No payment yet, or the last one failed or was closed: the shopper may choose.
    Choose {
        /// The payment that failed or was closed, if any.
        previous: Option<Payment>,
    },
    /// A payment waits for the shopper (QR shown, redirect, JSAPI) or for the provider.
    Pending(Payment),
    /// Paid: the shopper goes back to the merchant.
    Paid(Payment),
    /// Past its expiry with nothing paid.
    Expired,
}

impl State {
    /// Decides the state. A payment that succeeded wins over everything, expiry included
    /// (money that moved is never hidden), even if it is not the current one.
    pub fn of(checkout: &Checkout, payments: &[Payment], now: OffsetDateTime) -> State {
        if let Some(paid) = payments
            .iter()
            .find(|p| p.status == PaymentStatus::Succeeded)
        {
            return State::Paid(paid.clone());
        }
        if now >= checkout.expires_at {
            return State::Expired;
        }
        let current = checkout
            .payment_id
            .as_deref()
            .and_then(|id| payments.iter().find(|p| p.id == id));
        match current {
            None => State::Choose { previous: None },
            Some(p) if matches!(p.status, PaymentStatus::Failed | PaymentStatus::Canceled) => {
                State::Choose {
                    previous: Some(p.clone()),
                }
            }
            Some(p) => State::Pending(p.clone()),
        }
    }

    /// The checkout's public status.
    pub fn status(&self) -> &'static str {
        match self {
            State::Choose { .. } | State::Pending(_) => "open",
            State::Paid(_) => "complete",
            State::Expired => "expired",
        }
    }
}

impl Checkout {
    /// The public JSON shape, with its cashier URL (`None`: `url` is null, as in the answer an
    /// idempotency key keeps, which must not hold the link).
    pub fn to_api_json(&self, state: &State, url: Option<&str>) -> serde_json::Value {
        let payment = match state {
            State::Paid(p) | State::Pending(p) => Some(p),
            State::Choose { previous } => previous.as_ref(),
            State::Expired => None,
        };
        serde_json::json!({
            "id": self.id,
            "object": "checkout",
            "url": url,
            "status": state.status(),
            "amount": self.amount,
            "currency": self.currency.code(),
            "merchant_reference": self.merchant_reference,
            "description": self.description,
            "return_url": self.return_url,
            "cancel_url": self.cancel_url,
            "methods": self.methods.iter().map(PaymentMethod::as_str).collect::<Vec<_>>(),
            "metadata": self.metadata,
            "payment": payment.map(|p| p.id.clone()),
            "payment_status": payment.map(|p| p.status.as_str()),
            "expires_at": rfc3339(self.expires_at),
            "created_at": rfc3339(self.created_at),
        })
    }
}

/// Where the shopper's browser runs, told from its `User-Agent`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Browser {
    /// A wallet's own in-app browser (its declared `in_app_marker`): only that wallet works
    /// there (WeChat, for one, blocks other wallets' links).
    InApp(ProviderKind),
    /// A phone's browser: redirect (H5/WAP) methods open the wallet app.
    Mobile,
    /// A desktop browser: QR codes the shopper scans with a phone.
    Desktop,
}

impl Browser {
    /// Detects the browser.
    pub fn detect(user_agent: &str) -> Browser {
        let in_app = registry::all_facts().find(|p| {
            p.wallet
                .in_app_marker
                .is_some_and(|marker| user_agent.contains(marker))
        });
        if let Some(wallet) = in_app {
            Browser::InApp(wallet.kind)
        } else if ["Mobile", "Android", "iPhone", "iPad", "HarmonyOS"]
            .iter()
            .any(|m| user_agent.contains(m))
        {
            Browser::Mobile
        } else {
            Browser::Desktop
        }
    }

    /// The routing channel payments made from this browser carry.
    pub fn channel(self) -> Channel {
        match self {
            Browser::InApp(_) => Channel::InApp,
            Browser::Mobile => Channel::MobileWeb,
            Browser::Desktop => Channel::Web,
        }
    }

    /// Methods to try for a wallet in this browser, best first (as the wallet declares them);
    /// empty when the wallet cannot work here. A method needing the payer's openid is passed
    /// over without one; with one, the methods that use it are offered alone (the merchant who
    /// knows the payer wants the in-wallet payment sheet).
    fn preference(self, wallet: ProviderKind, has_openid: bool) -> Vec<PaymentMethod> {
        let fit = registry::facts(wallet).wallet.cashier;
        let listed = match self {
            Browser::InApp(app) if app == wallet => fit.in_app,
            Browser::InApp(_) => &[],
            Browser::Mobile => fit.mobile,
            Browser::Desktop => fit.desktop,
        };
        let uses_openid = |m: &PaymentMethod| {
            registry::method_facts(*m).is_some_and(|f| f.needs(PayerField::Openid))
        };
        let with_openid: Vec<PaymentMethod> = listed.iter().copied().filter(uses_openid).collect();
        if has_openid && !with_openid.is_empty() {
            with_openid
        } else {
            listed.iter().copied().filter(|m| !uses_openid(m)).collect()
        }
    }
}

/// One wallet button: the wallet and the method its button creates.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Offer {
    /// The wallet.
    pub wallet: ProviderKind,
    /// The method used in this browser.
    pub method: PaymentMethod,
}

/// What the page offers: the wallets that work in this browser, and those that the merchant
/// serves but this in-app browser cannot open (the page says to open the link elsewhere).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Offers {
    /// Wallet buttons.
    pub offers: Vec<Offer>,
    /// Served wallets this browser cannot use.
    pub elsewhere: Vec<ProviderKind>,
}

/// True when the merchant's accounts and routing rules would take a payment of this checkout
/// with `method` (the same test `POST /v1/payments` applies).
pub fn serves(
    merchant: &Merchant,
    checkout: &Checkout,
    method: PaymentMethod,
    channel: Channel,
) -> bool {
    serving_account(merchant, checkout, method, channel).is_some()
}

/// The wallets whose cashier methods the merchant's accounts and routing rules would take a
/// payment of this checkout with, in some browser (empty: nothing can pay it).
pub fn served_wallets(merchant: &Merchant, checkout: &Checkout) -> Vec<ProviderKind> {
    let mut wallets: Vec<ProviderKind> = Vec::new();
    for method in cashier_methods() {
        let wallet = method.provider();
        if !wallets.contains(&wallet)
            && Channel::ALL
                .iter()
                .any(|&channel| serves(merchant, checkout, method, channel))
        {
            wallets.push(wallet);
        }
    }
    wallets
}

/// The account the merchant's routing would send a payment of this checkout with `method` to
/// first.
pub fn serving_account<'m>(
    merchant: &'m Merchant,
    checkout: &Checkout,
    method: PaymentMethod,
    channel: Channel,
) -> Option<&'m Account> {
    if !checkout.methods.is_empty() && !checkout.methods.contains(&method) {
        return None;
    }
    let able = |account_id: &str| {
        merchant.account(account_id).is_some_and(|a| {
            let c = a.adapter.capabilities();
            c.supports_method(method) && c.supports_currency(checkout.currency)
        })
    };
    if merchant.routes.is_empty() {
        return merchant.accounts.iter().find(|a| able(&a.id));
    }
    let request = RouteRequest {
        payment_id: &checkout.id,
        method,
        currency: checkout.currency,
        amount: checkout.amount,
        channel: Some(channel),
        metadata: &checkout.metadata,
    };
    let choice = merchant.routes.choose(&request, able)?;
    choice
        .accounts
        .iter()
        .find_map(|id| merchant.account(id).filter(|a| able(&a.id)))
}

/// Inside a wallet's own app, for a checkout that does not know the payer: the in-app method
/// that needs the payer's id and the account that would take it, when that account can learn
/// the id (its payer identity: WeChat's `snsapi_base`). The cashier then asks the wallet who
/// the payer is before it shows its page.
pub fn identity_account<'m>(
    merchant: &'m Merchant,
    checkout: &Checkout,
    browser: Browser,
) -> Option<(PaymentMethod, &'m Account)> {
    let Browser::InApp(wallet) = browser else {
        return None;
    };
    if checkout.openid.is_some() {
        return None;
    }
    registry::facts(wallet)
        .wallet
        .cashier
        .in_app
        .iter()
        .copied()
        .filter(|m| registry::method_facts(*m).is_some_and(|f| f.needs(PayerField::Openid)))
        .find_map(|m| {
            serving_account(merchant, checkout, m, Channel::InApp)
                .filter(|a| a.adapter.payer_identity().is_some())
                .map(|a| (m, a))
        })
}

/// The wallets to offer in `browser`.
pub fn offers(merchant: &Merchant, checkout: &Checkout, browser: Browser) -> Offers {
    let channel = browser.channel();
    let mut out = Offers::default();
    for wallet in registry::all_facts().map(|p| p.kind) {
        let here = browser
            .preference(wallet, checkout.openid.is_some())
            .into_iter()
            .find(|&m| serves(merchant, checkout, m, channel));
        match here {
            Some(method) => out.offers.push(Offer { wallet, method }),
            None => {
                let anywhere = PaymentMethod::ALL.iter().any(|&m| {
                    m.provider() == wallet
                        && !registry::is_payment_code(m)
                        && serves(merchant, checkout, m, Channel::Web)
                });
                if anywhere {
                    out.elsewhere.push(wallet);
                }
            }
        }
    }
    out
}

/// Every method a checkout may list: the ones a shopper's browser can start.
pub fn cashier_methods() -> impl Iterator<Item = PaymentMethod> {
    PaymentMethod::ALL
        .iter()
        .copied()
        .filter(|&m| !registry::is_payment_code(m))
}

#[cfg(test)]
mod tests {
    use moongate_contract::Currency;

    use super::*;

    fn checkout(now: OffsetDateTime, current: Option<&str>) -> Checkout {
        Checkout {
            id: "co_1".to_owned(),
            token_hash: "t".to_owned(),
            merchant_id: "m".to_owned(),
            amount: 100,
            currency: Currency::CNY,
            merchant_reference: "r".to_owned(),
            description: "d".to_owned(),
            return_url: "https://shop.example/".to_owned(),
            cancel_url: None,
            methods: Vec::new(),
            openid: None,
            metadata: serde_json::Map::new(),
            expires_at: now + time::Duration::minutes(30),
            created_at: now,
            payment_id: current.map(str::to_owned),
            legacy_token: None,
        }
    }

    fn payment(id: &str, status: PaymentStatus, now: OffsetDateTime) -> Payment {
        Payment {
            id: id.to_owned(),
            merchant_id: "m".to_owned(),
            account_id: "a".to_owned(),
            provider: ProviderKind::Alipay,
            method: PaymentMethod::AlipayQr,
            amount: 100,
            currency: Currency::CNY,
            merchant_reference: "r".to_owned(),
            description: "d".to_owned(),
            return_url: None,
            metadata: serde_json::Map::new(),
            provider_order_id: id.to_owned(),
            provider_ref: None,
            status,
            next_action: None,
            failure: None,
            amount_refunded: 0,
            expires_at: now,
            created_at: now,
            updated_at: now,
            payer: moongate_contract::Payer::default(),
            route: None,
            channel: None,
        }
    }

    #[test]
    fn money_that_moved_decides_the_state() {
        let now = OffsetDateTime::UNIX_EPOCH + time::Duration::days(20_000);
        let later = now + time::Duration::hours(1);
        let open = checkout(now, Some("pay_2"));
        let old_paid = payment("pay_1", PaymentStatus::Succeeded, now);
        let current = payment("pay_2", PaymentStatus::RequiresAction, now);
        // An earlier payment that was paid after all wins over the current one, and over expiry.
        let both = [old_paid.clone(), current.clone()];
        assert_eq!(State::of(&open, &both, now), State::Paid(old_paid.clone()));
        assert_eq!(State::of(&open, &both, later), State::Paid(old_paid));
        assert_eq!(
            State::of(&open, std::slice::from_ref(&current), now),
            State::Pending(current.clone())
        );
        assert_eq!(State::of(&open, &[current], later), State::Expired);
        let failed = payment("pay_2", PaymentStatus::Failed, now);
        assert_eq!(
            State::of(&open, std::slice::from_ref(&failed), now),
            State::Choose {
                previous: Some(failed)
            }
        );
        assert_eq!(
            State::of(&checkout(now, None), &[], now),
            State::Choose { previous: None }
        );
        assert_eq!(State::Expired.status(), "expired");
    }

    #[test]
    fn browsers_are_told_apart() {
        let wechat = "Mozilla/5.0 (iPhone; CPU iPhone OS 17_0 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Mobile/15E148 MicroMessenger/8.0.47(0x18002f2c) NetType/WIFI Language/zh_CN";
        let alipay = "Mozilla/5.0 (Linux; U; Android 13; zh-CN; V2227A Build/TP1A.220624.014) AppleWebKit/537.36 (KHTML, like Gecko) Version/4.0 Chrome/69.0.3497.100 UWS/3.22.2.59 Mobile Safari/537.36 AlipayChannelId/5136 NebulaSDK/1.8.100112 Nebula AlipayDefined(nt:WIFI,ws:393|0|2.75) AliApp(AP/10.5.86.8000) AlipayClient/10.5.86.8000 Language/zh-Hans";
        let phone = "Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/126.0 Mobile Safari/537.36";
        let desktop = "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/156.0 Safari/537.36";
        assert_eq!(
            Browser::detect(wechat),
            Browser::InApp(ProviderKind::WechatPay)
        );
        assert_eq!(
            Browser::detect(alipay),
            Browser::InApp(ProviderKind::Alipay)
        );
        assert_eq!(Browser::detect(phone), Browser::Mobile);
        assert_eq!(Browser::detect(desktop), Browser::Desktop);
        assert_eq!(Browser::detect(""), Browser::Desktop);
    }

    #[test]
    fn in_app_browsers_only_offer_their_own_wallet() {
        use PaymentMethod::*;
        assert_eq!(
            Browser::InApp(ProviderKind::WechatPay).preference(ProviderKind::WechatPay, true),
            &[WechatJsapi]
        );
        assert_eq!(
            Browser::InApp(ProviderKind::WechatPay).preference(ProviderKind::WechatPay, false),
            &[WechatNative]
        );
        assert!(
            Browser::InApp(ProviderKind::WechatPay)
                .preference(ProviderKind::Alipay, true)
                .is_empty()
        );
        assert!(
            Browser::InApp(ProviderKind::Alipay)
                .preference(ProviderKind::WechatPay, true)
                .is_empty()
        );
        assert_eq!(
            Browser::Desktop.preference(ProviderKind::Alipay, false)[0],
            AlipayQr
        );
        assert_eq!(
            Browser::Mobile.preference(ProviderKind::WechatPay, false)[0],
            WechatH5
        );
    }
}
