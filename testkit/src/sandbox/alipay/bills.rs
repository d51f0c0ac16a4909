//! Alipay sandbox: trade bills from its own trade state, and their download links.

use super::*;

impl Sandbox {
    /// The lines of one merchant app's trade bill for a Beijing day: trades completed and
    /// refunds made on it, in time order; an ISV's calls for the merchant are the merchant's
    /// trades.
    pub(super) fn bill_entries(
        &self,
        app_id: &str,
        day: time::Date,
    ) -> Vec<statements::AlipayBillEntry> {
        let inner = self.lock();
        let mut entries = Vec::new();
        for order in inner.orders.values().filter(|o| o.auth_app_id == app_id) {
            let Some(trade) = &order.trade else { continue };
            let Some(paid_at) = trade.paid_at else {
                continue;
            };
            if beijing_day(paid_at) == day {
                entries.push(statements::AlipayBillEntry {
                    trade_no: trade.trade_no.clone(),
                    out_trade_no: order.out_trade_no.clone(),
                    refund_request_no: None,
                    subject: order.subject.clone(),
                    created_at: order.created_at,
                    finished_at: paid_at,
                    amount: order.total,
                    fee: statements::alipay_fee(order.total),
                });
            }
            for (request_no, amount, at) in &trade.refunds {
                if beijing_day(*at) == day {
                    entries.push(statements::AlipayBillEntry {
                        trade_no: trade.trade_no.clone(),
                        out_trade_no: order.out_trade_no.clone(),
                        refund_request_no: Some(request_no.clone()),
                        subject: order.subject.clone(),
                        created_at: order.created_at,
                        finished_at: *at,
                        amount: *amount,
                        fee: statements::alipay_fee(*amount),
                    });
                }
            }
        }
        entries.sort_by_key(|e| e.finished_at);
        entries
    }

    /// `alipay.data.dataservice.bill.downloadurl.query`: daily `trade` bills of days before
    /// today (Beijing); "参数不合法" for today or later (A.11); `isp.bill_not_exist` for a day
    /// without trades (sandbox choice: the code Alipay gives when no bill exists).
    pub(super) fn bill_link(
        &self,
        app_id: &str,
        bill_type: Option<&str>,
        bill_date: Option<&str>,
        host: &str,
        now: OffsetDateTime,
    ) -> Value {
        if bill_type != Some("trade") {
            // Sandbox choice: only the acquiring (`trade`) bill is simulated.
            return business("isv.invalid-arguments", "参数不合法: bill_type");
        }
        let Some(day) = bill_date.and_then(moongate_contract::statement::parse_day) else {
            return business("isv.invalid-arguments", "参数不合法: bill_date");
        };
        // Alipay has no "still generating" answer; only today and later are refused.
        let (today, _) = self.lock().bills.today(now);
        if day >= today {
            return business("isv.invalid-arguments", "参数不合法");
        }
        let entries = self.bill_entries(app_id, day);
        if entries.is_empty() {
            return business("isp.bill_not_exist", "账单不存在");
        }
        let Ok(zip) = statements::alipay_trade_bill_zip(&self.seller_id, day, &entries, now) else {
            return business("isp.unknow-error", "系统繁忙");
        };
        let name = statements::alipay_zip_name(&self.seller_id, day);
        let token = crate::text::new_id("bill");
        let url = format!(
            "http://{host}/downloadBillFile.resource?bizType=trade&userId={}0156&fileType=csv.zip&bizDates={}&downloadFileName={name}&fileId=%2Ftrade%2F{}0156%2F{}&timestamp={}&token={token}",
            self.seller_id,
            statements::compact_day(day),
            self.seller_id,
            statements::compact_day(day),
            now.unix_timestamp() * 1000,
        );
        self.lock().bills.issue(
            token,
            statements::IssuedBill {
                at: now,
                label: name,
                bytes: zip,
            },
            BILL_LINK_SECS,
        );
        json!({"code": "10000", "msg": "Success", "bill_download_url": url})
    }
}

pub(super) fn beijing_day(at: OffsetDateTime) -> time::Date {
    moongate_contract::statement::beijing_day(at)
}

#[derive(Debug, Deserialize)]
pub(super) struct BillQuery {
    pub(super) token: String,
}

/// The bill zip; after 30 s the link answers with a page instead (as Alipay's does).
pub(super) async fn download_bill(
    State(sb): State<Shared>,
    Query(query): Query<BillQuery>,
) -> Response {
    let now = OffsetDateTime::now_utc();
    let found = sb
        .lock()
        .bills
        .fetch(&query.token, now, BILL_LINK_SECS, |_| true);
    match found {
        Some(statements::IssuedBill {
            label: name,
            bytes: zip,
            ..
        }) => {
            let mut response = (StatusCode::OK, zip).into_response();
            response.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/oct-stream"),
            );
            if let Ok(value) = HeaderValue::from_str(&format!("attachment; filename={name}")) {
                response
                    .headers_mut()
                    .insert(header::CONTENT_DISPOSITION, value);
            }
            response
        }
        _ => Html("<html><body>下载超时，请重新下载</body></html>").into_response(),
    }
}

pub(super) async fn control_statement_clock(
    State(sb): State<Shared>,
    axum::Json(clock): axum::Json<statements::StatementClock>,
) -> Response {
    match clock.day() {
        Ok(day) => {
            // `tamper_next` is the WeChat Pay sandbox's (it checks a SHA-1); ignored here.
            sb.lock().bills.set_clock(day, false);
            StatusCode::NO_CONTENT.into_response()
        }
        Err(error) => error.into_response(),
    }
}

/// Alipay's published payment-code shape (china-wallets.md section E): 16-24 digits starting
/// 25-30. Written here from the rule, not taken from the adapter.
pub(super) fn is_alipay_code(code: &str) -> bool {
    (16..=24).contains(&code.len())
        && code.bytes().all(|b| b.is_ascii_digit())
        && code
            .get(..2)
            .and_then(|p| p.parse::<u8>().ok())
            .is_some_and(|p| (25..=30).contains(&p))
}
