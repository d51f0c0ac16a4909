//! The cashier page's HTML: pure functions from a checkout's state to a self-contained page
//! (inline CSS and SVG; no outside resource, no script except WeChat's own JSAPI bridge call,
//! which carries a per-response nonce). Every text is in Chinese and English.
//!
//! While a payment waits, the page reloads itself every [`REFRESH_SECS`] with
//! `<meta http-equiv="refresh">`: the shopper's browser follows the payment with no script.

use moongate_contract::{Currency, Money, NextAction, PaymentMethod, ProviderKind};
use time::OffsetDateTime;

use super::{Checkout, Offer, Offers, State};
use crate::html::escape;
use crate::ledger::Payment;
use crate::registry;

/// Seconds between reloads while a payment waits.
pub const REFRESH_SECS: u32 = 3;
/// Seconds the success page shows before sending the shopper to the merchant.
pub const RETURN_SECS: u32 = 3;

/// Everything one page shows.
#[derive(Debug)]
pub struct View<'a> {
    /// The merchant's display name.
    pub merchant_name: &'a str,
    /// The checkout.
    pub checkout: &'a Checkout,
    /// Its state.
    pub state: &'a State,
    /// Wallet buttons for this browser.
    pub offers: &'a Offers,
    /// The page's own path (`/cashier/{token}`); the form posts to `…/pay`.
    pub path: String,
    /// A message about the last choice (e.g. the provider did not answer).
    pub notice: Option<String>,
    /// Demo and tests only: the sandbox wallet page that "scans" a QR code, per wallet.
    pub sandbox_wallet: Option<String>,
    /// The nonce allowed for the JSAPI script.
    pub script_nonce: &'a str,
    /// Back from the wallet's in-app payment sheet (its callback): wait for the outcome
    /// instead of opening the sheet again.
    pub after_sheet: bool,
    /// Now (for the time left).
    pub now: OffsetDateTime,
}

/// A rendered page.
#[derive(Debug)]
pub struct Rendered {
    /// The HTML document.
    pub html: String,
    /// Whether the page holds the JSAPI script (its CSP then allows the nonce).
    pub has_script: bool,
}

/// The amount as shoppers read it: `¥88.88`, `HK$12.30`, `¥880` for yen, else `12.34 XXX`.
pub fn format_amount(amount: i64, currency: Currency) -> String {
    let number = Money::new(amount, currency).to_decimal_string();
    match currency.code() {
        "CNY" | "JPY" => format!("¥{number}"),
        "HKD" => format!("HK${number}"),
        "USD" => format!("US${number}"),
        "EUR" => format!("€{number}"),
        "GBP" => format!("£{number}"),
        code => format!("{number} {code}"),
    }
}

/// Wallet names, Chinese first, as the provider declares them.
pub fn wallet_name(wallet: ProviderKind) -> String {
    registry::facts(wallet).display_name()
}

/// A wallet button's CSS class: the provider's stable name, coloured by [`brand_style`].
fn wallet_class(wallet: ProviderKind) -> &'static str {
    wallet.as_str()
}

/// One rule per wallet with its declared brand colour.
fn brand_style() -> String {
    registry::all_facts()
        .map(|p| {
            format!(
                ".{}{{background:{}}}",
                p.kind.as_str(),
                p.wallet.brand_colour
            )
        })
        .collect()
}

/// The QR code for `data` as inline SVG (no image request; renders without script).
pub fn qr_svg(data: &str) -> Option<String> {
    let code =
        qrcode::QrCode::with_error_correction_level(data.as_bytes(), qrcode::EcLevel::M).ok()?;
    let svg = code
        .render::<qrcode::render::svg::Color<'_>>()
        .min_dimensions(232, 232)
        .quiet_zone(true)
        .dark_color(qrcode::render::svg::Color("#000000"))
        .light_color(qrcode::render::svg::Color("#ffffff"))
        .build();
    // Drop the XML declaration: the SVG sits inside HTML.
    let start = svg.find("<svg")?;
    Some(svg.get(start..)?.replacen(
        "<svg",
        "<svg role=\"img\" aria-label=\"QR code\" class=\"qr\"",
        1,
    ))
}

