//! What Moongate's core needs to know about Alipay, as data (see `moongate_contract::facts`).

use moongate_contract::{
    CashierFit, CodeFormat, MethodFacts, PayerField, PaymentMethod, ProviderFacts, ProviderKind,
    StatementDay, WalletFacts,
};

/// Alipay payment codes (付款码): 16-24 digits starting 25-30 (china-wallets.md section E).
pub const PAYMENT_CODE: CodeFormat = CodeFormat {
    prefix_from: 25,
    prefix_to: 30,
    min_len: 16,
    max_len: 24,
};

/// Alipay's facts.
pub static FACTS: ProviderFacts = ProviderFacts {
    kind: ProviderKind::Alipay,
    wallet: WalletFacts {
        name_zh: "支付宝",
        name_en: "Alipay",
        brand_colour: "#1677ff",
        scan_hint_zh: "打开支付宝扫一扫",
        scan_hint_en: "Open Alipay and scan",
        in_app_marker: Some("AlipayClient"),
        cashier: CashierFit {
            // Knowing the payer (its `auth_base` id), the page opens the app's payment sheet;
            // otherwise the Alipay app opens its own cashier from the WAP page.
            in_app: &[
                PaymentMethod::AlipayJsapi,
                PaymentMethod::AlipayWap,
                PaymentMethod::AlipayQr,
            ],
            mobile: &[PaymentMethod::AlipayWap, PaymentMethod::AlipayQr],
            desktop: &[PaymentMethod::AlipayQr, PaymentMethod::AlipayWeb],
        },
        // The trade bill is a zip of GBK CSV files.
        statement_extension: "csv.zip",
        statement_day: StatementDay::BeijingCalendar,
    },
    methods: &[
        MethodFacts {
            method: PaymentMethod::AlipayQr,
            payer: &[],
            needs_return_url: false,
            payment_code: None,
        },
        MethodFacts {
            method: PaymentMethod::AlipayWeb,
            payer: &[],
            needs_return_url: true,
            payment_code: None,
        },
        MethodFacts {
            method: PaymentMethod::AlipayWap,
            payer: &[],
            needs_return_url: true,
            payment_code: None,
        },
        MethodFacts {
            method: PaymentMethod::AlipayPaymentCode,
            payer: &[(
                PayerField::PaymentCode,
                "payment codes need the scanned code",
            )],
            needs_return_url: false,
            payment_code: Some(PAYMENT_CODE),
        },
        MethodFacts {
            method: PaymentMethod::AlipayJsapi,
            payer: &[(
                PayerField::Openid,
                "alipay_jsapi needs the payer's open_id (or 2088 user id) under the merchant's app",
            )],
            needs_return_url: false,
            payment_code: None,
        },
    ],
};
