//! Checkouts: validating a storefront's checkout, and turning a shopper's choice of wallet
//! into a payment through the same validation, routing and provider path as `POST
//! /v1/payments` (one current payment per checkout; the previous one closed first).

use std::sync::Arc;

use axum::http::StatusCode;
use moongate_contract::{AdapterError, NextAction, PayerField, PaymentMethod};
use serde::Deserialize;
use time::OffsetDateTime;

use crate::cashier::{
    Browser, Checkout, MAX_PAYMENTS_PER_CHECKOUT, MIN_PAYMENT_SECS, State as Stage,
};
use crate::config::Merchant;
use crate::error::{ApiError, ErrorCode};
use crate::gateway::Gateway;
use crate::ledger::{Payment, PaymentStatus, new_id};
use crate::service::idempotency::{Answer, to_bytes};
use crate::service::payments::{
    CreatePaymentBody, PayerBody, check_metadata, check_money, check_openid, check_order_text,
    check_return_host, check_url, validate_create,
};

const DEFAULT_EXPIRY_SECS: i64 = 30 * 60;

const MAX_EXPIRY_SECS: i64 = 24 * 3600;

const MIN_EXPIRY_SECS: i64 = 2 * MIN_PAYMENT_SECS;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct CreateCheckoutBody {
    amount: i64,
    currency: String,
    merchant_reference: String,
    description: String,
    return_url: String,
    #[serde(default)]
    cancel_url: Option<String>,
    #[serde(default)]
    expires_in_seconds: Option<i64>,
    #[serde(default)]
    methods: Option<Vec<String>>,
    #[serde(default)]
    metadata: Option<serde_json::Map<String, serde_json::Value>>,
    #[serde(default)]
    payer: Option<CheckoutPayer>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct CheckoutPayer {
    #[serde(default)]
    openid: Option<String>,
}

/// A 256-bit random token, base64url without padding (43 characters).
pub(crate) fn new_token() -> Result<String, ApiError> {
    use base64::Engine;
    use ring::rand::SecureRandom;
    let mut bytes = [0_u8; 32];
    ring::rand::SystemRandom::new()
        .fill(&mut bytes)
        .map_err(|_| ApiError::internal(&"no randomness"))?;
    Ok(base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes))
}

pub(crate) fn validate_checkout(
    gw: &Gateway,
    merchant: &Merchant,
    body: CreateCheckoutBody,
    now: OffsetDateTime,
) -> Result<Checkout, ApiError> {
    let currency = check_money(&body.currency, body.amount)?;
    check_order_text(&body.merchant_reference, &body.description)?;
    check_url("return_url", &body.return_url)?;
    check_return_host(merchant, "return_url", &body.return_url)?;
    if let Some(url) = &body.cancel_url {
        check_url("cancel_url", url)?;
        check_return_host(merchant, "cancel_url", url)?;
    }
    let expires_in = body.expires_in_seconds.unwrap_or(DEFAULT_EXPIRY_SECS);
    if !(MIN_EXPIRY_SECS..=MAX_EXPIRY_SECS).contains(&expires_in) {
        return Err(ApiError::invalid(
            ErrorCode::ParameterInvalid,
            "expires_in_seconds",
            format!("must be between {MIN_EXPIRY_SECS} seconds and 24 hours"),
        ));
    }
    let mut methods = Vec::new();
    for name in body.methods.unwrap_or_default() {
        let method = PaymentMethod::parse(&name)
            .filter(|m| crate::cashier::cashier_methods().any(|c| c == *m))
            .ok_or_else(|| {
                ApiError::invalid(
                    ErrorCode::ParameterInvalid,
                    "methods",
                    format!(
                        "unknown method {name:?}; a cashier offers {}",
                        crate::cashier::cashier_methods()
                            .map(|m| m.as_str())
                            .collect::<Vec<_>>()
                            .join(", ")
                    ),
                )
            })?;
        if !methods.contains(&method) {
            methods.push(method);
        }
    }
    let metadata = body.metadata.unwrap_or_default();
    // One entry is kept for `checkout_id` on the payments.
    check_metadata(&metadata, 19)?;
    if metadata.contains_key("checkout_id") {
        return Err(ApiError::invalid(
            ErrorCode::ParameterInvalid,
            "metadata.checkout_id",
            "checkout_id is set by Moongate on the checkout's payments",
        ));
    }
    let openid = body.payer.and_then(|p| p.openid);
    let id = new_id("co");
    let checkout = Checkout {
        token_hash: gw.cashier_token_hash(&id),
        id,
        merchant_id: merchant.id.clone(),
        amount: body.amount,
        currency,
        merchant_reference: body.merchant_reference,
        description: body.description,
        return_url: body.return_url,
        cancel_url: body.cancel_url,
        methods,
        openid: openid.clone(),
        metadata,
        expires_at: now + time::Duration::seconds(expires_in),
        created_at: now,
        payment_id: None,
        legacy_token: None,
    };
    if let Some(openid) = &openid {
        // The same rule as a payment's payer.
        check_openid(openid)?;
    }
    if crate::cashier::served_wallets(merchant, &checkout).is_empty() {
        return Err(ApiError::invalid(
            ErrorCode::MethodUnsupported,
            "methods",
            "no account or routing rule of this merchant can take this checkout",
        ));
    }
    Ok(checkout)
}