const STYLE: &str = "\
*{box-sizing:border-box}\
body{margin:0;font:16px/1.5 system-ui,-apple-system,\"PingFang SC\",\"Microsoft YaHei\",\"WenQuanYi Zen Hei\",sans-serif;background:#f2f3f5;color:#1d2129}\
main{max-width:420px;margin:0 auto;padding:16px}\
.card{background:#fff;border-radius:12px;padding:20px;margin-bottom:12px;box-shadow:0 1px 3px rgba(0,0,0,.08)}\
.merchant{color:#4e5969;font-size:14px;margin:0}\
.desc{margin:4px 0 0;font-size:15px}\
.amount{font-size:36px;font-weight:700;margin:8px 0 0;letter-spacing:.5px}\
.ref{color:#86909c;font-size:12px;margin:4px 0 0}\
h1{font-size:18px;margin:0 0 12px}\
form{margin:0}\
.wallet{display:block;width:100%;border:0;border-radius:8px;padding:14px;margin:0 0 10px;font-size:17px;color:#fff;cursor:pointer;text-align:center;text-decoration:none}\
.secondary{display:block;width:100%;border:1px solid #c9cdd4;background:#fff;color:#1d2129;border-radius:8px;padding:10px;margin:8px 0 0;font-size:15px;cursor:pointer;text-align:center;text-decoration:none}\
.qrbox{text-align:center}\
.qr{width:232px;height:232px;display:block;margin:8px auto}\
.hint{color:#4e5969;font-size:14px;margin:8px 0 0;text-align:center}\
.notice{background:#fff7e8;color:#ad4e00;border-radius:8px;padding:10px 12px;font-size:14px;margin:0 0 12px}\
.state{font-size:20px;font-weight:600;margin:0 0 6px}\
.ok{color:#00a650}.bad{color:#cb2634}\
.muted{color:#86909c;font-size:13px}\
a{color:#1677ff}\
.badge{display:inline-block;color:#fff;border-radius:4px;padding:2px 8px;margin:2px;font-size:13px}";

fn head(title: &str, refresh: Option<(u32, Option<&str>)>) -> String {
    let refresh = match refresh {
        None => String::new(),
        Some((secs, None)) => format!("<meta http-equiv=\"refresh\" content=\"{secs}\">"),
        Some((secs, Some(url))) => format!(
            "<meta http-equiv=\"refresh\" content=\"{secs};url={}\">",
            escape(url)
        ),
    };
    format!(
        "<!doctype html><html lang=\"zh-CN\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width,initial-scale=1\">\
         <meta name=\"referrer\" content=\"no-referrer\">{refresh}\
         <title>{}</title><style>{STYLE}{}</style></head><body><main>",
        escape(title),
        brand_style()
    )
}

const FOOT: &str = "<p class=\"muted\" style=\"text-align:center\">Moongate 收银台 · Checkout</p></main></body></html>";

fn order_card(view: &View<'_>) -> String {
    let c = view.checkout;
    format!(
        "<section class=\"card\" id=\"order\"><p class=\"merchant\">{}</p><p class=\"desc\">{}</p>\
         <p class=\"amount\" id=\"amount\">{}</p><p class=\"ref\">订单号 Order {}</p></section>",
        escape(view.merchant_name),
        escape(&c.description),
        escape(&format_amount(c.amount, c.currency)),
        escape(&c.merchant_reference),
    )
}

fn wallet_buttons(view: &View<'_>, skip: Option<PaymentMethod>, heading: &str) -> String {
    let offers: Vec<&Offer> = view
        .offers
        .offers
        .iter()
        .filter(|o| Some(o.method) != skip)
        .collect();
    let mut out = String::new();
    if !offers.is_empty() {
        out.push_str(&format!(
            "<section class=\"card\" id=\"wallets\"><h1>{}</h1><form method=\"post\" action=\"{}/pay\">",
            escape(heading),
            escape(&view.path)
        ));
        for offer in offers {
            out.push_str(&format!(
                "<button class=\"wallet {}\" type=\"submit\" name=\"method\" value=\"{}\" data-wallet=\"{}\">{}</button>",
                wallet_class(offer.wallet),
                offer.method.as_str(),
                offer.wallet.as_str(),
                wallet_name(offer.wallet)
            ));
        }
        out.push_str("</form>");
    } else if view.offers.elsewhere.is_empty() && skip.is_none() {
        out.push_str(
            "<section class=\"card\" id=\"wallets\"><p class=\"state bad\">暂无可用的支付方式</p>\
             <p>No wallet can take this payment. Please contact the shop.</p>",
        );
    } else {
        out.push_str("<section class=\"card\" id=\"wallets\">");
    }
    for wallet in &view.offers.elsewhere {
        let names = registry::facts(*wallet).wallet;
        out.push_str(&format!(
            "<p class=\"hint\">使用{0}：请点击右上角 ··· 在浏览器中打开本页。<br>To pay with {1}, open this page in your browser (tap ··· at the top right).</p>",
            escape(names.name_zh),
            escape(names.name_en),
        ));
    }
    out.push_str("</section>");
    out
}

