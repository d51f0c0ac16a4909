//! What a provider declares about itself, as data.
//!
//! Each adapter crate exports one `static FACTS: ProviderFacts`. The core reads these (through
//! its registry) to validate requests, detect payment codes, build the cashier page and name
//! statement files, so no core module matches on a concrete provider or method: a new wallet
//! brings its facts with its crate.

use time::{Date, OffsetDateTime, Time};

use crate::domain::{PaymentMethod, ProviderKind};

/// Everything the core needs to know about one provider before it has an account of it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ProviderFacts {
    /// Which provider.
    pub kind: ProviderKind,
    /// How the wallet is shown to shoppers and finance.
    pub wallet: WalletFacts,
    /// Every method the provider offers, with what each needs.
    pub methods: &'static [MethodFacts],
}

impl ProviderFacts {
    /// The facts of one of this provider's methods.
    pub fn method(&self, method: PaymentMethod) -> Option<&'static MethodFacts> {
        self.methods.iter().find(|m| m.method == method)
    }

    /// The wallet's name, Chinese then English (`支付宝 Alipay`).
    pub fn display_name(&self) -> String {
        format!("{} {}", self.wallet.name_zh, self.wallet.name_en)
    }
}

/// How a wallet appears and how its statements are kept.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WalletFacts {
    /// The wallet's Chinese name (`支付宝`).
    pub name_zh: &'static str,
    /// The wallet's English name (`Alipay`).
    pub name_en: &'static str,
    /// Its brand colour, a CSS hex colour (`#1677ff`).
    pub brand_colour: &'static str,
    /// What the shopper does with a QR code, in Chinese (`打开支付宝扫一扫`).
    pub scan_hint_zh: &'static str,
    /// The same in English (`Open Alipay and scan`).
    pub scan_hint_en: &'static str,
    /// A `User-Agent` fragment that tells the wallet's own in-app browser, if it has one. In
    /// there only this wallet's methods work.
    pub in_app_marker: Option<&'static str>,
    /// The cashier's methods for each kind of browser, best first.
    pub cashier: CashierFit,
    /// The statement file's extension as stored (`csv`, `csv.zip`).
    pub statement_extension: &'static str,
    /// Which stretch of time one statement day covers.
    pub statement_day: StatementDay,
}

/// Which methods a hosted cashier may start in each kind of browser, best first. A method whose
/// payer needs the cashier cannot meet (an openid the checkout lacks) is passed over.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CashierFit {
    /// In this wallet's own in-app browser.
    pub in_app: &'static [PaymentMethod],
    /// In a phone's browser.
    pub mobile: &'static [PaymentMethod],
    /// In a desktop browser.
    pub desktop: &'static [PaymentMethod],
}

/// How a provider cuts its statements into days.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StatementDay {
    /// A calendar day in Beijing time (UTC+8), midnight to midnight.
    BeijingCalendar,
    /// A day that turns at `hour`:00 Beijing time: day D runs from `hour`:00 on D−1 to
    /// `hour`:00 on D, so what happens from `hour`:00 on counts for the next day (UnionPay's
    /// clearing day, `settleDate`, turns at 23:00).
    BeijingCutoff {
        /// The hour (0–23) at which the next day begins.
        hour: u8,
    },
}

impl StatementDay {
    /// The half-open interval `[start, end)` of `day`.
    pub fn window(self, day: Date) -> (OffsetDateTime, OffsetDateTime) {
        match self {
            StatementDay::BeijingCalendar => {
                let start = day
                    .with_time(Time::MIDNIGHT)
                    .assume_offset(crate::statement::BEIJING);
                (start, start + time::Duration::days(1))
            }
            StatementDay::BeijingCutoff { hour } => {
                let turn = Time::from_hms(hour.min(23), 0, 0).unwrap_or(Time::MIDNIGHT);
                let start = day.with_time(turn).assume_offset(crate::statement::BEIJING)
                    - time::Duration::days(1);
                (start, start + time::Duration::days(1))
            }
        }
    }

    /// The statement day `at` falls in.
    pub fn day_of(self, at: OffsetDateTime) -> Date {
        match self {
            StatementDay::BeijingCalendar => crate::statement::beijing_day(at),
            StatementDay::BeijingCutoff { hour } => {
                let beijing = at.to_offset(crate::statement::BEIJING);
                if beijing.hour() >= hour {
                    beijing.date().next_day().unwrap_or(beijing.date())
                } else {
                    beijing.date()
                }
            }
        }
    }
}

/// A detail of the shopper a method needs in the request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PayerField {
    /// `payer.openid`: the payer's id under the merchant's app (WeChat's `openid`, Alipay's
    /// `open_id` or user id).
    Openid,
    /// `payer.client_ip`: the shopper's (or till's) IP address.
    ClientIp,
    /// `payer.payment_code`: the code the cashier scanned.
    PaymentCode,
}

