#!/usr/bin/env bash
# Signs and sends one Moongate API request with openssl + curl.
#   examples/moongate-request.sh METHOD PATH [JSON_BODY]
# Environment (defaults are the demo merchant):
#   MOONGATE_URL (http://127.0.0.1:8080), MOONGATE_KEY_ID (demo_shop_k1),
#   MOONGATE_SECRET_FILE (fixtures/demo/shop-key.secret), IDEMPOTENCY_KEY (random on POST)
set -euo pipefail
method="$1"; path="$2"; body="${3:-}"
url="${MOONGATE_URL:-http://127.0.0.1:8080}"
key_id="${MOONGATE_KEY_ID:-demo_shop_k1}"
secret="$(tr -d '\n' < "${MOONGATE_SECRET_FILE:-fixtures/demo/shop-key.secret}")"
ts="$(date +%s)"
nonce="$(openssl rand -hex 16)"
body_hash="$(printf '%s' "$body" | openssl dgst -sha256 -hex | sed 's/^.* //')"
signature="$(printf '%s\n%s\n%s\n%s\n%s\n' "$method" "$path" "$ts" "$nonce" "$body_hash" \
  | openssl dgst -sha256 -hmac "$secret" -hex | sed 's/^.* //')"
args=(-sS -X "$method" "$url$path"
  -H "Moongate-Key-Id: $key_id" -H "Moongate-Timestamp: $ts"
  -H "Moongate-Nonce: $nonce" -H "Moongate-Signature: $signature")
if [ "$method" = "POST" ]; then
  args+=(-H "Idempotency-Key: ${IDEMPOTENCY_KEY:-$(openssl rand -hex 12)}" -H "Content-Type: application/json" --data-binary "$body")
fi
curl "${args[@]}"
echo