fn minutes_left(view: &View<'_>) -> String {
    let left = (view.checkout.expires_at - view.now).whole_minutes().max(0);
    format!(
        "<p class=\"muted\" style=\"text-align:center\">{left} 分钟内有效 · valid for {left} more minutes</p>"
    )
}

/// Renders the page for the checkout's state.
pub fn render(view: &View<'_>) -> Rendered {
    let mut has_script = false;
    let notice = view
        .notice
        .as_ref()
        .map(|n| format!("<p class=\"notice\" id=\"notice\">{}</p>", escape(n)))
        .unwrap_or_default();
    let html = match view.state {
        State::Expired => {
            let back = view
                .checkout
                .cancel_url
                .as_deref()
                .unwrap_or(&view.checkout.return_url);
            format!(
                "{}{}<section class=\"card\" id=\"state\" data-state=\"expired\"><p class=\"state bad\">订单已过期</p>\
                 <p>This checkout has expired. Nothing was charged.</p>\
                 <a class=\"secondary\" href=\"{}\">返回商户 Back to the shop</a></section>{FOOT}",
                head("订单已过期 · Checkout expired", None),
                order_card(view),
                escape(back)
            )
        }
        State::Paid(payment) => format!(
            "{}{}<section class=\"card\" id=\"state\" data-state=\"paid\" data-payment=\"{}\">\
             <p class=\"state ok\">✓ 支付成功</p><p>Payment received with {}. Taking you back to the shop…</p>\
             <a class=\"secondary\" id=\"return\" href=\"{}\">返回商户 Back to the shop</a></section>{FOOT}",
            head(
                "支付成功 · Paid",
                Some((RETURN_SECS, Some(&view.checkout.return_url)))
            ),
            order_card(view),
            escape(&payment.id),
            wallet_name(payment.provider),
            escape(&view.checkout.return_url)
        ),
        State::Choose { previous } => {
            let previous = previous
                .as_ref()
                .map(|p| {
                    let why = p
                        .failure
                        .as_ref()
                        .map(|f| format!(" ({})", f.message))
                        .unwrap_or_default();
                    let (zh, en) = if p.status == crate::ledger::PaymentStatus::Canceled {
                        ("支付已关闭", "The payment was closed")
                    } else {
                        ("支付失败", "The payment failed")
                    };
                    format!(
                        "<section class=\"card\" id=\"state\" data-state=\"{}\" data-payment=\"{}\">\
                         <p class=\"state bad\">{zh}</p><p>{en}{}. Nothing was charged; you can choose again.</p></section>",
                        p.status.as_str(),
                        escape(&p.id),
                        escape(&why)
                    )
                })
                .unwrap_or_else(|| "<div id=\"state\" data-state=\"choose\"></div>".to_owned());
            format!(
                "{}{}{notice}{previous}{}{}{FOOT}",
                head("选择支付方式 · Choose how to pay", None),
                order_card(view),
                wallet_buttons(view, None, "选择支付方式 · Choose how to pay"),
                minutes_left(view),
            )
        }
        State::Pending(payment) => {
            let (body, script) = pending_body(view, payment);
            has_script = script;
            format!(
                "{}{}{notice}{body}{}{}{FOOT}",
                head(
                    "请完成支付 · Complete your payment",
                    (!script).then_some((REFRESH_SECS, None))
                ),
                order_card(view),
                wallet_buttons(
                    view,
                    Some(payment.method),
                    "换一种方式 · Use another wallet"
                ),
                minutes_left(view),
            )
        }
    };
    Rendered { html, has_script }
}

