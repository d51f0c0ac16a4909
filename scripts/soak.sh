#!/usr/bin/env bash
# Long crash-and-fault soak: thousands of payments through a real `moongate serve`, killed with
# SIGKILL at random moments, against the strict sandboxes with faults on; prints the counts.
# CI runs the same harness with 2,000 payments (tests/crash.rs). Usage:
#   scripts/soak.sh [payments] [seed]
set -euo pipefail
cd "$(dirname "$0")/.."
export MOONGATE_CRASH_PAYMENTS="${1:-3000}"
if [ -n "${2:-}" ]; then export MOONGATE_CRASH_SEED="$2"; fi
cargo test --release --test crash -- --nocapture
