//! Alipay sandbox: notifications, signed, on Alipay's retry schedule.

use super::*;

#[derive(Debug, Deserialize)]
pub(super) struct ControlOrder {
    pub(super) out_trade_no: String,
    #[serde(default)]
    pub(super) app_id: Option<String>,
    /// `false` pays without sending the notification (a lost notification).
    #[serde(default = "yes")]
    pub(super) notify: bool,
}

pub(super) fn yes() -> bool {
    true
}

impl Sandbox {
    pub(super) fn find_key(&self, order: &ControlOrder) -> Option<(String, String)> {
        let inner = self.lock();
        inner
            .orders
            .keys()
            .find(|(app, no)| {
                *no == order.out_trade_no && order.app_id.as_ref().is_none_or(|a| a == app)
            })
            .cloned()
    }

    /// Scans (and optionally pays) an order, as the shopper's phone would.
    pub(super) fn scan(
        self: &Arc<Self>,
        order: &ControlOrder,
        pay: bool,
    ) -> Result<Value, (StatusCode, String)> {
        let key = self
            .find_key(order)
            .ok_or((StatusCode::NOT_FOUND, "no such order".to_owned()))?;
        let now = OffsetDateTime::now_utc();
        let trade_no = self.next_number("2026");
        let snapshot = {
            let mut inner = self.lock();
            let order = inner
                .orders
                .get_mut(&key)
                .ok_or((StatusCode::NOT_FOUND, "no such order".to_owned()))?;
            if order.expires_at <= now {
                return Err((StatusCode::CONFLICT, "the order has expired".to_owned()));
            }
            let trade = order.trade.get_or_insert(Trade {
                trade_no,
                status: TradeStatus::WaitBuyerPay,
                paid_at: None,
                refunds: Vec::new(),
            });
            match (trade.status, pay) {
                (TradeStatus::Closed, _) => {
                    return Err((StatusCode::CONFLICT, "the trade is closed".to_owned()));
                }
                (TradeStatus::Success, _) => {
                    return Err((StatusCode::CONFLICT, "already paid".to_owned()));
                }
                (TradeStatus::WaitBuyerPay, true) => {
                    trade.status = TradeStatus::Success;
                    trade.paid_at = Some(now);
                }
                (TradeStatus::WaitBuyerPay, false) => {}
            }
            order.clone()
        };
        if pay && order.notify {
            self.notify(&snapshot, None);
        }
        let trade = snapshot.trade.as_ref();
        Ok(json!({
            "out_trade_no": snapshot.out_trade_no,
            "trade_no": trade.map(|t| t.trade_no.clone()),
            "trade_status": trade.map(|t| t.status.as_str()),
            "return_url": snapshot.return_url,
        }))
    }

    /// Builds, signs (rule V1) and starts delivering a `trade_status_sync` notification.
    pub(super) fn notify(self: &Arc<Self>, order: &Order, refund_request_no: Option<&str>) {
        let (Some(url), Some(trade)) = (order.notify_url.clone(), order.trade.clone()) else {
            return;
        };
        let now = OffsetDateTime::now_utc();
        let notify_id = self.next_number("2026n");
        let beijing = |t: OffsetDateTime| beijing_time(t).unwrap_or_default();
        let total = yuan(order.total);
        let mut fields: Vec<(&str, String)> = vec![
            ("gmt_create", beijing(order.created_at)),
            ("charset", "utf-8".into()),
            ("seller_id", self.seller_id.clone()),
            ("subject", order.subject.clone()),
            {
                let (field, buyer) = self.buyer_named(order, "buyer_id");
                (field, buyer)
            },
            ("buyer_logon_id", "csq***@sandbox.com".into()),
            ("invoice_amount", total.clone()),
            ("notify_id", notify_id.clone()),
            (
                "fund_bill_list",
                format!("[{{\"amount\":\"{total}\",\"fundChannel\":\"ALIPAYACCOUNT\"}}]"),
            ),
            ("notify_type", "trade_status_sync".into()),
            ("trade_status", trade.status.as_str().into()),
            ("receipt_amount", total.clone()),
            ("buyer_pay_amount", total.clone()),
            ("app_id", order.app_id.clone()),
            ("auth_app_id", order.auth_app_id.clone()),
            ("notify_time", beijing(now)),
            ("point_amount", "0.00".into()),
            ("version", "1.0".into()),
            ("out_trade_no", order.out_trade_no.clone()),
            ("total_amount", total.clone()),
            ("trade_no", trade.trade_no.clone()),
            ("sign_type", "RSA2".into()),
        ];
        if let Some(paid_at) = trade.paid_at {
            fields.push(("gmt_payment", beijing(paid_at)));
        }
        if let Some(request_no) = refund_request_no {
            fields.push(("refund_fee", yuan(trade.refunded())));
            fields.push(("gmt_refund", beijing(now)));
            fields.push(("out_biz_no", request_no.to_owned()));
        }
        // Certificate mode: the notification names the certificate that signed it, and the
        // name is signed like every other field (sandbox choice, after Alipay's Java SDK,
        // whose V1 check leaves out only `sign` and `sign_type`).
        let signing = self.signing(Some(&order.app_id));
        if let Some(sn) = signing.cert_sn {
            fields.push(("alipay_cert_sn", sn.to_owned()));
        }
        let content = sign_string(
            fields.iter().map(|(k, v)| (*k, v.as_str())),
            Signed::Notification,
        );
        let sign = signing
            .signer
            .sign_base64(content.as_bytes())
            .unwrap_or_default();
        fields.push(("sign", sign));
        let mut form = form_urlencoded::Serializer::new(String::new());
        for (key, value) in &fields {
            form.append_pair(key, value);
        }
        let body = form.finish();
        let index = {
            let mut inner = self.lock();
            inner.notifications.push(SentNotification {
                notify_id,
                out_trade_no: order.out_trade_no.clone(),
                url: url.clone(),
                body: body.clone(),
                attempts: 0,
                acknowledged: false,
            });
            inner.notifications.len() - 1
        };
        let this = Arc::clone(self);
        tokio::spawn(async move { this.deliver(index, url, body).await });
    }

    pub(super) async fn deliver(self: Arc<Self>, index: usize, url: String, body: String) {
        let request = HttpRequest {
            method: HttpMethod::Post,
            url,
            headers: vec![("content-type".into(), FORM_CONTENT_TYPE.into())],
            body: body.into_bytes(),
        };
        let waits = std::iter::once(0).chain(NOTIFY_SCHEDULE_SECS.iter().map(|s| s * 1000));
        for wait_ms in waits {
            tokio::time::sleep(Duration::from_millis(
                wait_ms / u64::from(self.time_divisor),
            ))
            .await;
            let acknowledged = matches!(
                self.client.send(&request).await,
                Ok(response) if response.status == 200 && response.body == b"success"
            );
            let mut inner = self.lock();
            if let Some(sent) = inner.notifications.get_mut(index) {
                sent.attempts += 1;
                sent.acknowledged |= acknowledged;
            }
            if acknowledged {
                return;
            }
        }
    }
}
