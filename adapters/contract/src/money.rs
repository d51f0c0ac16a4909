//! Money as integer minor units with an ISO 4217 currency.
//!
//! Moongate never holds an amount as a float. Providers that speak decimal
//! strings (Alipay's `"88.88"` yuan) are converted here with checked integer
//! arithmetic, and an over-precise string is an error, never a rounding.

use std::fmt;

use serde::{Deserialize, Serialize};

/// Why an amount or currency could not be accepted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MoneyError {
    /// Not a three-letter ISO 4217 code that Moongate knows.
    #[error("unknown currency code '{0}'")]
    UnknownCurrency(String),
    /// The decimal string is malformed (sign, letters, empty parts).
    #[error("malformed amount '{0}'")]
    Malformed(String),
    /// More fraction digits than the currency has.
    #[error("amount '{0}' has more decimals than the currency allows")]
    TooPrecise(String),
    /// Out of the range an `i64` of minor units can hold.
    #[error("amount out of range")]
    Overflow,
}

/// Active ISO 4217 codes with their minor-unit exponent (digits after the point).
///
/// Zero- and three-decimal currencies are listed explicitly; everything else here has two.
const CURRENCIES: &[(&str, u32)] = &[
    ("AED", 2),
    ("AFN", 2),
    ("ALL", 2),
    ("AMD", 2),
    ("ANG", 2),
    ("AOA", 2),
    ("ARS", 2),
    ("AUD", 2),
    ("AWG", 2),
    ("AZN", 2),
    ("BAM", 2),
    ("BBD", 2),
    ("BDT", 2),
    ("BGN", 2),
    ("BHD", 3),
    ("BIF", 0),
    ("BMD", 2),
    ("BND", 2),
    ("BOB", 2),
    ("BRL", 2),
    ("BSD", 2),
    ("BTN", 2),
    ("BWP", 2),
    ("BYN", 2),
    ("BZD", 2),
    ("CAD", 2),
    ("CDF", 2),
    ("CHF", 2),
    ("CLP", 0),
    ("CNY", 2),
    ("COP", 2),
    ("CRC", 2),
    ("CUP", 2),
    ("CVE", 2),
    ("CZK", 2),
    ("DJF", 0),
    ("DKK", 2),
    ("DOP", 2),
    ("DZD", 2),
    ("EGP", 2),
    ("ERN", 2),
    ("ETB", 2),
    ("EUR", 2),
    ("FJD", 2),
    ("FKP", 2),
    ("GBP", 2),
    ("GEL", 2),
    ("GHS", 2),
    ("GIP", 2),
    ("GMD", 2),
    ("GNF", 0),
    ("GTQ", 2),
    ("GYD", 2),
    ("HKD", 2),
    ("HNL", 2),
    ("HTG", 2),
    ("HUF", 2),
    ("IDR", 2),
    ("ILS", 2),
    ("INR", 2),
    ("IQD", 3),
    ("IRR", 2),
    ("ISK", 0),
    ("JMD", 2),
    ("JOD", 3),
    ("JPY", 0),
    ("KES", 2),
    ("KGS", 2),
    ("KHR", 2),
    ("KMF", 0),
    ("KPW", 2),
    ("KRW", 0),
    ("KWD", 3),
    ("KYD", 2),
    ("KZT", 2),
    ("LAK", 2),
    ("LBP", 2),
    ("LKR", 2),
    ("LRD", 2),
    ("LSL", 2),
    ("LYD", 3),
    ("MAD", 2),
    ("MDL", 2),
    ("MGA", 2),
    ("MKD", 2),
    ("MMK", 2),
    ("MNT", 2),
    ("MOP", 2),
    ("MRU", 2),
    ("MUR", 2),
    ("MVR", 2),
    ("MWK", 2),
    ("MXN", 2),
    ("MYR", 2),
    ("MZN", 2),
    ("NAD", 2),
    ("NGN", 2),
    ("NIO", 2),
    ("NOK", 2),
    ("NPR", 2),
    ("NZD", 2),
    ("OMR", 3),
    ("PAB", 2),
    ("PEN", 2),
    ("PGK", 2),
    ("PHP", 2),
    ("PKR", 2),
    ("PLN", 2),
    ("PYG", 0),
    ("QAR", 2),
    ("RON", 2),
    ("RSD", 2),
    ("RUB", 2),
    ("RWF", 0),
    ("SAR", 2),
    ("SBD", 2),
    ("SCR", 2),
    ("SDG", 2),
    ("SEK", 2),
    ("SGD", 2),
    ("SHP", 2),
    ("SLE", 2),
    ("SOS", 2),
    ("SRD", 2),
    ("SSP", 2),
    ("STN", 2),
    ("SVC", 2),
    ("SYP", 2),
    ("SZL", 2),
    ("THB", 2),
    ("TJS", 2),
    ("TMT", 2),
    ("TND", 3),
    ("TOP", 2),
    ("TRY", 2),
    ("TTD", 2),
    ("TWD", 2),
    ("TZS", 2),
    ("UAH", 2),
    ("UGX", 0),
    ("USD", 2),
    ("UYU", 2),
    ("UZS", 2),
    ("VES", 2),
    ("VND", 0),
    ("VUV", 0),
    ("WST", 2),
    ("XAF", 0),
    ("XCD", 2),
    ("XOF", 0),
    ("XPF", 0),
    ("YER", 2),
    ("ZAR", 2),
    ("ZMW", 2),
    ("ZWL", 2),
];

