#!/usr/bin/env bash
# Long mutation-fuzzing run of every parser that takes outside bytes (tests/fuzz.rs): WeChat Pay
# v2 XML, Authorization headers, notification envelopes and resources, signed answers; Alipay
# forms, notifications and response nodes; config files; API bodies and signature headers.
# CI runs each target briefly. Usage: scripts/fuzz.sh [iterations per target] [seed]
set -euo pipefail
cd "$(dirname "$0")/.."
export MOONGATE_FUZZ_ITERS="${1:-200000}"
if [ -n "${2:-}" ]; then export MOONGATE_FUZZ_SEED="$2"; fi
cargo test --release --test fuzz -- --nocapture
