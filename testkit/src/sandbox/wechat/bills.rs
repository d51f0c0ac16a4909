//! WeChat Pay sandbox: trade bills from its own trade state, and their download links.

use super::*;

/// Bill downloads stay valid for 5 minutes (B.7).
pub(super) const BILL_LINK_SECS: i64 = 300;

impl WechatSandbox {
    /// The lines of an `ALL` bill for a Beijing day: payments that succeeded and refunds that
    /// completed on it, of the orders `whose` picks, in time order.
    pub(super) fn bill_entries(
        &self,
        whose: impl Fn(&Order) -> bool,
        day: time::Date,
    ) -> Vec<statements::WechatBillEntry> {
        let inner = self.lock();
        let mut entries = Vec::new();
        for order in inner.orders.values().filter(|o| whose(o)) {
            let (Some(paid_at), Some(transaction_id)) = (order.paid_at, &order.transaction_id)
            else {
                continue;
            };
            let entry = |at, refund, amount| statements::WechatBillEntry {
                at,
                appid: order.appid.clone(),
                mchid: order.mchid.clone(),
                sub_mchid: order
                    .sub
                    .as_ref()
                    .map_or_else(|| "0".to_owned(), |s| s.sub_mchid.clone()),
                transaction_id: transaction_id.clone(),
                out_trade_no: order.out_trade_no.clone(),
                openid: order.openid.clone(),
                trade_type: order.trade_type.to_owned(),
                refund,
                amount,
                fee_e5: statements::wechat_fee_e5(amount),
                description: order.description.clone(),
                currency: "CNY".to_owned(),
            };
            if moongate_contract::statement::beijing_day(paid_at) == day {
                entries.push(entry(paid_at, None, order.total));
            }
            for refund in &order.refunds {
                if let Some(at) = refund.success_at
                    && refund.status == "SUCCESS"
                    && moongate_contract::statement::beijing_day(at) == day
                {
                    entries.push(entry(
                        at,
                        Some((refund.refund_id.clone(), refund.out_refund_no.clone())),
                        refund.amount,
                    ));
                }
            }
        }
        entries.sort_by_key(|e| e.at);
        entries
    }

