//! The cashier's handlers: `POST/GET /v1/checkouts` (signed, for storefronts) and the
//! shopper's pages under `/cashier/{token}` (the token is the only credential; it is never
//! logged, and the pages tell browsers not to send it on as a referrer).

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Extension;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use moongate_contract::{AdapterError, NextAction, PayerField, PaymentMethod};
use serde::Deserialize;
use time::OffsetDateTime;

use super::page::{self, View};
use super::{Browser, Checkout, MAX_PAYMENTS_PER_CHECKOUT, MIN_PAYMENT_SECS, State as Stage};
use crate::api::{
    Claimed, CreatePaymentBody, PayerBody, Signed, check_metadata, check_money, check_order_text,
    check_url, claim_for, claimed, idempotency_key, json_response, keep_answer, parse_body,
    to_bytes, validate_create,
};
use crate::config::Merchant;
use crate::error::ApiError;
use crate::gateway::Gateway;
use crate::ledger::{Payment, PaymentStatus, new_id};

type Shared = Arc<Gateway>;

/// The peer address of a connection, put into each request by the accept loop.
#[derive(Clone, Copy, Debug)]
pub struct PeerAddr(pub SocketAddr);

const DEFAULT_EXPIRY_SECS: i64 = 30 * 60;
const MAX_EXPIRY_SECS: i64 = 24 * 3600;
const MIN_EXPIRY_SECS: i64 = 2 * MIN_PAYMENT_SECS;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateCheckoutBody {
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
struct CheckoutPayer {
    #[serde(default)]
    openid: Option<String>,
}

/// A 256-bit random token, base64url without padding (43 characters).
fn new_token() -> Result<String, ApiError> {
    use base64::Engine;
    use ring::rand::SecureRandom;
    let mut bytes = [0_u8; 32];
    ring::rand::SystemRandom::new()
        .fill(&mut bytes)
        .map_err(|_| ApiError::internal(&"no randomness"))?;
    Ok(base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes))
}

fn validate_checkout(
    merchant: &Merchant,
    body: CreateCheckoutBody,
    now: OffsetDateTime,
) -> Result<Checkout, ApiError> {
    let currency = check_money(&body.currency, body.amount)?;
    check_order_text(&body.merchant_reference, &body.description)?;
    check_url("return_url", &body.return_url)?;
    if let Some(url) = &body.cancel_url {
        check_url("cancel_url", url)?;
    }
    let expires_in = body.expires_in_seconds.unwrap_or(DEFAULT_EXPIRY_SECS);
    if !(MIN_EXPIRY_SECS..=MAX_EXPIRY_SECS).contains(&expires_in) {
        return Err(ApiError::invalid(
            "parameter_invalid",
            "expires_in_seconds",
            format!("must be between {MIN_EXPIRY_SECS} seconds and 24 hours"),
        ));
    }
    let mut methods = Vec::new();
    for name in body.methods.unwrap_or_default() {
        let method = PaymentMethod::parse(&name)
            .filter(|m| super::cashier_methods().any(|c| c == *m))
            .ok_or_else(|| {
                ApiError::invalid(
                    "parameter_invalid",
                    "methods",
                    format!(
                        "unknown method {name:?}; a cashier offers {}",
                        super::cashier_methods()
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
            "parameter_invalid",
            "metadata.checkout_id",
            "checkout_id is set by Moongate on the checkout's payments",
        ));
    }
    let openid = body.payer.and_then(|p| p.openid);
    let checkout = Checkout {
        id: new_id("co"),
        token: new_token()?,
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
    };
    if let Some(openid) = &openid {
        // The same rule as a payment's payer.
        crate::api::check_openid(openid)?;
    }
    let servable = super::cashier_methods().any(|m| {
        crate::routing::Channel::ALL
            .iter()
            .any(|&channel| super::serves(merchant, &checkout, m, channel))
    });
    if !servable {
        return Err(ApiError::invalid(
            "method_unsupported",
            "methods",
            "no account or routing rule of this merchant can take this checkout",
        ));
    }
    Ok(checkout)
}

/// `POST /v1/checkouts`.
pub async fn create_checkout(
    State(gw): State<Shared>,
    signed: Signed,
) -> Result<Response, ApiError> {
    let Signed {
        merchant,
        method,
        uri,
        headers,
        body,
        now,
    } = signed;
    let key = idempotency_key(&headers)?;
    let input: CreateCheckoutBody = parse_body(&body)?;
    let checkout = validate_checkout(&merchant, input, now)?;
    let claim = claim_for(&merchant, key.clone(), &method, &uri, &body);
    let begin = gw.store.begin_checkout(claim, checkout).await?;
    let checkout = match claimed(&gw, begin)? {
        Claimed::Fresh(checkout) => checkout,
        Claimed::Answer(response) => return Ok(response),
        Claimed::Abandoned(id) => return current(&gw, &merchant, &id, now).await,
    };
    tracing::info!(checkout = %checkout.id, merchant = %merchant.id, "checkout created");
    let state = Stage::of(&checkout, &[], now);
    let body = to_bytes(&checkout.to_api_json(&state, &gw.config().public_base_url));
    keep_answer(&gw, &merchant.id, &key, StatusCode::CREATED, body).await
}

/// `GET /v1/checkouts/{id}`.
pub async fn get_checkout(
    State(gw): State<Shared>,
    Path(id): Path<String>,
    signed: Signed,
) -> Result<Response, ApiError> {
    let Signed { merchant, now, .. } = signed;
    current(&gw, &merchant, &id, now).await
}

async fn current(
    gw: &Gateway,
    merchant: &Merchant,
    id: &str,
    now: OffsetDateTime,
) -> Result<Response, ApiError> {
    let checkout = gw
        .store
        .checkout(Some(&merchant.id), id)
        .await?
        .ok_or_else(|| ApiError::missing("checkout", id))?;
    let payments = gw.store.checkout_payments(&checkout.id).await?;
    let state = Stage::of(&checkout, &payments, now);
    Ok(json_response(
        StatusCode::OK,
        to_bytes(&checkout.to_api_json(&state, &gw.config().public_base_url)),
        false,
    ))
}

/// Why the last choice did not go through, shown on the page the shopper lands on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Notice {
    Unavailable,
    NotHere,
    Busy,
    TooLate,
    TooMany,
    Refused,
}

impl Notice {
    fn code(self) -> &'static str {
        match self {
            Notice::Unavailable => "provider_unavailable",
            Notice::NotHere => "method_unavailable",
            Notice::Busy => "switch_failed",
            Notice::TooLate => "too_late",
            Notice::TooMany => "too_many_attempts",
            Notice::Refused => "refused",
        }
    }

    fn parse(code: &str) -> Option<Notice> {
        [
            Notice::Unavailable,
            Notice::NotHere,
            Notice::Busy,
            Notice::TooLate,
            Notice::TooMany,
            Notice::Refused,
        ]
        .into_iter()
        .find(|n| n.code() == code)
    }

    fn text(self) -> &'static str {
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
        }
    }
}

