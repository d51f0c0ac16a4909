//! WeChat Pay sandbox: notifications, encrypted and signed, on WeChat Pay's retry schedule.

use super::*;

impl WechatSandbox {
    pub(super) fn settle_refund(
        self: &Arc<Self>,
        owner: &str,
        out_trade_no: &str,
        out_refund_no: &str,
    ) {
        let snapshot = {
            let mut inner = self.lock();
            let Some(order) = inner
                .orders
                .get_mut(&(owner.to_owned(), out_trade_no.to_owned()))
            else {
                return;
            };
            let Some(refund) = order
                .refunds
                .iter_mut()
                .find(|r| r.out_refund_no == out_refund_no)
            else {
                return;
            };
            refund.status = "SUCCESS";
            refund.success_at = Some(OffsetDateTime::now_utc());
            let refund = refund.clone();
            (order.clone(), refund)
        };
        let (order, refund) = snapshot;
        let Some(url) = refund.notify_url.clone() else {
            return;
        };
        let mut plain = json!({
            "transaction_id": order.transaction_id,
            "out_trade_no": order.out_trade_no, "refund_id": refund.refund_id,
            "out_refund_no": refund.out_refund_no, "refund_status": refund.status,
            "success_time": refund.success_at.and_then(rfc3339_beijing),
            "user_received_account": "支付用户零钱",
            "amount": {"total": order.total, "refund": refund.amount,
                       "payer_total": order.total, "payer_refund": refund.amount},
        });
        if let Some(map) = plain.as_object_mut() {
            order.merchant_fields(map, false);
        }
        self.notify(&order, url, "REFUND.SUCCESS", "退款成功", "refund", &plain);
    }

    /// Encrypts, signs and starts delivering a notification.
    pub(super) fn notify(
        self: &Arc<Self>,
        order: &Order,
        url: String,
        event_type: &str,
        summary: &str,
        original_type: &str,
        plain: &Value,
    ) {
        let Some(merchant) = self.merchants.get(&order.mchid) else {
            return;
        };
        let nonce = random_alnum(12);
        let Some(ciphertext) = encrypt_resource(
            merchant.settings.apiv3_key.as_bytes(),
            &nonce,
            original_type,
            plain.to_string().as_bytes(),
        ) else {
            return;
        };
        let now = OffsetDateTime::now_utc();
        let id = format!(
            "{}-{}-{}",
            random_alnum(8).to_ascii_lowercase(),
            random_alnum(4).to_ascii_lowercase(),
            random_alnum(12).to_ascii_lowercase()
        );
        let body = json!({
            "id": id, "create_time": rfc3339_beijing(now),
            "resource_type": "encrypt-resource", "event_type": event_type, "summary": summary,
            "resource": {"original_type": original_type, "algorithm": "AEAD_AES_256_GCM",
                         "ciphertext": ciphertext, "associated_data": original_type, "nonce": nonce},
        })
        .to_string();
        let index = {
            let mut inner = self.lock();
            inner.notifications.push(SentNotification {
                id,
                event_type: event_type.to_owned(),
                out_trade_no: order.out_trade_no.clone(),
                url: url.clone(),
                body: body.clone(),
                mchid: order.mchid.clone(),
                attempts: 0,
                acknowledged: false,
                last_status: 0,
            });
            let index = inner.notifications.len() - 1;
            if let Some(held) = inner.held.as_mut() {
                held.push(index);
                return;
            }
            index
        };
        let this = Arc::clone(self);
        let mode = merchant.settings.key_mode;
        tokio::spawn(async move { this.deliver(index, mode).await });
    }

    /// One delivery attempt; the signature is made fresh (WeChat re-signs each retry).
    pub(super) async fn attempt(&self, index: usize, mode: KeyMode, probe: bool) -> Option<u16> {
        let (url, body) = {
            let inner = self.lock();
            let sent = inner.notifications.get(index)?;
            (sent.url.clone(), sent.body.clone())
        };
        let mut headers = self.signature_headers(mode, body.as_bytes(), false);
        if probe {
            for (name, value) in headers.iter_mut() {
                if name == "wechatpay-signature" {
                    *value = format!("{}{value}", sign::SIGNTEST_PREFIX);
                }
            }
        }
        headers.push(("content-type".into(), "application/json".into()));
        let request = HttpRequest {
            method: HttpMethod::Post,
            url,
            headers,
            body: body.into_bytes(),
        };
        let status = match self.client.send(&request).await {
            Ok(response) => response.status,
            Err(_) => 0,
        };
        if !probe {
            let mut inner = self.lock();
            if let Some(sent) = inner.notifications.get_mut(index) {
                sent.attempts += 1;
                sent.last_status = status;
                sent.acknowledged |= status == 200 || status == 204;
            }
        }
        Some(status)
    }

    pub(super) async fn deliver(self: Arc<Self>, index: usize, mode: KeyMode) {
        let waits = std::iter::once(0).chain(NOTIFY_SCHEDULE_SECS.iter().map(|s| s * 1000));
        for wait_ms in waits {
            tokio::time::sleep(Duration::from_millis(
                wait_ms / u64::from(self.time_divisor),
            ))
            .await;
            match self.attempt(index, mode, false).await {
                Some(200 | 204) | None => return,
                Some(_) => {}
            }
        }
    }

    /// The shopper pays (scan, JSAPI confirmation, H5 cashier or payment-code password).
    pub(super) fn pay(
        self: &Arc<Self>,
        control: &ControlOrder,
    ) -> Result<Value, (StatusCode, String)> {
        let now = OffsetDateTime::now_utc();
        let snapshot = {
            let mut inner = self.lock();
            inner.counter += 1;
            let number = inner.counter;
            let order = inner
                .orders
                .values_mut()
                .find(|o| {
                    o.out_trade_no == control.out_trade_no
                        && control
                            .mchid
                            .as_ref()
                            .is_none_or(|m| *m == o.mchid || *m == o.owner())
                })
                .ok_or((StatusCode::NOT_FOUND, "no such order".to_owned()))?;
            match order.state_at(now) {
                TradeState::NotPay | TradeState::UserPaying => {}
                TradeState::Closed => {
                    return Err((StatusCode::CONFLICT, "the order is closed".to_owned()));
                }
                TradeState::Success | TradeState::Refund => {
                    return Err((StatusCode::CONFLICT, "already paid".to_owned()));
                }
                TradeState::PayError => {
                    return Err((StatusCode::CONFLICT, "the payment failed".to_owned()));
                }
            }
            order.state = TradeState::Success;
            order.paid_at = Some(now);
            order.transaction_id = Some(format!("4200{}{:014}", now.unix_timestamp(), number));
            order.clone()
        };
        // Payment codes (MICROPAY) have no notify_url: the cashier polls.
        if let Some(url) = snapshot.notify_url.clone().filter(|_| control.notify) {
            let plain = snapshot.transaction_json(now);
            self.notify(
                &snapshot,
                url,
                "TRANSACTION.SUCCESS",
                "支付成功",
                "transaction",
                &plain,
            );
        }
        Ok(json!({
            "out_trade_no": snapshot.out_trade_no,
            "transaction_id": snapshot.transaction_id,
            "trade_state": snapshot.state.as_str(),
        }))
    }
}
