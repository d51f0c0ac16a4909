//! What Moongate's core needs to know about UnionPay, as data (see `moongate_contract::facts`).

use moongate_contract::{
    CashierFit, CodeFormat, MethodFacts, PayerField, PaymentMethod, ProviderFacts, ProviderKind,
    StatementDay, WalletFacts,
};

/// UnionPay payment codes (付款码 in 云闪付 and bank apps): 19 digits starting 62
/// (more-wallets.md §1.2, `qrNo`).
pub const PAYMENT_CODE: CodeFormat = CodeFormat {
    prefix_from: 62,
    prefix_to: 62,
    min_len: 19,
    max_len: 19,
};

/// UnionPay's facts.
pub static FACTS: ProviderFacts = ProviderFacts {
    kind: ProviderKind::UnionPay,
    wallet: WalletFacts {
        name_zh: "云闪付",
        name_en: "UnionPay",
        brand_colour: "#e60012",
        scan_hint_zh: "打开云闪付或银行App扫一扫",
        scan_hint_en: "Open UnionPay (云闪付) or your bank app and scan",
        // UnionPay's apps mark their in-app browsers `UnionPay/<version> <app>`: 云闪付's says
        // `… (com.unionpay.chsp) … (UnionPay/1.0 CloudPay)`, a bank app built on UnionPay's
        // kit its own app name after the version (more-wallets.md §4, "银联二维码
        // UnionPay/<版本号><App标识>"), so the marker tells 云闪付 and the bank apps alike.
        in_app_marker: Some("UnionPay/"),
        // A code scans from another device; on the phone itself (its browser, or 云闪付's own)
        // the gateway page pays, and on a desktop it is the card-payment fallback.
        cashier: CashierFit {
            in_app: &[PaymentMethod::UnionpayWap, PaymentMethod::UnionpayQr],
            mobile: &[PaymentMethod::UnionpayWap, PaymentMethod::UnionpayQr],
            desktop: &[PaymentMethod::UnionpayQr, PaymentMethod::UnionpayWeb],
        },
        // The file-transfer answer's zip, as received.
        statement_extension: "zip",
        // The clearing day (`settleDate`) turns at 23:00 Beijing time (the common cut-off;
        // UnionPay's documents at hand do not state it).
        statement_day: StatementDay::BeijingCutoff { hour: 23 },
    },
    methods: &[
        MethodFacts {
            method: PaymentMethod::UnionpayQr,
            payer: &[],
            needs_return_url: false,
            payment_code: None,
        },
        MethodFacts {
            method: PaymentMethod::UnionpayWeb,
            payer: &[],
            needs_return_url: true,
            payment_code: None,
        },
        MethodFacts {
            method: PaymentMethod::UnionpayWap,
            payer: &[],
            needs_return_url: true,
            payment_code: None,
        },
        MethodFacts {
            method: PaymentMethod::UnionpayPaymentCode,
            payer: &[(
                PayerField::PaymentCode,
                "payment codes need the scanned code",
            )],
            needs_return_url: false,
            payment_code: Some(PAYMENT_CODE),
        },
    ],
};