/// Once one payment of a checkout is paid, closes any other that is still open (a shopper who
/// paid an abandoned Alipay QR code, which Alipay cannot close before it is scanned, must not
/// also be able to pay the wallet they switched to). In the background: the page does not wait.
pub(crate) fn close_leftovers(gw: &Arc<Gateway>, state: &Stage, payments: &[Payment]) {
    let Stage::Paid(paid) = state else {
        return;
    };
    for open in payments.iter().filter(|p| {
        p.id != paid.id
            && matches!(
                p.status,
                PaymentStatus::Pending | PaymentStatus::RequiresAction | PaymentStatus::Unknown
            )
    }) {
        let (gw, open) = (Arc::clone(gw), open.clone());
        tokio::spawn(async move {
            let id = open.id.clone();
            if let Err(error) = gw.cancel(open).await {
                tracing::warn!(payment = %id, %error, "closing a paid checkout's other payment failed");
            }
        });
    }
}

/// Creates (or keeps) the payment for the shopper's choice. `Ok(Some(url))`: send the
/// browser to the wallet; `Ok(None)`: show the page; `Err`: show the page with a notice.
pub(crate) async fn choose(
    gw: &Gateway,
    merchant: &Merchant,
    checkout: &Checkout,
    browser: Browser,
    method: &str,
    client_ip: Option<String>,
) -> Result<Result<Option<String>, Notice>, ApiError> {
    let now = gw.now();
    let payments = gw.store.checkout_payments(&checkout.id).await?;
    let current = match Stage::of(checkout, &payments, now) {
        Stage::Paid(_) | Stage::Expired => return Ok(Ok(None)),
        Stage::Pending(p) => Some(p),
        Stage::Choose { previous } => previous,
    };
    let offers = crate::cashier::offers(merchant, checkout, browser);
    let Some(offer) = offers.offers.iter().find(|o| o.method.as_str() == method) else {
        return Ok(Err(Notice::NotHere));
    };
    if let Some(current) = &current {
        let open = !matches!(
            current.status,
            PaymentStatus::Failed | PaymentStatus::Canceled
        );
        if open && current.method == offer.method {
            // A double click or a reload: the same choice again.
            return Ok(Ok(redirect_of(current)));
        }
        if open {
            // Another wallet: close this one first, so the shopper can never pay both.
            match gw.cancel(current.clone()).await? {
                Some(p) if p.status == PaymentStatus::Canceled => {}
                Some(p) if p.status == PaymentStatus::Succeeded => return Ok(Ok(None)),
                _ => return Ok(Err(Notice::Busy)),
            }
        }
    }
    if payments.len() >= MAX_PAYMENTS_PER_CHECKOUT {
        return Ok(Err(Notice::TooMany));
    }
    let left = (checkout.expires_at - now).whole_seconds();
    if left < MIN_PAYMENT_SECS {
        return Ok(Err(Notice::TooLate));
    }
    let mut metadata = checkout.metadata.clone();
    metadata.insert(
        "checkout_id".to_owned(),
        serde_json::Value::String(checkout.id.clone()),
    );
    let needs = |field| crate::registry::method_facts(offer.method).is_some_and(|m| m.needs(field));
    let body = CreatePaymentBody {
        amount: checkout.amount,
        currency: checkout.currency.code().to_owned(),
        method: offer.method.as_str().to_owned(),
        merchant_reference: checkout.merchant_reference.clone(),
        description: checkout.description.clone(),
        // Redirect wallets bring the shopper back to this page, which then forwards. The link
        // passes validation here; the payment keeps none (a checkout created before derived
        // tokens excepted), and `create_request` sends the token-free return path instead.
        return_url: Some(gw.checkout_url(checkout)),
        expires_in_seconds: Some(left),
        metadata: Some(metadata),
        account: None,
        payer: Some(PayerBody {
            openid: needs(PayerField::Openid)
                .then(|| checkout.openid.clone())
                .flatten(),
            client_ip: needs(PayerField::ClientIp).then_some(client_ip).flatten(),
            payment_code: None,
        }),
        channel: Some(browser.channel().as_str().to_owned()),
    };
    let Ok((mut payment, fallbacks)) = validate_create(merchant, body, now) else {
        return Ok(Err(Notice::NotHere));
    };
    if checkout.legacy_token.is_none() {
        payment.return_url = None;
    }
    let Some(account) = merchant.account(&payment.account_id) else {
        return Ok(Err(Notice::NotHere));
    };
    let prepared = gw.prepare_create(&payment, &merchant.id, account);
    if let Err(error @ (AdapterError::InvalidRequest(_) | AdapterError::InvalidParameter { .. })) =
        &prepared
    {
        tracing::warn!(checkout = %checkout.id, %error, "the provider could not take this checkout");
        return Ok(Err(Notice::Refused));
    }
    let stored = gw
        .store
        .begin_checkout_payment(
            &checkout.id,
            current.as_ref().map(|p| p.id.as_str()),
            payment.clone(),
            MAX_PAYMENTS_PER_CHECKOUT,
        )
        .await?;
    if !stored {
        // Another tab or click got there first: show what it chose.
        return Ok(Ok(None));
    }
    let payment = gw
        .drive_create_with_failover(payment, prepared, &fallbacks, None)
        .await?;
    Ok(match payment.status {
        PaymentStatus::Failed => Err(Notice::Refused),
        PaymentStatus::Unknown if payment.next_action.is_none() => Err(Notice::Unavailable),
        _ => Ok(redirect_of(&payment)),
    })
}