/// An ISO 4217 currency code known to Moongate.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Currency {
    code: &'static str,
    exponent: u32,
}

impl Currency {
    /// Chinese yuan renminbi, the unit of every domestic Alipay and WeChat Pay trade.
    pub const CNY: Currency = Currency {
        code: "CNY",
        exponent: 2,
    };

    /// Looks up an upper-case three-letter code.
    pub fn parse(code: &str) -> Result<Currency, MoneyError> {
        CURRENCIES
            .iter()
            .find(|(known, _)| *known == code)
            .map(|(known, exponent)| Currency {
                code: known,
                exponent: *exponent,
            })
            .ok_or_else(|| MoneyError::UnknownCurrency(code.chars().take(8).collect()))
    }

    /// The three-letter code, e.g. `CNY`.
    pub fn code(&self) -> &'static str {
        self.code
    }

    /// Number of digits after the decimal point in the major unit.
    pub fn exponent(&self) -> u32 {
        self.exponent
    }
}

impl fmt::Debug for Currency {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.code)
    }
}

impl fmt::Display for Currency {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.code)
    }
}

impl Serialize for Currency {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.code)
    }
}

impl<'de> Deserialize<'de> for Currency {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        Currency::parse(&text).map_err(serde::de::Error::custom)
    }
}

/// An amount in integer minor units (fen for CNY, cents for USD, yen for JPY).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Money {
    /// Minor units; Moongate only creates positive amounts but keeps the sign for statements.
    pub minor: i64,
    /// The currency the minor units are counted in.
    pub currency: Currency,
}

impl Money {
    /// Builds an amount from minor units.
    pub fn new(minor: i64, currency: Currency) -> Money {
        Money { minor, currency }
    }

    /// Parses a non-negative decimal string in major units (`"88.88"`, `"1"`, `"0.10"`).
    ///
    /// Fewer fraction digits than the exponent are accepted; more are an error.
    pub fn parse_decimal(text: &str, currency: Currency) -> Result<Money, MoneyError> {
        let malformed = || MoneyError::Malformed(text.chars().take(32).collect());
        let (whole, fraction) = match text.split_once('.') {
            Some((whole, fraction)) => (whole, fraction),
            None => (text, ""),
        };
        if whole.is_empty() || !whole.bytes().all(|b| b.is_ascii_digit()) {
            return Err(malformed());
        }
        if text.contains('.') && fraction.is_empty() {
            return Err(malformed());
        }
        if !fraction.bytes().all(|b| b.is_ascii_digit()) {
            return Err(malformed());
        }
        let exponent = currency.exponent();
        let fraction_len = u32::try_from(fraction.len()).map_err(|_| malformed())?;
        if fraction_len > exponent {
            return Err(MoneyError::TooPrecise(text.chars().take(32).collect()));
        }
        let scale = 10_i64.checked_pow(exponent).ok_or(MoneyError::Overflow)?;
        let whole: i64 = whole.parse().map_err(|_| MoneyError::Overflow)?;
        let mut minor = whole.checked_mul(scale).ok_or(MoneyError::Overflow)?;
        if !fraction.is_empty() {
            let digits: i64 = fraction.parse().map_err(|_| malformed())?;
            let pad = 10_i64
                .checked_pow(exponent - fraction_len)
                .ok_or(MoneyError::Overflow)?;
            minor = minor
                .checked_add(digits.checked_mul(pad).ok_or(MoneyError::Overflow)?)
                .ok_or(MoneyError::Overflow)?;
        }
        Ok(Money { minor, currency })
    }

