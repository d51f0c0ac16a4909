//! Static payment codes (聚合码): validating a merchant's code, and turning a shopper's scan
//! into a checkout for the code's merchant (the code's amount, or the one the shopper typed),
//! so the payment goes through the hosted cashier's one path (its browser branching, the same
//! validation, routing and provider calls as `POST /v1/payments`), with `metadata.code_id`
//! and the code's tags on every payment.

use moongate_contract::{Money, PaymentMethod};
use serde::Deserialize;
use time::OffsetDateTime;

use crate::cashier::Checkout;
use crate::config::Merchant;
use crate::error::{ApiError, ErrorCode};
use crate::gateway::Gateway;
use crate::ledger::code::{Code, CodeStatus};
use crate::ledger::new_id;
use crate::service::payments::check_money;
use crate::store::IdemClaim;

/// How long the checkout a scan opens lives.
const CHECKOUT_SECS: i64 = 30 * 60;

/// Most tags on a code.
const MAX_TAGS: usize = 10;

/// The metadata key naming a payment's code.
pub const CODE_ID: &str = "code_id";

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct CreateCodeBody {
    name: String,
    currency: String,
    #[serde(default)]
    amount: Option<i64>,
    #[serde(default)]
    methods: Option<Vec<String>>,
    #[serde(default)]
    tags: Option<serde_json::Map<String, serde_json::Value>>,
    #[serde(default)]
    expires_at: Option<String>,
}

fn invalid(param: &str, message: impl Into<String>) -> ApiError {
    ApiError::invalid(ErrorCode::ParameterInvalid, param, message)
}

/// Checks a new code and makes it (not stored yet).
pub(crate) fn validate_code(
    gw: &Gateway,
    merchant: &Merchant,
    body: CreateCodeBody,
    now: OffsetDateTime,
) -> Result<Code, ApiError> {
    let name_ok = !body.name.trim().is_empty()
        && body.name.chars().count() <= 64
        && !body.name.chars().any(char::is_control);
    if !name_ok {
        return Err(invalid("name", "1-64 characters, no control characters"));
    }
    let currency = check_money(&body.currency, body.amount.unwrap_or(1))?;
    let mut methods = Vec::new();
    for name in body.methods.unwrap_or_default() {
        let method = PaymentMethod::parse(&name)
            .filter(|m| crate::cashier::cashier_methods().any(|c| c == *m))
            .ok_or_else(|| {
                invalid(
                    "methods",
                    format!("unknown method {name:?}; a code offers the cashier's methods"),
                )
            })?;
        if !methods.contains(&method) {
            methods.push(method);
        }
    }
    let tags = body.tags.unwrap_or_default();
    let tags_ok = tags.len() <= MAX_TAGS
        && tags.iter().all(|(k, v)| {
            !k.is_empty()
                && k.len() <= 40
                && k != CODE_ID
                && k != crate::gateway::CHECKOUT_ID
                && v.as_str().is_some_and(|s| s.len() <= 100)
        });
    if !tags_ok {
        return Err(invalid(
            "tags",
            format!(
                "at most {MAX_TAGS} string values (keys up to 40 bytes, values up to 100; not \
                 code_id or checkout_id)"
            ),
        ));
    }
    let expires_at = match body.expires_at.as_deref() {
        None => None,
        Some(text) => {
            let at = OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339)
                .map_err(|_| invalid("expires_at", "an RFC 3339 time"))?;
            if at <= now {
                return Err(invalid("expires_at", "must be in the future"));
            }
            Some(at)
        }
    };
    let id = new_id("code");
    let code = Code {
        token_hash: gw.code_token_hash(&id),
        id,
        merchant_id: merchant.id.clone(),
        name: body.name,
        tags,
        amount: body.amount,
        currency,
        methods,
        expires_at,
        disabled_at: None,
        created_at: now,
    };
    // A code no account of the merchant could take is refused now, not at the till.
    if wallets(gw, merchant, &code, now).is_empty() {
        return Err(ApiError::invalid(
            ErrorCode::MethodUnsupported,
            "methods",
            "no account or routing rule of this merchant can take this code's payments",
        ));
    }
    Ok(code)
}

/// The wallets a code's payments can be made with (its page and poster show them): those the
/// merchant's accounts and routing serve for a checkout of the code.
pub(crate) fn wallets(
    gw: &Gateway,
    merchant: &Merchant,
    code: &Code,
    now: OffsetDateTime,
) -> Vec<moongate_contract::ProviderKind> {
    let probe = checkout_of(gw, code, code.amount.unwrap_or(1), now, String::new());
    crate::cashier::served_wallets(merchant, &probe)
}

/// The checkout of one scan.
fn checkout_of(
    gw: &Gateway,
    code: &Code,
    amount: i64,
    now: OffsetDateTime,
    id: String,
) -> Checkout {
    let mut metadata = code.tags.clone();
    metadata.insert(CODE_ID.to_owned(), code.id.clone().into());
    let code_url = gw.code_url(&code.id);
    Checkout {
        token_hash: gw.cashier_token_hash(&id),
        return_url: format!("{code_url}?receipt={id}"),
        id,
        merchant_id: code.merchant_id.clone(),
        amount,
        currency: code.currency,
        merchant_reference: code.id.clone(),
        description: code.name.clone(),
        cancel_url: Some(code_url),
        methods: code.methods.clone(),
        openid: None,
        metadata,
        expires_at: now + time::Duration::seconds(CHECKOUT_SECS),
        created_at: now,
        payment_id: None,
        legacy_token: None,
    }
}

/// Why a scan opened no checkout.
#[derive(Debug)]
pub(crate) enum ScanRefusal {
    /// The code takes no payment.
    Closed(CodeStatus),
    /// The amount typed is not one (shown above the keypad).
    Amount(String),
    /// The ledger failed.
    Api(ApiError),
}

/// A shopper's scan, with the amount they typed (`None` for a fixed-amount code): a new
/// checkout, whose cashier URL the shopper is sent to.
pub(crate) async fn scan(
    gw: &Gateway,
    code: &Code,
    typed: Option<&str>,
    now: OffsetDateTime,
) -> Result<Checkout, ScanRefusal> {
    let status = code.status(now);
    if status != CodeStatus::Active {
        return Err(ScanRefusal::Closed(status));
    }
    let amount = match (code.amount, typed) {
        (Some(amount), _) => amount,
        (None, None) => {
            return Err(ScanRefusal::Amount(
                "请输入金额 Enter the amount".to_owned(),
            ));
        }
        (None, Some(text)) => {
            let money = Money::parse_decimal(text.trim(), code.currency).map_err(|_| {
                ScanRefusal::Amount(format!(
                    "金额无效 Not an amount: use digits and at most {} decimals",
                    code.currency.exponent()
                ))
            })?;
            check_money(code.currency.code(), money.minor)
                .map_err(|e| ScanRefusal::Amount(e.message.clone()))?;
            money.minor
        }
    };
    let checkout = checkout_of(gw, code, amount, now, new_id("co"));
    // No request to deduplicate: each scan is its own checkout (one the shopper leaves
    // unpaid simply expires).
    let claim = IdemClaim {
        merchant_id: code.merchant_id.clone(),
        key: format!("scan:{}", checkout.id),
        request_hash: checkout.id.clone(),
        now,
        nonce: None,
    };
    match gw.store.begin_checkout(claim, checkout).await {
        Ok(crate::store::Begin::Fresh(checkout)) => Ok(checkout),
        Ok(_) => Err(ScanRefusal::Api(ApiError::internal(&"a scan's key taken"))),
        Err(error) => Err(ScanRefusal::Api(error.into())),
    }
}