pub(crate) async fn current(
    gw: &Gateway,
    merchant: &Merchant,
    id: &str,
    now: OffsetDateTime,
) -> Result<Answer, ApiError> {
    let checkout = gw
        .store
        .checkout(Some(&merchant.id), id)
        .await?
        .ok_or_else(|| ApiError::missing("checkout", id))?;
    let payments = gw.store.checkout_payments(&checkout.id).await?;
    let state = Stage::of(&checkout, &payments, now);
    Ok(Answer {
        status: StatusCode::OK,
        body: to_bytes(&checkout.to_api_json(&state, Some(&gw.checkout_url(&checkout)))),
        replayed: false,
    })
}

/// A checkout answer with its cashier URL ([`Answer::with_url`]). (Answers kept before links
/// were derived hold theirs, and keep it.)
pub(crate) fn with_cashier_url(gw: &Gateway, answer: Answer) -> Answer {
    answer.with_url("checkout", |id| gw.cashier_url(id))
}

/// Why the last choice did not go through, shown on the page the shopper lands on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Notice {
    Unavailable,
    NotHere,
    Busy,
    TooLate,
    TooMany,
    Refused,
    NoIdentity,
}

impl Notice {
    pub(crate) fn code(self) -> &'static str {
        match self {
            Notice::Unavailable => "provider_unavailable",
            Notice::NotHere => "method_unavailable",
            Notice::Busy => "switch_failed",
            Notice::TooLate => "too_late",
            Notice::TooMany => "too_many_attempts",
            Notice::Refused => "refused",
            Notice::NoIdentity => "payer_unknown",
        }
    }

    pub(crate) fn parse(code: &str) -> Option<Notice> {
        [
            Notice::Unavailable,
            Notice::NotHere,
            Notice::Busy,
            Notice::TooLate,
            Notice::TooMany,
            Notice::Refused,
            Notice::NoIdentity,
        ]
        .into_iter()
        .find(|n| n.code() == code)
    }

    pub(crate) fn text(self) -> &'static str {
        match self {
            Notice::Unavailable => {
                "钱包暂时无法连接，请稍后重试或换一种方式。The wallet could not be reached; try again or use another wallet."
            }
            Notice::NotHere => {
                "此支付方式在当前浏览器中不可用。This wallet cannot be used in this browser."
            }
            Notice::Busy => {
                "上一笔支付尚未关闭，请稍后重试。The previous payment could not be closed yet; try again in a moment."
            }
            Notice::TooLate => {
                "订单即将过期，无法发起新的支付。The checkout expires too soon to start a new payment."
            }
            Notice::TooMany => {
                "尝试次数过多，请返回商户重新下单。Too many attempts; please go back to the shop and start again."
            }
            Notice::Refused => {
                "钱包拒绝了此笔支付，请换一种方式。The wallet refused this payment; try another one."
            }
            Notice::NoIdentity => {
                "未能在微信内确认付款人，请长按识别二维码付款。The wallet could not tell who is paying here; scan the QR code instead."
            }
        }
    }
}

