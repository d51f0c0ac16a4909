//! What Moongate's core needs to know about WeChat Pay, as data (see `moongate_contract::facts`).

use moongate_contract::{
    CashierFit, CodeFormat, MethodFacts, PayerField, PaymentMethod, ProviderFacts, ProviderKind,
    StatementDay, WalletFacts,
};

/// WeChat Pay payment codes (付款码): 18 digits starting 10-15 (china-wallets.md section E).
pub const PAYMENT_CODE: CodeFormat = CodeFormat {
    prefix_from: 10,
    prefix_to: 15,
    min_len: 18,
    max_len: 18,
};

/// WeChat Pay's facts.
pub static FACTS: ProviderFacts = ProviderFacts {
    kind: ProviderKind::WechatPay,
    wallet: WalletFacts {
        name_zh: "微信支付",
        name_en: "WeChat Pay",
        brand_colour: "#07c160",
        scan_hint_zh: "打开微信扫一扫",
        scan_hint_en: "Open WeChat and scan",
        // WeChat's in-app browser blocks other wallets' links.
        in_app_marker: Some("MicroMessenger"),
        cashier: CashierFit {
            // JSAPI when the checkout carries the payer's openid; otherwise a QR code, which
            // WeChat recognises on a long press.
            in_app: &[PaymentMethod::WechatJsapi, PaymentMethod::WechatNative],
            mobile: &[PaymentMethod::WechatH5, PaymentMethod::WechatNative],
            desktop: &[PaymentMethod::WechatNative],
        },
        statement_extension: "csv",
        statement_day: StatementDay::BeijingCalendar,
    },
    methods: &[
        MethodFacts {
            method: PaymentMethod::WechatNative,
            payer: &[],
            needs_return_url: false,
            payment_code: None,
        },
        MethodFacts {
            method: PaymentMethod::WechatJsapi,
            payer: &[(
                PayerField::Openid,
                "wechat_jsapi needs the payer's openid under the merchant's app id",
            )],
            needs_return_url: false,
            payment_code: None,
        },
        MethodFacts {
            method: PaymentMethod::WechatH5,
            payer: &[(
                PayerField::ClientIp,
                "wechat_h5 needs the shopper's IP address",
            )],
            needs_return_url: false,
            payment_code: None,
        },
        MethodFacts {
            method: PaymentMethod::WechatPaymentCode,
            payer: &[(
                PayerField::PaymentCode,
                "payment codes need the scanned code",
            )],
            needs_return_url: false,
            payment_code: Some(PAYMENT_CODE),
        },
    ],
};