/// The waiting payment's part of the page, and whether it holds the JSAPI script.
fn pending_body(view: &View<'_>, payment: &Payment) -> (String, bool) {
    let facts = registry::facts(payment.provider).wallet;
    let wallet = wallet_name(payment.provider);
    let open = |inner: String| {
        format!(
            "<section class=\"card qrbox\" id=\"state\" data-state=\"pending\" data-payment=\"{}\" data-method=\"{}\">{inner}</section>",
            escape(&payment.id),
            payment.method.as_str()
        )
    };
    match &payment.next_action {
        Some(NextAction::DisplayQr { qr_data }) => {
            let qr = qr_svg(qr_data).unwrap_or_default();
            let app = (facts.scan_hint_zh, facts.scan_hint_en);
            let sandbox = view
                .sandbox_wallet
                .as_ref()
                .map(|base| {
                    let url = format!(
                        "{base}?{}",
                        form_urlencoded::Serializer::new(String::new())
                            .append_pair("code", qr_data)
                            .finish()
                    );
                    format!(
                        "<a class=\"secondary\" id=\"sandbox-wallet\" target=\"_blank\" rel=\"noopener\" href=\"{}\">沙箱钱包：扫码并支付 · Sandbox wallet: scan and pay</a>",
                        escape(&url)
                    )
                })
                .unwrap_or_default();
            (
                open(format!(
                    "<h1>{wallet}</h1>{qr}<p class=\"hint\">{}，扫描二维码完成支付<br>{} this code to pay.</p>\
                     <p class=\"muted\">付款后本页会自动更新 · This page updates by itself once you have paid.</p>{sandbox}",
                    app.0, app.1
                )),
                false,
            )
        }
        Some(NextAction::Redirect { url }) => (
            open(format!(
                "<h1>{wallet}</h1><a class=\"wallet {}\" id=\"continue\" href=\"{}\">前往{}付款 · Continue to {}</a>\
                 <p class=\"muted\">付款后本页会自动更新 · This page updates by itself once you have paid.</p>",
                wallet_class(payment.provider),
                escape(url),
                escape(facts.name_zh),
                escape(facts.name_en),
            )),
            false,
        ),
        // A button, not an auto-submitting script: coming back to this page (a reload, the
        // back button) must not post the same order to the wallet again.
        Some(NextAction::FormPost { url, fields }) => {
            let hidden: String = fields
                .iter()
                .map(|(name, value)| {
                    format!(
                        "<input type=\"hidden\" name=\"{}\" value=\"{}\">",
                        escape(name),
                        escape(value)
                    )
                })
                .collect();
            (
                open(format!(
                    "<h1>{wallet}</h1><form id=\"wallet-form\" method=\"post\" action=\"{}\">{hidden}\
                     <button class=\"wallet {}\" id=\"continue\" type=\"submit\">前往{}付款 · Continue to {}</button></form>\
                     <p class=\"muted\">付款后本页会自动更新 · This page updates by itself once you have paid.</p>",
                    escape(url),
                    wallet_class(payment.provider),
                    escape(facts.name_zh),
                    escape(facts.name_en),
                )),
                false,
            )
        }
        Some(NextAction::WechatJsapi { .. } | NextAction::AlipayJsapi { .. })
            if view.after_sheet =>
        {
            (
                open(format!(
                    "<h1>{wallet}</h1><p>正在确认支付结果 · Waiting for {} to confirm the payment.</p>\
                     <a class=\"secondary\" href=\"{}\">重新打开{} · Open {} again</a>",
                    escape(facts.name_en),
                    escape(&view.path),
                    escape(facts.name_zh),
                    escape(facts.name_en),
                )),
                false,
            )
        }
        Some(action @ (NextAction::WechatJsapi { .. } | NextAction::AlipayJsapi { .. })) => (
            open(format!(
                "<h1>{wallet}</h1><p>正在打开{}… Opening {}…</p>\
                 <a class=\"secondary\" href=\"{}\">已完成支付 · I have paid</a>{}",
                escape(facts.name_zh),
                escape(facts.name_en),
                escape(&view.path),
                bridge_script(action, view.script_nonce, &view.path)
            )),
            true,
        ),
        Some(NextAction::AwaitShopperConfirmation) | None => (
            open(
                "<h1>处理中 · Processing</h1><p>正在确认支付结果 · Waiting for the wallet to confirm the payment.</p>"
                    .to_owned(),
            ),
            false,
        ),
    }
}