impl PayerField {
    /// The request parameter.
    pub fn param(self) -> &'static str {
        match self {
            PayerField::Openid => "payer.openid",
            PayerField::ClientIp => "payer.client_ip",
            PayerField::PaymentCode => "payer.payment_code",
        }
    }
}

/// What the core must know about one payment method.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MethodFacts {
    /// The method.
    pub method: PaymentMethod,
    /// Payer details the request must carry, each with the message given when it is missing.
    pub payer: &'static [(PayerField, &'static str)],
    /// The provider's cashier sends the shopper back, so the request needs a `return_url`.
    pub needs_return_url: bool,
    /// For payment-code methods (the till scans the shopper's code): how its codes look.
    pub payment_code: Option<CodeFormat>,
}

impl MethodFacts {
    /// True when the request must carry `field`.
    pub fn needs(&self, field: PayerField) -> bool {
        self.payer.iter().any(|(f, _)| *f == field)
    }
}

/// How a wallet's payment codes look: all digits, the first two in a range, a length in a range
/// (china-wallets.md section E). Aggregators tell wallets apart this way.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CodeFormat {
    /// Lowest two-digit prefix.
    pub prefix_from: u8,
    /// Highest two-digit prefix.
    pub prefix_to: u8,
    /// Shortest code.
    pub min_len: usize,
    /// Longest code.
    pub max_len: usize,
}

impl CodeFormat {
    /// True when `code` has this format.
    pub fn matches(&self, code: &str) -> bool {
        if !code.bytes().all(|b| b.is_ascii_digit()) {
            return false;
        }
        let Some(prefix) = code.get(..2).and_then(|p| p.parse::<u8>().ok()) else {
            return false;
        };
        (self.prefix_from..=self.prefix_to).contains(&prefix)
            && (self.min_len..=self.max_len).contains(&code.len())
    }

    /// For error messages: `18 digits from 10-15`, `16-24 digits from 25-30`.
    pub fn describe(&self) -> String {
        let length = if self.min_len == self.max_len {
            self.min_len.to_string()
        } else {
            format!("{}-{}", self.min_len, self.max_len)
        };
        if self.prefix_from == self.prefix_to {
            format!("{length} digits from {}", self.prefix_from)
        } else {
            format!(
                "{length} digits from {}-{}",
                self.prefix_from, self.prefix_to
            )
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn code_formats() {
        let wechat = CodeFormat {
            prefix_from: 10,
            prefix_to: 15,
            min_len: 18,
            max_len: 18,
        };
        assert!(wechat.matches("134567890123456789"));
        assert!(!wechat.matches("164567890123456789"));
        assert!(!wechat.matches("13456789012345678x"));
        assert!(!wechat.matches("1"));
        assert!(!wechat.matches(""));
        assert_eq!(wechat.describe(), "18 digits from 10-15");
        let range = CodeFormat {
            prefix_from: 25,
            prefix_to: 30,
            min_len: 16,
            max_len: 24,
        };
        assert_eq!(range.describe(), "16-24 digits from 25-30");
    }

    #[test]
    fn beijing_window() {
        let day = time::macros::date!(2026 - 11 - 22);
        let (start, end) = StatementDay::BeijingCalendar.window(day);
        assert_eq!(start, time::macros::datetime!(2026-11-21 16:00 UTC));
        assert_eq!(end - start, time::Duration::days(1));
        assert_eq!(StatementDay::BeijingCalendar.day_of(start), day);
        assert_eq!(
            StatementDay::BeijingCalendar.day_of(end - time::Duration::nanoseconds(1)),
            day
        );
    }

    #[test]
    fn a_day_that_turns_at_23_beijing() {
        let rule = StatementDay::BeijingCutoff { hour: 23 };
        let day = time::macros::date!(2026 - 12 - 01);
        let (start, end) = rule.window(day);
        // 23:00 Beijing on 30 November is 15:00 UTC.
        assert_eq!(start, time::macros::datetime!(2026-11-30 15:00 UTC));
        assert_eq!(end - start, time::Duration::days(1));
        assert_eq!(rule.day_of(start), day);
        assert_eq!(
            rule.day_of(start - time::Duration::nanoseconds(1)),
            day.previous_day().unwrap()
        );
        assert_eq!(rule.day_of(end - time::Duration::nanoseconds(1)), day);
        assert_eq!(rule.day_of(end), day.next_day().unwrap());
        assert_eq!(
            rule.day_of(time::macros::datetime!(2026-12-01 22:59:59 +08:00)),
            day
        );
        assert_eq!(
            rule.day_of(time::macros::datetime!(2026-12-31 23:00 +08:00)),
            time::macros::date!(2027 - 01 - 01)
        );
    }
}
