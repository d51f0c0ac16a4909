//! Merchant webhooks from the durable outbox.
//!
//! Every ledger change wrote an event and an outbox row in its own transaction; this worker
//! delivers them: `POST` the event JSON with
//! `Moongate-Signature: t=<unix>,v1=<hex>[,v1=<hex>…]`, one HMAC-SHA256 over `"<t>.<body>"` per
//! active secret (so secrets rotate without downtime). A 2xx answer delivers; anything else is
//! retried with jittered exponential backoff until `max_attempts`, then parked (kept, visible).
//! Delivery is at least once and not ordered; receivers dedupe on the event id.

use std::sync::Arc;
use std::time::Duration;

use moongate_contract::{HttpMethod, HttpRequest};
use tracing::{info, warn};

use crate::auth;
use crate::config::Webhook;
use crate::gateway::Gateway;
use crate::metrics::OutcomeLabels;
use crate::store::OutboxItem;

/// The `Moongate-Signature` header value for a body at time `t`.
pub fn signature_header(secrets: &[&[u8]], t: i64, body: &str) -> String {
    let signed = format!("{t}.{body}");
    let mut out = format!("t={t}");
    for secret in secrets {
        out.push_str(",v1=");
        out.push_str(&auth::sign(secret, &signed));
    }
    out
}

/// Backoff before attempt number `attempts + 1`: initial × 2^attempts, capped, with ±20 % jitter.
pub fn backoff(initial_ms: u64, max_ms: u64, attempts: u32, jitter_unit: u8) -> Duration {
    let exponential = initial_ms.saturating_mul(1_u64 << attempts.min(30));
    let base = exponential.min(max_ms);
    // jitter_unit in 0..=255 maps to a factor in [0.8, 1.2].
    let jitter = base / 5 * u64::from(jitter_unit) / 127;
    Duration::from_millis(base - base / 5 + jitter)
}

/// A uniform jitter unit in 0..=254 from the system's random source (so retries of many
/// events spread over the whole ±20 %, early and late alike).
fn jitter_unit() -> u8 {
    let mut byte = [0_u8; 2];
    let _ = ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut byte);
    (u16::from_le_bytes(byte) % 255) as u8
}

/// Sends one event to its merchant's endpoint and records the attempt.
async fn deliver(gw: &Gateway, item: &OutboxItem, webhook: &Webhook) {
    let config = gw.config();
    let settings = &config.webhooks;
    // The receiver checks `t` against its own clock.
    let t = gw.clock.wall().unix_timestamp();
    let secrets: Vec<&[u8]> = webhook
        .secrets
        .iter()
        .map(|s| s.expose().as_slice())
        .collect();
    let request = HttpRequest {
        method: HttpMethod::Post,
        url: webhook.url.clone(),
        headers: vec![
            ("content-type".into(), "application/json".into()),
            ("moongate-event-id".into(), item.event_id.clone()),
            (
                "moongate-signature".into(),
                signature_header(&secrets, t, &item.body),
            ),
            ("user-agent".into(), "Moongate-Webhooks/1".into()),
        ],
        body: item.body.clone().into_bytes(),
    };
    let outcome = gw.webhooks.send(&request).await;
    let error = match outcome {
        Ok(response) if (200..300).contains(&response.status) => None,
        Ok(response) => Some(format!("HTTP {}", response.status)),
        Err(error) => Some(error.to_string()),
    };
    let outcome = match (&error, item.attempts + 1 >= settings.max_attempts) {
        (None, _) => "delivered",
        (Some(_), false) => "failed",
        (Some(_), true) => "parked",
    };
    gw.metrics
        .webhook_deliveries
        .get_or_create(&OutcomeLabels {
            source: item.merchant_id.clone(),
            outcome: outcome.to_owned(),
        })
        .inc();
    let result = match error {
        None => {
            info!(event_id = %item.event_id, "webhook delivered");
            gw.store
                .webhook_attempted(item.event_seq, gw.now(), true, None, None)
                .await
        }
        Some(error) => {
            let attempts = item.attempts + 1;
            let next = if attempts >= settings.max_attempts {
                warn!(event_id = %item.event_id, %error, "webhook parked after its last attempt");
                None
            } else {
                let wait = backoff(
                    settings.initial_backoff_ms,
                    settings.max_backoff_ms,
                    item.attempts,
                    jitter_unit(),
                );
                Some(gw.now() + wait)
            };
            gw.store
                .webhook_attempted(item.event_seq, gw.now(), false, next, Some(error))
                .await
        }
    };
    if let Err(error) = result {
        warn!(%error, "could not record a webhook attempt");
    }
}