/// JSON inside `<script>`: `<` escaped so no `</script>` can end it early.
fn script_json<T: serde::Serialize>(value: &T) -> String {
    serde_json::to_string(value)
        .unwrap_or_else(|_| "null".to_owned())
        .replace('<', "\\u003c")
}

/// The one script a cashier page may run: the wallet app's documented in-app bridge call
/// (WeChat's `getBrandWCPayRequest` with the signed parameters, Alipay's `tradePay` with the
/// trade number), then a reload that shows the outcome instead of opening the sheet again.
fn bridge_script(action: &NextAction, nonce: &str, path: &str) -> String {
    let (bridge, call) = match action {
        NextAction::WechatJsapi { parameters } => (
            "WeixinJSBridge",
            format!(
                "WeixinJSBridge.invoke('getBrandWCPayRequest',{},done);",
                script_json(parameters)
            ),
        ),
        NextAction::AlipayJsapi { trade_no } => (
            "AlipayJSBridge",
            format!(
                "AlipayJSBridge.call('tradePay',{{tradeNO:{}}},done);",
                script_json(trade_no)
            ),
        ),
        _ => return String::new(),
    };
    format!(
        "<script nonce=\"{}\">(function(){{function done(){{location.replace({}+'?sheet=done');}}\
         function pay(){{{call}}}\
         if(typeof {bridge}==='undefined'){{document.addEventListener('{bridge}Ready',pay,false);}}else{{pay();}}}})();</script>",
        escape(nonce),
        script_json(&path),
    )
}

/// What a static code's page shows.
#[derive(Debug)]
pub struct CodeView<'a> {
    /// The merchant's display name.
    pub merchant_name: &'a str,
    /// The code's name.
    pub name: &'a str,
    /// The fixed amount, if any.
    pub amount: Option<i64>,
    /// Its currency.
    pub currency: Currency,
    /// The wallets it takes (their names are shown).
    pub wallets: Vec<ProviderKind>,
    /// Where the form posts (the code's own URL path).
    pub action: &'a str,
    /// A problem with the amount typed, shown above the keypad.
    pub notice: Option<&'a str>,
    /// In a desktop browser: the code's URL, shown as a QR to scan with a phone's wallet app.
    pub scan_with_phone: Option<&'a str>,
}

/// A static code's page: the merchant, the accepted wallets and either the fixed amount with
/// a pay button, or an amount field (a phone shows its number pad) and a pay button. The form
/// posts; nothing is created by opening the page.
pub fn code_page(view: &CodeView<'_>) -> String {
    let wallets: Vec<String> = view
        .wallets
        .iter()
        .map(|w| {
            format!(
                "<span class=\"badge {}\">{}</span>",
                wallet_class(*w),
                escape(&wallet_name(*w))
            )
        })
        .collect();
    let notice = view
        .notice
        .map(|n| format!("<p class=\"notice\" id=\"notice\">{}</p>", escape(n)))
        .unwrap_or_default();
    let (amount, field) = match view.amount {
        Some(amount) => (
            format!(
                "<p class=\"amount\" id=\"amount\">{}</p>",
                escape(&format_amount(amount, view.currency))
            ),
            String::new(),
        ),
        None => (
            String::new(),
            format!(
                "<label for=\"amount-field\">金额 Amount ({})</label>\
                 <input id=\"amount-field\" name=\"amount\" inputmode=\"decimal\" autocomplete=\"off\" \
                 required pattern=\"[0-9]+([.][0-9]{{1,{}}})?\" placeholder=\"0.00\" \
                 style=\"width:100%;font-size:32px;padding:8px;margin:8px 0 12px;border:1px solid #c9cdd4;border-radius:8px\">",
                escape(view.currency.code()),
                view.currency.exponent().max(1)
            ),
        ),
    };
    let phone = view
        .scan_with_phone
        .and_then(qr_svg)
        .map(|qr| {
            format!(
                "<section class=\"card qrbox\" id=\"scan\">{qr}<p class=\"hint\">请用手机上的钱包App扫码付款<br>\
                 Scan this code with the wallet app on your phone to pay, or pay from this computer below: \
                 each wallet then shows its own QR code.</p></section>"
            )
        })
        .unwrap_or_default();
    format!(
        "{}<section class=\"card\" id=\"code\"><p class=\"merchant\">{}</p><p class=\"desc\">{}</p>{amount}\
         <p class=\"hint\">{}</p></section>{phone}{notice}\
         <section class=\"card\"><form method=\"post\" action=\"{}\">{field}\
         <button class=\"wallet\" style=\"background:#1677ff\" type=\"submit\" id=\"pay\">付款 Pay</button></form></section>{FOOT}",
        head(&format!("{} · 付款 Pay", view.merchant_name), None),
        escape(view.merchant_name),
        escape(view.name),
        wallets.join(" "),
        escape(view.action),
    )
}