/// How long a wallet's OAuth may take, from the cashier page to the callback.
pub(crate) const IDENTITY_STATE_LIFE: time::Duration = time::Duration::minutes(10);

/// The cashier asks the wallet who the payer is (inside its app, for a checkout that does not
/// know): a single-use `state` bound to the checkout and to this browser (the value of the
/// cookie returned), and the wallet's authorisation URL to send the browser to.
pub(crate) async fn start_identity(
    gw: &Gateway,
    checkout: &Checkout,
    identity: &dyn moongate_contract::PayerIdentity,
    now: OffsetDateTime,
) -> Result<(String, String), ApiError> {
    let (state, browser) = (new_token()?, new_token()?);
    let hash = crate::cashier::key::token_hash;
    gw.store
        .begin_payer_identity(&hash(&state), &checkout.id, &hash(&browser), now)
        .await?;
    let redirect = gw.identity_callback_url();
    Ok((identity.identity_url(&redirect, &state), browser))
}

/// Why the payer's identity was not learned (the cashier then offers what works without it).
#[derive(Debug)]
pub(crate) enum IdentityRefusal {
    /// Unknown, used, stale or another browser's `state`: nothing to go back to.
    State,
    /// The checkout's page to go back to, saying the identity is unknown.
    Back(String),
}

/// Back from the wallet's OAuth: takes the state once, exchanges the code through the port,
/// and sets the checkout's openid; the cashier URL to go back to.
pub(crate) async fn finish_identity(
    gw: &Gateway,
    query: &std::collections::HashMap<String, String>,
    browser_cookie: Option<&str>,
    browser: Browser,
    now: OffsetDateTime,
) -> Result<String, IdentityRefusal> {
    let hash = crate::cashier::key::token_hash;
    let (Some(state), Some(cookie)) = (query.get("state"), browser_cookie) else {
        return Err(IdentityRefusal::State);
    };
    let taken = gw
        .store
        .take_payer_identity(&hash(state), &hash(cookie), now - IDENTITY_STATE_LIFE)
        .await
        .map_err(|_| IdentityRefusal::State)?;
    let Some(checkout_id) = taken else {
        return Err(IdentityRefusal::State);
    };
    let Ok(Some(checkout)) = gw.store.checkout(None, &checkout_id).await else {
        return Err(IdentityRefusal::State);
    };
    let page = gw.checkout_url(&checkout);
    let back = || IdentityRefusal::Back(format!("{page}?n={}", Notice::NoIdentity.code()));
    let config = gw.config();
    let Some(merchant) = config.merchants.get(&checkout.merchant_id) else {
        return Err(back());
    };
    let Some((_, account)) = crate::cashier::identity_account(merchant, &checkout, browser) else {
        return Err(back());
    };
    let Some(identity) = account.adapter.payer_identity() else {
        return Err(back());
    };
    let Some(code) = query
        .get(identity.identity_code_parameter())
        .filter(|c| !c.is_empty())
    else {
        return Err(back());
    };
    let cx = gw.call_context();
    let prepared = identity
        .prepare_identity(&cx, code)
        .map(moongate_contract::Prepared::Send);
    let caller = crate::port::Caller {
        merchant_id: &merchant.id,
        account,
        subject: &checkout.id,
        refund_id: None,
    };
    let openid = gw
        .port()
        .exchange(caller, "payer_identity", prepared, |r| {
            identity.parse_identity(r)
        })
        .await
        .into_answer()
        .map_err(|error| {
            tracing::warn!(checkout = %checkout.id, %error, "payer identity not learned");
            back()
        })?;
    if let Err(error) = check_openid(&openid) {
        tracing::warn!(checkout = %checkout.id, ?error, "the wallet's openid is not one");
        return Err(back());
    }
    gw.store
        .set_checkout_openid(&checkout.id, &openid)
        .await
        .map_err(|_| back())?;
    Ok(page)
}

/// The wallet URL a redirect method sends the browser to.
pub(crate) fn redirect_of(payment: &Payment) -> Option<String> {
    match &payment.next_action {
        Some(NextAction::Redirect { url }) => Some(url.clone()),
        _ => None,
    }
}