/// The attempt logged for an event parked because its merchant has no webhook.
const NO_ENDPOINT: &str = "no webhook configured";

/// How often the worker looks for due events when nothing wakes it sooner.
const POLL: Duration = Duration::from_millis(100);

/// Deliveries in flight at once, per instance.
const IN_FLIGHT: usize = 64;

/// Deliveries in flight at once to one merchant: a merchant whose endpoint hangs holds these
/// and nothing else, so every other merchant's webhooks go on.
pub const PER_MERCHANT: usize = 4;

/// Polls the outbox forever. Each claim takes what is due, oldest first but at most
/// [`PER_MERCHANT`] of one merchant and none of a merchant that already has that many in
/// flight, leased to this instance (no other instance's worker sends it meanwhile). Each
/// delivery runs on its own; the worker claims again as soon as slots free up, without waiting
/// for a slow one. The lease outlasts one delivery's connect and response timeouts, so a
/// crashed instance's claims come back to every worker within seconds.
pub async fn run(gw: Arc<Gateway>) {
    let mut sends: tokio::task::JoinSet<String> = tokio::task::JoinSet::new();
    let mut in_flight: std::collections::HashMap<String, usize> = Default::default();
    let mut parked_at: Option<std::time::Instant> = None;
    loop {
        // Count the deliveries that finished.
        while let Some(done) = sends.try_join_next() {
            if let Ok(merchant) = done {
                release(&mut in_flight, &merchant);
            }
        }
        let free = IN_FLIGHT.saturating_sub(sends.len());
        let mut claimed = 0;
        if free > 0 {
            let now = gw.now();
            let timeout_ms = gw.config().webhooks.timeout_ms;
            let lease = Duration::from_millis(timeout_ms.saturating_mul(2).saturating_add(5_000));
            // Merchants without an endpoint have everything due parked at once (it stays in
            // the log, and can be resent once an endpoint is configured).
            let config = gw.config();
            let without: Vec<String> = config
                .merchants
                .values()
                .filter(|m| m.webhook.is_none())
                .map(|m| m.id.clone())
                .collect();
            // Once a poll interval: the loop turns at every finished delivery, and the ledger
            // writer need not take a parking write each time.
            let park_due = parked_at.is_none_or(|at| at.elapsed() >= POLL);
            if park_due {
                parked_at = Some(std::time::Instant::now());
            }
            if park_due
                && !without.is_empty()
                && let Err(error) = gw
                    .store
                    .park_merchants(without.clone(), now, NO_ENDPOINT.into())
                    .await
            {
                warn!(%error, "parking undeliverable events failed");
            }
            let busy: Vec<String> = in_flight
                .iter()
                .filter(|(_, n)| **n >= PER_MERCHANT)
                .map(|(m, _)| m.clone())
                .chain(without)
                .collect();
            match gw
                .store
                .due_webhooks(
                    now,
                    now + lease,
                    u32::try_from(free).unwrap_or(u32::MAX),
                    PER_MERCHANT as u32,
                    &busy,
                )
                .await
            {
                Ok(items) => {
                    claimed = items.len();
                    // Each event goes to its merchant's endpoint as the config has it now;
                    // a merchant the config no longer has, or that lost its endpoint since,
                    // has its events parked together.
                    let mut undeliverable = Vec::new();
                    for item in items {
                        let Some(merchant) = config
                            .merchants
                            .get(&item.merchant_id)
                            .filter(|m| m.webhook.is_some())
                            .cloned()
                        else {
                            undeliverable.push(item.event_seq);
                            continue;
                        };
                        *in_flight.entry(item.merchant_id.clone()).or_default() += 1;
                        let gw = Arc::clone(&gw);
                        sends.spawn(async move {
                            if let Some(webhook) = &merchant.webhook {
                                deliver(&gw, &item, webhook).await;
                            }
                            item.merchant_id
                        });
                    }
                    if !undeliverable.is_empty()
                        && let Err(error) = gw
                            .store
                            .park_undeliverable(undeliverable, gw.now(), NO_ENDPOINT.into())
                            .await
                    {
                        warn!(%error, "parking undeliverable events failed");
                    }
                }
                Err(error) => warn!(%error, "outbox unavailable"),
            }
        }
        if claimed > 0 && claimed == free {
            // There may be more due: claim again at once.
            continue;
        }
        // Nothing more due (or no slot): wait for a delivery to finish, or the next poll.
        tokio::select! {
            Some(done) = sends.join_next(), if !sends.is_empty() => {
                if let Ok(merchant) = done {
                    release(&mut in_flight, &merchant);
                }
            }
            _ = tokio::time::sleep(POLL) => {}
        }
    }
}

