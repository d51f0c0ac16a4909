#!/usr/bin/env bash
# `moongate reconcile` beside an equivalent polars script, on the same files, alternately.
#
#   scripts/reconcile-vs-polars.sh [ROUNDS] [LINES]      (defaults: 5 rounds, 1,000,000 lines)
#
# Builds the reconcile bench's ledger and WeChat Pay bill once (kept in target/recon-bench and
# reused), exports the ledger's payments to CSV for polars (not timed), installs polars 2.1.0
# into target/polars-venv (skipped with a message if it cannot be installed), then times both
# whole processes (wall and peak RSS) round after round and prints median (min–max) and the
# ratio. The polars script reads the needed columns, joins bill and ledger on out_trade_no
# (full join) and counts the categories; Moongate does more (SHA-256 of the raw file, control
# totals, fees, the drift window, storing the run and its breaks, three reports).
set -euo pipefail
cd "$(dirname "$0")/.."
ROUNDS="${1:-5}"
LINES="${2:-1000000}"
WORK="$PWD/target/recon-bench"
mkdir -p "$WORK"

echo "== building the files (once) and the release binary"
MOONGATE_BENCH_DIR="$WORK" cargo bench -q --bench reconcile -- "$LINES" | tail -3
BIN="$PWD/target/release/moongate"
[ -x "$BIN" ] || cargo build -q --release --bin moongate

if [ ! -f "$WORK/ledger-$LINES.csv" ]; then
  python3 - "$WORK/ledger.db" "$WORK/ledger-$LINES.csv" <<'PY'
import csv, sqlite3, sys
conn = sqlite3.connect(sys.argv[1])
with open(sys.argv[2], "w", newline="") as out:
    w = csv.writer(out)
    w.writerow(["id", "amount", "paid_at"])
    for row in conn.execute("SELECT id, amount, paid_at FROM payments WHERE status = 'succeeded'"):
        w.writerow(row)
PY
fi

VENV="$PWD/target/polars-venv"
POLARS=1
if [ ! -x "$VENV/bin/python" ] || ! "$VENV/bin/python" -c "import polars" 2>/dev/null; then
  if ! { python3 -m venv "$VENV" && "$VENV/bin/pip" install -q "polars==2.1.0"; } >/dev/null 2>&1; then
    echo "polars could not be installed (no registry?): timing Moongate alone"
    POLARS=0
  fi
fi

cat > "$WORK/polars_recon.py" <<'PY'
import sys
import polars as pl

bill, ledger = sys.argv[1], sys.argv[2]
cells = {"商户订单号": "order", "交易状态": "state", "订单金额": "amount"}
lines = (
    pl.scan_csv(bill, infer_schema=False, truncate_ragged_lines=True, quote_char=None)
    .select([pl.col(k).str.strip_chars_start("`").alias(v) for k, v in cells.items()])
    .filter(pl.col("state").is_in(["SUCCESS", "REFUND"]))
)
paid = lines.filter(pl.col("state") == "SUCCESS").with_columns(
    (pl.col("amount").cast(pl.Float64) * 100).round().cast(pl.Int64).alias("amount")
)
book = pl.scan_csv(ledger, schema={"id": pl.String, "amount": pl.Int64, "paid_at": pl.Int64})
joined = paid.join(book, left_on="order", right_on="id", how="full", coalesce=False)
both = pl.col("order").is_not_null() & pl.col("id").is_not_null()
counts = joined.select(
    matched=(both & (pl.col("amount") == pl.col("amount_right"))).sum(),
    amount_mismatch=(both & (pl.col("amount") != pl.col("amount_right"))).sum(),
    missing_in_ledger=pl.col("id").is_null().sum(),
    missing_in_provider=pl.col("order").is_null().sum(),
).collect()
duplicates = paid.group_by("order").len().filter(pl.col("len") > 1).select(pl.len()).collect()
refunds = lines.filter(pl.col("state") == "REFUND").select(pl.len()).collect()
print(counts.to_dicts()[0], "duplicates", duplicates.item(), "refund lines", refunds.item())
PY

timed() { # prints "seconds peak_kb" for one command
  local f
  f=$(mktemp)
  /usr/bin/time -o "$f" -f "%e %M" "$@" >/dev/null 2>&1 || { echo "failed: $*" >&2; exit 1; }
  tail -1 "$f"
  rm -f "$f"
}

MOON=(); MOON_KB=(); POL=(); POL_KB=()
for round in $(seq 1 "$ROUNDS"); do
  rm -rf "$WORK/out-vs"
  read -r s kb < <(timed "$BIN" reconcile --config "$WORK/moongate.toml" --merchant bench \
    --account wechat --date 2026-11-21 --statement "$WORK/bill.csv" --out "$WORK/out-vs")
  MOON+=("$s"); MOON_KB+=("$kb")
  line="round $round: moongate ${s} s, ${kb} KB"
  if [ "$POLARS" = 1 ]; then
    read -r s kb < <(timed "$VENV/bin/python" "$WORK/polars_recon.py" "$WORK/bill.csv" "$WORK/ledger-$LINES.csv")
    POL+=("$s"); POL_KB+=("$kb")
    line="$line; polars ${s} s, ${kb} KB"
  fi
  echo "$line"
done
if [ "$POLARS" = 1 ]; then
  echo "polars' answer: $("$VENV/bin/python" "$WORK/polars_recon.py" "$WORK/bill.csv" "$WORK/ledger-$LINES.csv")"
fi

python3 - "${MOON[*]}" "${MOON_KB[*]}" "${POL[*]:-}" "${POL_KB[*]:-}" <<'PY'
import statistics, sys
def parse(s): return [float(x) for x in s.split()] if s.strip() else []
moon, moon_kb, pol, pol_kb = (parse(a) for a in sys.argv[1:5])
def show(xs, unit, scale=1.0):
    xs = [x / scale for x in xs]
    return f"{statistics.median(xs):.2f} {unit} ({min(xs):.2f}–{max(xs):.2f})"
print(f"moongate reconcile: wall {show(moon, 's')}, peak {show(moon_kb, 'MB', 1024)}")
if pol:
    print(f"polars 2.1.0:       wall {show(pol, 's')}, peak {show(pol_kb, 'MB', 1024)}")
    ratios = [m / p for m, p in zip(moon, pol)]
    print(f"moongate ÷ polars (same round): wall {show(ratios, '×')}; "
          f"peak memory {statistics.median(moon_kb) / statistics.median(pol_kb):.2f} ×")
PY
