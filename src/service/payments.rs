//! Payments: validating a create request (method, payer details as the provider declares them,
//! money, texts, metadata) and routing it to an account, before anything is stored.

use moongate_contract::{Currency, Payer, PayerField, PaymentMethod};
use serde::Deserialize;
use time::OffsetDateTime;

use crate::config::Merchant;
use crate::error::{ApiError, ErrorCode};
use crate::gateway::Gateway;
use crate::ledger::{Payment, PaymentStatus, new_id};
use crate::registry;
use crate::routing::{Channel, RouteRequest};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct CreatePaymentBody {
    pub(crate) amount: i64,
    pub(crate) currency: String,
    pub(crate) method: String,
    pub(crate) merchant_reference: String,
    pub(crate) description: String,
    #[serde(default)]
    pub(crate) return_url: Option<String>,
    #[serde(default)]
    pub(crate) expires_in_seconds: Option<i64>,
    #[serde(default)]
    pub(crate) metadata: Option<serde_json::Map<String, serde_json::Value>>,
    #[serde(default)]
    pub(crate) account: Option<String>,
    #[serde(default)]
    pub(crate) payer: Option<PayerBody>,
    #[serde(default)]
    pub(crate) channel: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct PayerBody {
    #[serde(default)]
    pub(crate) openid: Option<String>,
    #[serde(default)]
    pub(crate) client_ip: Option<String>,
    #[serde(default)]
    pub(crate) payment_code: Option<String>,
}

const DEFAULT_EXPIRY_SECS: i64 = 2 * 3600;

/// The method names the API accepts, for error messages.
pub(crate) fn method_names() -> String {
    let mut names: Vec<&str> = PaymentMethod::ALL.iter().map(|m| m.as_str()).collect();
    names.push("payment_code");
    names.join(", ")
}

/// The payer's id under the merchant's app (a WeChat openid, an Alipay open_id or user id):
/// 1-128 letters, digits, `_` or `-`.
pub(crate) fn check_openid(openid: &str) -> Result<(), ApiError> {
    let ok = !openid.is_empty()
        && openid.len() <= 128
        && openid
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
    if ok {
        Ok(())
    } else {
        Err(ApiError::invalid(
            ErrorCode::ParameterInvalid,
            "payer.openid",
            "1-128 letters, digits, '_' or '-'",
        ))
    }
}

/// Checks the payer details a method needs and returns them.
pub(crate) fn validate_payer(
    method: PaymentMethod,
    body: Option<PayerBody>,
) -> Result<Payer, ApiError> {
    let body = body.unwrap_or(PayerBody {
        openid: None,
        client_ip: None,
        payment_code: None,
    });
    if let Some(openid) = &body.openid {
        check_openid(openid)?;
    }
    if let Some(ip) = &body.client_ip
        && ip.parse::<std::net::IpAddr>().is_err()
    {
        return Err(ApiError::invalid(
            ErrorCode::ParameterInvalid,
            "payer.client_ip",
            "must be an IPv4 or IPv6 address",
        ));
    }
    let Some(facts) = registry::method_facts(method) else {
        return Err(ApiError::invalid(
            ErrorCode::MethodUnsupported,
            "method",
            "no account of this merchant serves this method",
        ));
    };
    for &(field, message) in facts.payer {
        let present = match field {
            PayerField::Openid => body.openid.is_some(),
            PayerField::ClientIp => body.client_ip.is_some(),
            PayerField::PaymentCode => body.payment_code.is_some(),
        };
        if !present {
            return Err(ApiError::invalid(
                ErrorCode::ParameterMissing,
                field.param(),
                message,
            ));
        }
    }
    match facts.payment_code {
        None if body.payment_code.is_some() => {
            return Err(ApiError::invalid(
                ErrorCode::ParameterInvalid,
                "payer.payment_code",
                "a payment code is only taken by payment_code methods",
            ));
        }
        Some(format)
            if !body
                .payment_code
                .as_deref()
                .is_some_and(|c| format.matches(c)) =>
        {
            return Err(ApiError::invalid(
                ErrorCode::PaymentCodeInvalid,
                "payer.payment_code",
                format!("not a {} payment code", method.provider()),
            ));
        }
        _ => {}
    }
    Ok(Payer {
        openid: body.openid,
        client_ip: body.client_ip,
        payment_code: body.payment_code,
    })
}

/// The currency code and a positive amount in minor units (payments and checkouts).
pub(crate) fn check_money(currency: &str, amount: i64) -> Result<Currency, ApiError> {
    let currency = Currency::parse(currency).map_err(|_| {
        ApiError::invalid(
            ErrorCode::ParameterInvalid,
            "currency",
            "currency must be an upper-case ISO 4217 code",
        )
    })?;
    if amount <= 0 {
        return Err(ApiError::invalid(
            ErrorCode::ParameterInvalid,
            "amount",
            "amount must be a positive integer in minor units",
        ));
    }
    Ok(currency)
}

/// Characters that reorder or hide text when displayed (bidirectional embeddings, overrides
/// and isolates, directional marks, zero-width joiners' kin): in a description the cashier
/// shows, "TEA 0.01¥" could read "¥10.0 AET". Refused in every text a shopper sees.
pub(crate) fn is_deceptive(c: char) -> bool {
    matches!(
        c,
        '\u{061C}' | '\u{200B}'..='\u{200F}' | '\u{202A}'..='\u{202E}' | '\u{2060}'..='\u{2069}' | '\u{FEFF}'
    )
}

/// The order reference and the description shown to the shopper.
pub(crate) fn check_order_text(reference: &str, description: &str) -> Result<(), ApiError> {
    let reference_ok = !reference.is_empty()
        && reference.len() <= 128
        && !reference.chars().any(|c| c.is_control() || is_deceptive(c));
    if !reference_ok {
        return Err(ApiError::invalid(
            ErrorCode::ParameterInvalid,
            "merchant_reference",
            "1-128 characters, no control or bidirectional-formatting characters",
        ));
    }
    let description_ok = !description.trim().is_empty()
        && description.chars().count() <= 256
        && !description
            .chars()
            .any(|c| c.is_control() || is_deceptive(c));
    if !description_ok {
        return Err(ApiError::invalid(
            ErrorCode::ParameterInvalid,
            "description",
            "1-256 characters, no control or bidirectional-formatting characters",
        ));
    }
    Ok(())
}

/// A browser URL the shopper is sent to.
pub(crate) fn check_url(param: &'static str, url: &str) -> Result<(), ApiError> {
    let ok = (url.starts_with("https://") || url.starts_with("http://"))
        && url.len() <= 512
        && !url.chars().any(|c| c.is_control() || c.is_whitespace());
    if ok {
        Ok(())
    } else {
        Err(ApiError::invalid(
            ErrorCode::ParameterInvalid,
            param,
            "must be an http(s) URL of at most 512 bytes",
        ))
    }
}

/// Where the shopper is sent back to must be on one of the merchant's return hosts, when it
/// lists them: the cashier and the providers forward the shopper there, so an unlisted host
/// would make Moongate an open redirect.
pub(crate) fn check_return_host(
    merchant: &Merchant,
    param: &'static str,
    url: &str,
) -> Result<(), ApiError> {
    if merchant.return_hosts.is_empty() {
        return Ok(());
    }
    let host = url::Url::parse(url)
        .ok()
        .and_then(|u| u.host_str().map(str::to_ascii_lowercase));
    if host.is_some_and(|h| merchant.return_hosts.contains(&h)) {
        Ok(())
    } else {
        Err(ApiError::invalid(
            ErrorCode::ReturnHostNotAllowed,
            param,
            "the host is not one of the merchant's return_hosts",
        ))
    }
}

/// Merchant metadata: at most `max` string values, keys up to 40 and values up to 500 bytes.
pub(crate) fn check_metadata(
    metadata: &serde_json::Map<String, serde_json::Value>,
    max: usize,
) -> Result<(), ApiError> {
    let bad = metadata.len() > max
        || metadata
            .iter()
            .any(|(k, v)| k.is_empty() || k.len() > 40 || v.as_str().is_none_or(|s| s.len() > 500));
    if bad {
        return Err(ApiError::invalid(
            ErrorCode::ParameterInvalid,
            "metadata",
            format!("at most {max} string values, keys up to 40 and values up to 500 bytes"),
        ));
    }
    Ok(())
}

/// Validates a storefront's `POST /v1/payments` ([`validate_create`], and `metadata` may not
/// name a checkout: that key is how a cashier's payment finds its way back to its page).
pub(crate) fn validate_api_create(
    merchant: &Merchant,
    body: CreatePaymentBody,
    now: OffsetDateTime,
) -> Result<(Payment, Vec<String>), ApiError> {
    let reserved = crate::gateway::CHECKOUT_ID;
    if body
        .metadata
        .as_ref()
        .is_some_and(|m| m.contains_key(reserved))
    {
        return Err(ApiError::invalid(
            ErrorCode::ParameterInvalid,
            format!("metadata.{reserved}"),
            "checkout_id is set by Moongate on a checkout's payments",
        ));
    }
    validate_create(merchant, body, now)
}

/// Validates a create request and routes it: the payment (on its first account) and the
/// accounts to fail over to, in order.
pub(crate) fn validate_create(
    merchant: &Merchant,
    body: CreatePaymentBody,
    now: OffsetDateTime,
) -> Result<(Payment, Vec<String>), ApiError> {
    let currency = check_money(&body.currency, body.amount)?;
    let method = if body.method == "payment_code" {
        // One endpoint for any wallet's code: the prefix tells the wallet (china-wallets.md E).
        let code = body
            .payer
            .as_ref()
            .and_then(|p| p.payment_code.as_deref())
            .ok_or_else(|| {
                ApiError::invalid(
                    ErrorCode::ParameterMissing,
                    "payer.payment_code",
                    "payment codes need the scanned code",
                )
            })?;
        registry::method_for_payment_code(code).ok_or_else(|| {
            ApiError::invalid(
                ErrorCode::PaymentCodeUnsupported,
                "payer.payment_code",
                format!(
                    "the code belongs to no wallet Moongate serves ({})",
                    registry::payment_code_formats()
                ),
            )
        })?
    } else {
        PaymentMethod::parse(&body.method).ok_or_else(|| {
            ApiError::invalid(
                ErrorCode::ParameterInvalid,
                "method",
                format!("unknown method; use one of {}", method_names()),
            )
        })?
    };
    let payer = validate_payer(method, body.payer)?;
    check_order_text(&body.merchant_reference, &body.description)?;
    if let Some(url) = &body.return_url {
        check_url("return_url", url)?;
        check_return_host(merchant, "return_url", url)?;
    }
    if registry::method_facts(method).is_some_and(|m| m.needs_return_url)
        && body.return_url.is_none()
    {
        return Err(ApiError::invalid(
            ErrorCode::ParameterMissing,
            "return_url",
            "redirect methods need a return_url",
        ));
    }
    let expires_in = body.expires_in_seconds.unwrap_or(DEFAULT_EXPIRY_SECS);
    if !(60..=15 * 24 * 3600).contains(&expires_in) {
        return Err(ApiError::invalid(
            ErrorCode::ParameterInvalid,
            "expires_in_seconds",
            "must be between 60 seconds and 15 days",
        ));
    }
    let metadata = body.metadata.unwrap_or_default();
    check_metadata(&metadata, 20)?;
    let channel = match &body.channel {
        Some(text) => Some(Channel::parse(text).ok_or_else(|| {
            ApiError::invalid(
                ErrorCode::ParameterInvalid,
                "channel",
                "use web, mobile_web, in_app or point_of_sale",
            )
        })?),
        None => None,
    };
    // Say what no account can do before any rule is consulted.
    let serving: Vec<_> = merchant
        .accounts
        .iter()
        .map(|a| a.adapter.capabilities())
        .filter(|c| c.supports_method(method))
        .collect();
    if serving.is_empty() {
        return Err(ApiError::invalid(
            ErrorCode::MethodUnsupported,
            "method",
            "no account of this merchant serves this method",
        ));
    }
    if !serving.iter().any(|c| c.supports_currency(currency)) {
        return Err(ApiError::invalid(
            ErrorCode::CurrencyUnsupported,
            "currency",
            format!("no account of this merchant can charge {currency} with this method"),
        ));
    }
    let id = new_id("pay");
    let (account, route, fallbacks) = match &body.account {
        Some(account_id) => {
            let account = merchant.account(account_id).ok_or_else(|| {
                ApiError::invalid(
                    ErrorCode::AccountUnknown,
                    "account",
                    "no such provider account for this merchant",
                )
            })?;
            (account, None, Vec::new())
        }
        None if !merchant.routes.is_empty() => {
            let request = RouteRequest {
                payment_id: &id,
                method,
                currency,
                amount: body.amount,
                channel,
                metadata: &metadata,
            };
            let serves = |account_id: &str| {
                merchant.account(account_id).is_some_and(|a| {
                    let capabilities = a.adapter.capabilities();
                    capabilities.supports_method(method) && capabilities.supports_currency(currency)
                })
            };
            let choice = merchant.routes.choose(&request, serves).ok_or_else(|| {
                ApiError::invalid(
                    ErrorCode::NoRoute,
                    "method",
                    "no routing rule of this merchant takes this payment",
                )
            })?;
            // Several accounts only for a priority list: the first is tried, the others are
            // failed over to when it certainly did not take the order.
            let account = choice
                .accounts
                .first()
                .and_then(|a| merchant.account(a))
                .ok_or_else(|| ApiError::internal(&"routed to a missing account"))?;
            let fallbacks = choice.accounts.get(1..).unwrap_or_default().to_vec();
            (account, Some(choice.rule), fallbacks)
        }
        None => {
            let account = merchant
                .accounts
                .iter()
                .find(|a| {
                    let capabilities = a.adapter.capabilities();
                    capabilities.supports_method(method) && capabilities.supports_currency(currency)
                })
                .ok_or_else(|| ApiError::internal(&"a serving account vanished"))?;
            (account, None, Vec::new())
        }
    };
    let capabilities = account.adapter.capabilities();
    if !capabilities.supports_method(method) {
        return Err(ApiError::invalid(
            ErrorCode::MethodUnsupported,
            "method",
            "this account does not serve this method",
        ));
    }
    if !capabilities.supports_currency(currency) {
        return Err(ApiError::invalid(
            ErrorCode::CurrencyUnsupported,
            "currency",
            format!("{} cannot charge {currency}", account.kind),
        ));
    }
    let payment = Payment {
        provider_order_id: id.clone(),
        id,
        merchant_id: merchant.id.clone(),
        account_id: account.id.clone(),
        provider: account.kind,
        method,
        amount: body.amount,
        currency,
        merchant_reference: body.merchant_reference,
        description: body.description,
        return_url: body.return_url,
        metadata,
        provider_ref: None,
        status: PaymentStatus::Pending,
        next_action: None,
        failure: None,
        amount_refunded: 0,
        expires_at: now + time::Duration::seconds(expires_in),
        created_at: now,
        updated_at: now,
        payer,
        route,
        channel,
    };
    Ok((payment, fallbacks))
}

/// One of the merchant's payments; another merchant's answers exactly like a missing one.
pub(crate) async fn merchant_payment(
    gw: &Gateway,
    merchant: &Merchant,
    id: &str,
) -> Result<Payment, ApiError> {
    gw.store
        .payment(Some(&merchant.id), id)
        .await?
        .ok_or_else(|| ApiError::missing("payment", id))
}