/// A static code's printable poster (SVG, A-series proportions): the merchant, the code's
/// name, the fixed amount, the accepted wallets in their brand colours, and the QR of `url`.
pub fn code_poster(
    merchant_name: &str,
    code: &crate::ledger::code::Code,
    url: &str,
    wallets: &[ProviderKind],
) -> Option<String> {
    let qr =
        qrcode::QrCode::with_error_correction_level(url.as_bytes(), qrcode::EcLevel::M).ok()?;
    let qr = qr
        .render::<qrcode::render::svg::Color<'_>>()
        .min_dimensions(300, 300)
        .quiet_zone(true)
        .build();
    let qr = qr
        .get(qr.find("<svg")?..)?
        .replacen("<svg", "<svg x=\"60\" y=\"150\"", 1);
    let amount = code
        .amount
        .map(|a| {
            format!(
                "<text x=\"210\" y=\"500\" font-size=\"34\" font-weight=\"700\" text-anchor=\"middle\">{}</text>",
                escape(&format_amount(a, code.currency))
            )
        })
        .unwrap_or_default();
    let width = 360 / wallets.len().max(1);
    let marks: String = wallets
        .iter()
        .enumerate()
        .map(|(i, w)| {
            let facts = registry::facts(*w);
            let x = 30 + i * width;
            let middle = x + width.saturating_sub(8) / 2;
            format!(
                "<rect x=\"{x}\" y=\"515\" width=\"{}\" height=\"50\" rx=\"6\" fill=\"{}\"/>\
                 <text x=\"{middle}\" y=\"537\" font-size=\"16\" fill=\"#fff\" text-anchor=\"middle\">{}</text>\
                 <text x=\"{middle}\" y=\"556\" font-size=\"12\" fill=\"#fff\" text-anchor=\"middle\">{}</text>",
                width.saturating_sub(8),
                escape(facts.wallet.brand_colour),
                escape(facts.wallet.name_zh),
                escape(facts.wallet.name_en)
            )
        })
        .collect();
    Some(format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\
         <svg xmlns=\"http://www.w3.org/2000/svg\" width=\"105mm\" height=\"148mm\" viewBox=\"0 0 420 594\" \
         font-family=\"PingFang SC, Microsoft YaHei, WenQuanYi Zen Hei, sans-serif\">\
         <rect width=\"420\" height=\"594\" fill=\"#fff\"/>\
         <text x=\"210\" y=\"60\" font-size=\"26\" font-weight=\"700\" text-anchor=\"middle\">{}</text>\
         <text x=\"210\" y=\"95\" font-size=\"18\" fill=\"#4e5969\" text-anchor=\"middle\">{}</text>\
         <text x=\"210\" y=\"130\" font-size=\"16\" fill=\"#4e5969\" text-anchor=\"middle\">扫码付款 Scan with your wallet app to pay</text>\
         {qr}{amount}{marks}</svg>",
        escape(merchant_name),
        escape(&code.name),
    ))
}

/// The page of a code scanned too often just now.
pub fn code_busy() -> String {
    format!(
        "{}<section class=\"card\" id=\"state\" data-state=\"busy\"><p class=\"state bad\">请稍后再试</p>\
         <p>This code is being scanned too often; please try again in a minute.</p></section>{FOOT}",
        head("请稍后再试 · Try again shortly", None)
    )
}

