//! Alipay's values in Moongate's terms: the opened answer node and its codes, yuan amounts,
//! Beijing times and order numbers.

use super::*;

/// A verified response node.
pub(crate) struct Opened<T> {
    pub(crate) common: Common,
    pub(crate) signed: bool,
    pub(crate) body: T,
}

impl<T> Opened<T> {
    pub(crate) fn code(&self) -> String {
        self.common
            .sub_code
            .clone()
            .unwrap_or_else(|| self.common.code.clone())
    }

    pub(crate) fn message(&self) -> String {
        self.common
            .sub_msg
            .clone()
            .unwrap_or_else(|| self.common.msg.clone())
    }

    /// "The provider answered, but whether it acted is unknown."
    pub(crate) fn indeterminate(&self) -> AdapterError {
        AdapterError::Indeterminate {
            code: self.code(),
            message: self.message(),
        }
    }

    /// Classifies every answer that is neither `10000` nor a signed `40004` business answer
    /// (an unsigned `40004` lands here too and is indeterminate).
    pub(crate) fn gateway_error(&self) -> AdapterError {
        let (code, message) = (self.code(), self.message());
        match self.common.code.as_str() {
            // The merchant's authorisation of the ISV app is gone (revoked, replaced by a
            // refresh) or lapsed: the ISV may not act for it until it authorises again.
            "20001"
                if matches!(
                    self.common.sub_code.as_deref(),
                    Some("aop.invalid-app-auth-token" | "aop.app-auth-token-time-out")
                ) =>
            {
                AdapterError::Unauthorised { code, message }
            }
            "20001" | "40001" | "40002" | "40003" | "40006" => {
                AdapterError::Rejected { code, message }
            }
            _ => AdapterError::Indeterminate { code, message },
        }
    }

    /// The business sub-code of a `40004` answer we may act on, i.e. a signed one.
    pub(crate) fn business_code(&self) -> Option<&str> {
        if self.common.code == "40004" && self.signed {
            self.common.sub_code.as_deref()
        } else {
            None
        }
    }
}

/// Formats `yyyy-MM-dd HH:mm:ss` in Beijing time.
pub fn format_beijing(now: OffsetDateTime) -> Result<String, AdapterError> {
    now.to_offset(BEIJING)
        .format(format_description!(
            "[year]-[month]-[day] [hour]:[minute]:[second]"
        ))
        .map_err(|_| AdapterError::InvalidRequest("timestamp out of range".to_owned()))
}

/// Parses a `yyyy-MM-dd HH:mm:ss` Beijing time.
pub fn parse_beijing(text: &str) -> Option<OffsetDateTime> {
    PrimitiveDateTime::parse(
        text,
        format_description!("[year]-[month]-[day] [hour]:[minute]:[second]"),
    )
    .ok()
    .map(|t| t.assume_offset(BEIJING))
}

pub(crate) fn yuan(amount: Money) -> Result<String, AdapterError> {
    if amount.currency != Currency::CNY {
        return Err(AdapterError::InvalidParameter {
            param: "currency",
            message: format!("Alipay trades are in CNY, not {}", amount.currency),
        });
    }
    if amount.minor < 1 || amount.minor > MAX_AMOUNT_FEN {
        return Err(AdapterError::InvalidParameter {
            param: "amount",
            message: "Alipay takes 0.01 to 100000000.00 CNY (1 to 10000000000 fen)".to_owned(),
        });
    }
    Ok(amount.to_decimal_string())
}

pub(crate) fn parse_yuan(text: Option<&str>, what: &str) -> Result<Money, AdapterError> {
    let text = text.ok_or_else(|| AdapterError::Protocol(format!("{what} missing")))?;
    Money::parse_decimal(text, Currency::CNY)
        .map_err(|_| AdapterError::Protocol(format!("{what} is not an amount")))
}

/// `out_trade_no` / `out_request_no`: 1 to 64 letters, digits or underscores.
pub(crate) fn check_order_no(value: &str, what: &str) -> Result<(), AdapterError> {
    let ok = !value.is_empty()
        && value.len() <= 64
        && value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_');
    if ok {
        Ok(())
    } else {
        Err(AdapterError::InvalidRequest(format!(
            "{what} must be 1-64 letters, digits or '_'"
        )))
    }
}
