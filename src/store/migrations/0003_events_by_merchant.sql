-- A merchant's events, newest first (GET /v1/events, POST /v1/events/resend).
CREATE INDEX events_by_merchant ON events (merchant_id, seq);