#[derive(Debug, Deserialize)]
pub struct PageQuery {
    #[serde(default)]
    n: Option<String>,
}

fn user_agent(headers: &HeaderMap) -> &str {
    headers
        .get(header::USER_AGENT)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
}

/// Headers every cashier response carries: never cached, never framed, no referrer (the URL
/// is a credential), and a CSP that allows only inline styles, inline SVG and, on the JSAPI
/// page, the one script bearing this response's nonce.
fn page_response(status: StatusCode, html: String, script_nonce: Option<&str>) -> Response {
    let script = script_nonce
        .map(|n| format!("script-src 'nonce-{n}'"))
        .unwrap_or_else(|| "script-src 'none'".to_owned());
    let csp = format!(
        "default-src 'none'; style-src 'unsafe-inline'; img-src data:; {script}; \
         base-uri 'none'; frame-ancestors 'none'"
    );
    let mut response = (status, html).into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    if let Ok(value) = HeaderValue::from_str(&csp) {
        headers.insert(header::CONTENT_SECURITY_POLICY, value);
    }
    response
}

fn see_other(location: &str) -> Response {
    let mut response = StatusCode::SEE_OTHER.into_response();
    if let Ok(value) = HeaderValue::from_str(location) {
        response.headers_mut().insert(header::LOCATION, value);
    }
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

fn not_found() -> Response {
    page_response(StatusCode::NOT_FOUND, page::not_found(), None)
}

/// A well-formed token: 43 base64url characters. Anything else is not looked up.
fn plausible(token: &str) -> bool {
    token.len() == 43
        && token
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// The checkout a token opens, with its merchant (a merchant removed by a reload closes
/// its links).
async fn open(gw: &Gateway, token: &str) -> Result<Option<(Checkout, Arc<Merchant>)>, ApiError> {
    if !plausible(token) {
        return Ok(None);
    }
    let Some(checkout) = gw.store.checkout_by_token(token).await? else {
        return Ok(None);
    };
    let merchant = gw.config().merchants.get(&checkout.merchant_id).cloned();
    Ok(merchant.map(|m| (checkout, m)))
}

/// `GET /cashier/{token}`: the page.
pub async fn cashier_page(
    State(gw): State<Shared>,
    Path(token): Path<String>,
    Query(query): Query<PageQuery>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let now = OffsetDateTime::now_utc();
    let Some((checkout, merchant)) = open(&gw, &token).await? else {
        return Ok(not_found());
    };
    let payments = gw.store.checkout_payments(&checkout.id).await?;
    let state = Stage::of(&checkout, &payments, now);
    close_leftovers(&gw, &state, &payments);
    let browser = Browser::detect(user_agent(&headers));
    let offers = super::offers(&merchant, &checkout, browser);
    let sandbox_wallet = match &state {
        Stage::Pending(p) => gw
            .config()
            .sandbox_wallets
            .iter()
            .find(|(wallet, _)| *wallet == p.provider)
            .map(|(_, url)| url.clone()),
        _ => None,
    };
    let nonce = new_token()?;
    let view = View {
        merchant_name: &merchant.name,
        checkout: &checkout,
        state: &state,
        offers: &offers,
        path: format!("/cashier/{token}"),
        notice: query
            .n
            .as_deref()
            .and_then(Notice::parse)
            .map(|n| n.text().to_owned()),
        sandbox_wallet,
        script_nonce: &nonce,
        now,
    };
    let rendered = page::render(&view);
    Ok(page_response(
        StatusCode::OK,
        rendered.html,
        rendered.has_script.then_some(nonce.as_str()),
    ))
}

/// Once one payment of a checkout is paid, closes any other that is still open (a shopper who
/// paid an abandoned Alipay QR code, which Alipay cannot close before it is scanned, must not
/// also be able to pay the wallet they switched to). In the background: the page does not wait.
fn close_leftovers(gw: &Shared, state: &Stage, payments: &[Payment]) {
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

#[derive(Debug, Deserialize)]
pub struct ChoiceForm {
    method: String,
}

/// `POST /cashier/{token}/pay`: the shopper chose a wallet. Answers with a redirect: to the
/// wallet for redirect methods, else back to the page (with a notice when it did not work).
pub async fn cashier_choose(
    State(gw): State<Shared>,
    Path(token): Path<String>,
    headers: HeaderMap,
    peer: Option<Extension<PeerAddr>>,
    axum::Form(form): axum::Form<ChoiceForm>,
) -> Result<Response, ApiError> {
    let Some((checkout, merchant)) = open(&gw, &token).await? else {
        return Ok(not_found());
    };
    let page = format!("/cashier/{token}");
    let back = |notice: Option<Notice>| match notice {
        Some(n) => see_other(&format!("{page}?n={}", n.code())),
        None => see_other(&page),
    };
    let browser = Browser::detect(user_agent(&headers));
    let client_ip = peer.map(|Extension(PeerAddr(addr))| addr.ip().to_string());
    let outcome = choose(&gw, &merchant, &checkout, browser, &form.method, client_ip).await?;
    tracing::info!(checkout = %checkout.id, method = %form.method, outcome = ?outcome.as_ref().err(), "cashier choice");
    Ok(match outcome {
        Ok(Some(url)) => see_other(&url),
        Ok(None) => back(None),
        Err(notice) => back(Some(notice)),
    })
}

/// Creates (or keeps) the payment for the shopper's choice. `Ok(Some(url))`: send the
/// browser to the wallet; `Ok(None)`: show the page; `Err`: show the page with a notice.
async fn choose(
    gw: &Gateway,
    merchant: &Merchant,
    checkout: &Checkout,
    browser: Browser,
    method: &str,
    client_ip: Option<String>,
) -> Result<Result<Option<String>, Notice>, ApiError> {
    let now = OffsetDateTime::now_utc();
    let payments = gw.store.checkout_payments(&checkout.id).await?;
    let current = match Stage::of(checkout, &payments, now) {
        Stage::Paid(_) | Stage::Expired => return Ok(Ok(None)),
        Stage::Pending(p) => Some(p),
        Stage::Choose { previous } => previous,
    };
    let offers = super::offers(merchant, checkout, browser);
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
        // Redirect wallets bring the shopper back to this page, which then forwards.
        return_url: Some(checkout.url(&gw.config().public_base_url)),
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
    let Ok((payment, fallbacks)) = validate_create(merchant, body, now) else {
        return Ok(Err(Notice::NotHere));
    };
    let Some(account) = merchant.account(&payment.account_id) else {
        return Ok(Err(Notice::NotHere));
    };
    let prepared = gw.prepare_create(&payment, &merchant.id, account);
    if let Err(AdapterError::InvalidRequest(message)) = &prepared {
        tracing::warn!(checkout = %checkout.id, %message, "the provider could not take this checkout");
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
        .drive_create_with_failover(payment, prepared, &fallbacks)
        .await?;
    Ok(match payment.status {
        PaymentStatus::Failed => Err(Notice::Refused),
        PaymentStatus::Unknown if payment.next_action.is_none() => Err(Notice::Unavailable),
        _ => Ok(redirect_of(&payment)),
    })
}

/// The wallet URL a redirect method sends the browser to.
fn redirect_of(payment: &Payment) -> Option<String> {
    match &payment.next_action {
        Some(NextAction::Redirect { url }) => Some(url.clone()),
        _ => None,
    }
}
