#!/usr/bin/env python3
"""Signs and sends one Moongate API request (standard library only).

    python3 examples/moongate_request.py POST /v1/payments '{"amount":100,...}'
"""
import hashlib, hmac, json, os, secrets, sys, time, urllib.error, urllib.request

def call(method, path, body=b"", idempotency_key=None):
    url = os.environ.get("MOONGATE_URL", "http://127.0.0.1:8080")
    key_id = os.environ.get("MOONGATE_KEY_ID", "demo_shop_k1")
    with open(os.environ.get("MOONGATE_SECRET_FILE", "fixtures/demo/shop-key.secret"), "rb") as f:
        secret = f.read().rstrip(b"\n")
    ts, nonce = str(int(time.time())), secrets.token_hex(16)
    canonical = "\n".join([method, path, ts, nonce, hashlib.sha256(body).hexdigest()]) + "\n"
    headers = {
        "Moongate-Key-Id": key_id, "Moongate-Timestamp": ts, "Moongate-Nonce": nonce,
        "Moongate-Signature": hmac.new(secret, canonical.encode(), hashlib.sha256).hexdigest(),
        "Content-Type": "application/json",
    }
    if method == "POST":
        headers["Idempotency-Key"] = idempotency_key or secrets.token_hex(12)
    request = urllib.request.Request(url + path, data=body if method == "POST" else None, method=method, headers=headers)
    try:
        with urllib.request.urlopen(request) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())

if __name__ == "__main__":
    status, payload = call(sys.argv[1], sys.argv[2], sys.argv[3].encode() if len(sys.argv) > 3 else b"")
    print(status, json.dumps(payload, ensure_ascii=False, indent=2))