fn release(in_flight: &mut std::collections::HashMap<String, usize>, merchant: &str) {
    if let Some(n) = in_flight.get_mut(merchant) {
        *n = n.saturating_sub(1);
        if *n == 0 {
            in_flight.remove(merchant);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_is_capped_and_jittered() {
        assert_eq!(backoff(1000, 60_000, 0, 127), Duration::from_millis(1000));
        assert_eq!(backoff(1000, 60_000, 3, 127), Duration::from_millis(8000));
        assert_eq!(
            backoff(1000, 60_000, 30, 127),
            Duration::from_millis(60_000)
        );
        assert_eq!(backoff(1000, 60_000, 0, 0), Duration::from_millis(800));
        assert!(backoff(1000, 60_000, 0, 254) <= Duration::from_millis(1200));
    }

    #[test]
    fn jitter_spreads_early_and_late() {
        let units: Vec<u8> = (0..2000).map(|_| jitter_unit()).collect();
        let early = units.iter().filter(|u| **u < 127).count();
        let late = units.iter().filter(|u| **u > 127).count();
        // Both halves of the ±20 % are used (the old id-derived jitter was always early).
        assert!(early > 800 && late > 800, "early {early}, late {late}");
        assert!(units.iter().all(|u| *u <= 254));
    }

    #[test]
    fn the_default_schedule_lasts_at_least_three_days() {
        let defaults = crate::config::WebhookSection::default();
        // The shortest schedule (every jitter at its lowest) still spans three days.
        let total: Duration = (0..defaults.max_attempts.saturating_sub(1))
            .map(|attempt| {
                backoff(
                    defaults.initial_backoff_ms,
                    defaults.max_backoff_ms,
                    attempt,
                    0,
                )
            })
            .sum();
        assert!(total >= Duration::from_secs(3 * 24 * 3600), "{total:?}");
    }

    #[test]
    fn one_signature_per_secret() {
        let header = signature_header(&[b"a", b"b"], 5, "{}");
        let parts: Vec<&str> = header.split(',').collect();
        assert_eq!(parts.len(), 3);
        assert_eq!(parts[0], "t=5");
        assert_eq!(parts[1], format!("v1={}", auth::sign(b"a", "5.{}")));
        assert_eq!(parts[2], format!("v1={}", auth::sign(b"b", "5.{}")));
    }
}