    /// Parses a decimal string that may carry a leading minus (statement and refund lines).
    pub fn parse_signed_decimal(text: &str, currency: Currency) -> Result<Money, MoneyError> {
        match text.strip_prefix('-') {
            Some(rest) => {
                let positive = Money::parse_decimal(rest, currency)?;
                Ok(Money {
                    minor: -positive.minor,
                    currency,
                })
            }
            None => Money::parse_decimal(text, currency),
        }
    }

    /// Formats in major units with exactly the currency's number of decimals (`8888` CNY → `"88.88"`).
    pub fn to_decimal_string(&self) -> String {
        let exponent = self.currency.exponent();
        let sign = if self.minor < 0 { "-" } else { "" };
        let magnitude = self.minor.unsigned_abs();
        if exponent == 0 {
            return format!("{sign}{magnitude}");
        }
        let scale = 10_u64.pow(exponent);
        let width = usize::try_from(exponent).unwrap_or(2);
        format!("{sign}{}.{:0width$}", magnitude / scale, magnitude % scale)
    }

    /// Checked addition of two amounts in the same currency.
    pub fn checked_add(self, other: Money) -> Option<Money> {
        if self.currency != other.currency {
            return None;
        }
        Some(Money {
            minor: self.minor.checked_add(other.minor)?,
            currency: self.currency,
        })
    }
}

impl fmt::Display for Money {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.to_decimal_string(), self.currency)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cny(text: &str) -> Result<i64, MoneyError> {
        Money::parse_decimal(text, Currency::CNY).map(|m| m.minor)
    }

    #[test]
    fn parses_yuan_strings_into_fen() {
        assert_eq!(cny("88.88"), Ok(8888));
        assert_eq!(cny("0.10"), Ok(10));
        assert_eq!(cny("0.1"), Ok(10));
        assert_eq!(cny("1"), Ok(100));
        assert_eq!(cny("100000000.00"), Ok(10_000_000_000));
    }

    #[test]
    fn rejects_malformed_and_over_precise_amounts() {
        for bad in [
            "", ".5", "1.", "-1", "+1", "1e3", "1,00", " 1", "1.0.0", "abc",
        ] {
            assert!(matches!(cny(bad), Err(MoneyError::Malformed(_))), "{bad:?}");
        }
        assert!(matches!(cny("0.001"), Err(MoneyError::TooPrecise(_))));
        assert_eq!(cny("99999999999999999999"), Err(MoneyError::Overflow));
        let jpy = Currency::parse("JPY").unwrap();
        assert!(matches!(
            Money::parse_decimal("1.5", jpy),
            Err(MoneyError::TooPrecise(_))
        ));
    }

    #[test]
    fn formats_with_the_currency_exponent() {
        assert_eq!(Money::new(8888, Currency::CNY).to_decimal_string(), "88.88");
        assert_eq!(Money::new(5, Currency::CNY).to_decimal_string(), "0.05");
        assert_eq!(Money::new(-1, Currency::CNY).to_decimal_string(), "-0.01");
        let jpy = Currency::parse("JPY").unwrap();
        assert_eq!(Money::new(1500, jpy).to_decimal_string(), "1500");
        let kwd = Currency::parse("KWD").unwrap();
        assert_eq!(Money::new(1500, kwd).to_decimal_string(), "1.500");
    }

    #[test]
    fn signed_amounts_round_trip() {
        let money = Money::parse_signed_decimal("-0.01", Currency::CNY).unwrap();
        assert_eq!(money.minor, -1);
        assert_eq!(money.to_decimal_string(), "-0.01");
    }

    #[test]
    fn unknown_currencies_are_rejected() {
        assert!(Currency::parse("cny").is_err());
        assert!(Currency::parse("XXX").is_err());
        assert_eq!(Currency::parse("USD").unwrap().exponent(), 2);
    }
}