/// The page of a code that takes no payment (disabled or expired).
pub fn code_closed(expired: bool) -> String {
    let (state, text) = if expired {
        (
            "expired",
            "这个收款码已过期 This payment code has expired and takes no payment.",
        )
    } else {
        (
            "disabled",
            "这个收款码已停用 This payment code is no longer in use and takes no payment.",
        )
    };
    format!(
        "{}<section class=\"card\" id=\"state\" data-state=\"{state}\"><p class=\"state bad\">{}</p>\
         <p>Please ask the shop for another way to pay.</p></section>{FOOT}",
        head("收款码不可用 · Code not in use", None),
        escape(text)
    )
}

/// The receipt after a payment through a code (or where it stands, if not paid yet).
pub fn code_receipt(
    merchant_name: &str,
    name: &str,
    amount: i64,
    currency: Currency,
    paid: Option<&Payment>,
    back: &str,
) -> String {
    let body = match paid {
        Some(payment) => format!(
            "<p class=\"state ok\">支付成功 Paid</p><p class=\"amount\" id=\"amount\">{}</p>\
             <p class=\"ref\">{} · {}</p>",
            escape(&format_amount(amount, currency)),
            escape(&payment.id),
            escape(&crate::ledger::rfc3339(payment.updated_at))
        ),
        None => format!(
            "<p class=\"state\">未完成 Not paid</p><p>The payment is not complete. \
             <a href=\"{}\">Pay again</a></p>",
            escape(back)
        ),
    };
    format!(
        "{}<section class=\"card\" id=\"state\" data-state=\"{}\"><p class=\"merchant\">{}</p>\
         <p class=\"desc\">{}</p>{body}</section>{FOOT}",
        head("收据 · Receipt", None),
        if paid.is_some() { "paid" } else { "open" },
        escape(merchant_name),
        escape(name),
    )
}

/// The page for a link that opens no checkout.
pub fn not_found() -> String {
    format!(
        "{}<section class=\"card\" id=\"state\" data-state=\"missing\"><p class=\"state bad\">链接无效</p>\
         <p>This payment link is not valid. Please go back to the shop and start again.</p></section>{FOOT}",
        head("链接无效 · Link not valid", None)
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use moongate_contract::JsapiParameters;

    #[test]
    fn amounts_read_as_shoppers_expect() {
        let cny = Currency::parse("CNY").unwrap_or(Currency::CNY);
        assert_eq!(format_amount(8888, cny), "¥88.88");
        assert_eq!(format_amount(5, cny), "¥0.05");
        if let Ok(jpy) = Currency::parse("JPY") {
            assert_eq!(format_amount(880, jpy), "¥880");
        }
        if let Ok(hkd) = Currency::parse("HKD") {
            assert_eq!(format_amount(1230, hkd), "HK$12.30");
        }
    }

    #[test]
    fn the_qr_is_inline_svg() {
        let svg = qr_svg("weixin://wxpay/bizpayurl?pr=abc").unwrap_or_default();
        assert!(svg.starts_with("<svg role=\"img\""), "{svg}");
        assert!(!svg.contains("<?xml"));
        assert!(svg.contains("<path") || svg.contains("<rect"));
    }

    #[test]
    fn the_bridge_scripts_cannot_be_closed_by_their_data() {
        let parameters = JsapiParameters {
            app_id: "wx</script><script>alert(1)</script>".to_owned(),
            time_stamp: "1".to_owned(),
            nonce_str: "n".to_owned(),
            package: "prepay_id=wx1".to_owned(),
            sign_type: "RSA".to_owned(),
            pay_sign: "s".to_owned(),
        };
        let script = bridge_script(&NextAction::WechatJsapi { parameters }, "abc", "/cashier/t");
        assert_eq!(script.matches("</script>").count(), 1);
        assert!(script.contains("getBrandWCPayRequest"));
        assert!(script.contains("nonce=\"abc\""));
        let script = bridge_script(
            &NextAction::AlipayJsapi {
                trade_no: "2026</script><script>alert(1)".to_owned(),
            },
            "abc",
            "/cashier/t",
        );
        assert_eq!(script.matches("</script>").count(), 1);
        assert!(script.contains("AlipayJSBridge.call('tradePay',{tradeNO:"));
        assert!(script.contains("'AlipayJSBridgeReady'"));
    }
}