    /// `GET /v3/bill/tradebill`: `ALL` bills of days before today (Beijing), ready from 10:00
    /// the next day (`STATEMENT_CREATING` before), `NO_STATEMENT_EXIST` for a day without
    /// trades, `INVALID_REQUEST` for today or later. A service provider's bill with
    /// `sub_mchid` is that sub-merchant's; without, the provider's combined bill (sandbox
    /// choice: every sub-merchant's records, told apart by `特约商户号`).
    pub(super) fn trade_bill(
        &self,
        merchant: &Merchant,
        query: &HashMap<String, String>,
        host: &str,
    ) -> Result<Reply, Reply> {
        let day = query
            .get("bill_date")
            .and_then(|d| moongate_contract::statement::parse_day(d))
            .ok_or_else(|| {
                fail(
                    StatusCode::BAD_REQUEST,
                    "INVALID_REQUEST",
                    "参数错误，请检查bill_date",
                )
            })?;
        match query.get("bill_type").map(String::as_str) {
            None | Some("ALL") => {}
            Some(
                "SUCCESS" | "REFUND" | "RECHARGE_REFUND" | "ALL_SPECIAL" | "SUC_SPECIAL"
                | "REF_SPECIAL",
            ) => {
                // Sandbox choice: only the ALL bill is simulated.
                return Err(fail(
                    StatusCode::BAD_REQUEST,
                    "INVALID_REQUEST",
                    "沙箱仅支持 bill_type=ALL",
                ));
            }
            Some(_) => return Err(param_error("bill_type 取值错误")),
        }
        if query.contains_key("tar_type")
            && query.get("tar_type").map(String::as_str) != Some("GZIP")
        {
            return Err(param_error("tar_type 取值错误"));
        }
        if query.contains_key("tar_type") {
            // Sandbox choice: the uncompressed bill only (Moongate never asks for GZIP).
            return Err(fail(
                StatusCode::BAD_REQUEST,
                "INVALID_REQUEST",
                "沙箱不支持 tar_type",
            ));
        }
        let now = OffsetDateTime::now_utc();
        let (today, after_ten) = self.lock().bills.today(now);
        if day >= today {
            return Err(fail(
                StatusCode::BAD_REQUEST,
                "INVALID_REQUEST",
                "参数错误，请检查bill_date",
            ));
        }
        let mchid = &merchant.settings.mchid;
        let provider = !merchant.settings.sub_merchants.is_empty();
        let entries = match query.get("sub_mchid").filter(|s| !s.is_empty()) {
            Some(sub) => {
                let owner = merchant.owner(Some(sub))?;
                self.bill_entries(|o| o.mchid == *mchid && o.owner() == owner, day)
            }
            None if provider => self.bill_entries(|o| o.mchid == *mchid, day),
            None => self.bill_entries(|o| o.mchid == *mchid && o.sub.is_none(), day),
        };
        if entries.is_empty() {
            return Err(fail(
                StatusCode::BAD_REQUEST,
                "NO_STATEMENT_EXIST",
                "账单文件不存在",
            ));
        }
        if today.previous_day() == Some(day) && !after_ten {
            return Err(fail(
                StatusCode::BAD_REQUEST,
                "STATEMENT_CREATING",
                "账单生成中",
            ));
        }
        let mut bytes = Vec::new();
        statements::write_wechat_trade_bill(&mut bytes, entries).map_err(|_| {
            fail(
                StatusCode::INTERNAL_SERVER_ERROR,
                "SYSTEM_ERROR",
                "系统错误",
            )
        })?;
        let hash = statements::sha1_hex(&bytes);
        let token = random_alnum(32);
        self.lock().bills.issue(
            token.clone(),
            statements::IssuedBill {
                at: now,
                label: mchid.clone(),
                bytes,
            },
            BILL_LINK_SECS,
        );
        Ok(ok(json!({
            "hash_type": "SHA1",
            "hash_value": hash,
            "download_url": format!("http://{host}/v3/billdownload/file?token={token}"),
        })))
    }

    /// `GET /v3/billdownload/file?token=…` (signed request, unsigned answer).
    pub(super) fn bill_file(&self, mchid: &str, query: &str) -> Response {
        let token = form_urlencoded::parse(query.as_bytes())
            .find(|(k, _)| k == "token")
            .map(|(_, v)| v.into_owned())
            .unwrap_or_default();
        let now = OffsetDateTime::now_utc();
        let found = self
            .lock()
            .bills
            .fetch(&token, now, BILL_LINK_SECS, |bill| bill.label == mchid);
        match found {
            Some(bill) => {
                let mut response = (StatusCode::OK, bill.bytes).into_response();
                response.headers_mut().insert(
                    header::CONTENT_TYPE,
                    HeaderValue::from_static("application/octet-stream"),
                );
                response
            }
            _ => (
                StatusCode::NOT_FOUND,
                axum::Json(json!({"code": "RESOURCE_NOT_EXISTS", "message": "账单下载链接已失效"})),
            )
                .into_response(),
        }
    }
}

pub(super) async fn control_statement_clock(
    State(sb): State<Shared>,
    axum::Json(clock): axum::Json<statements::StatementClock>,
) -> Response {
    match clock.day() {
        Ok(day) => {
            sb.lock().bills.set_clock(day, clock.tamper_next);
            StatusCode::NO_CONTENT.into_response()
        }
        Err(error) => error.into_response(),
    }
}

/// WeChat Pay's published payment-code shape (china-wallets.md section E): 18 digits starting
/// 10-15. Written here from the rule, not taken from the adapter.
pub(super) fn is_wechat_code(code: &str) -> bool {
    code.len() == 18
        && code.bytes().all(|b| b.is_ascii_digit())
        && code
            .get(..2)
            .and_then(|p| p.parse::<u8>().ok())
            .is_some_and(|p| (10..=15).contains(&p))
}
