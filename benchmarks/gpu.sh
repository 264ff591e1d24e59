#!/usr/bin/env bash
# The benchmarks on one CUDA GPU, in one go, in under 9 minutes (one command on a lent GPU machine may run 10).
#
#   1. correctness: every case of the CUDA grid (BERT, GPT-2, T5; tiny/small/base, 128/512 tokens, fp32, bf16),
#      each minibert and transformers variant against transformers sdpa, nothing timed; stops at the first
#      disagreement (exit status 1). At most CHECK_S seconds (default 120); if that is not enough the script
#      goes on, since every case is checked again before it is timed.
#   2. the CUDA grid (gated case by case), the tokenizer comparison, the plots. No new case starts after GRID_S
#      seconds (default 330); the rest are listed as skipped. BERT-base comes first, with GPT-2's and T5's training
#      step at the base size (128 tokens, bf16), then the unpadded-attention comparison, the sequence-length sweep
#      and torch.compile, the rest of GPT-2's and T5's cases, the small models last, so a short budget cuts the
#      least informative cases. results.json is rewritten after every case: a run cut short keeps its figures.
#
# Results: $OUT if set, else benchmarks/results/$BENCH_DEVICE (results.json, results.md, PNGs, log.txt; the check
# in check/). That directory is claimed by the grid's `python -m benchmarks --out` as a benchmark run: it must be
# new, empty or an earlier benchmark run's, and nothing is put in it before that claim, so the check and both logs
# are made in a scratch directory first and moved in at the end (the run records log.txt and check/ as its own).
# A rehearsal of the script itself on any machine (the tests run it): BENCH_DEVICE=cpu BENCH_GRID=quick.
set -euo pipefail
cd "$(dirname "$0")/.."
DEVICE="${BENCH_DEVICE:-cuda}"
GRID="${BENCH_GRID:-cuda}"
PYTHON="${PYTHON:-python}"
CHECK_S="${CHECK_S:-120}"
GRID_S="${GRID_S:-330}"
DEST="${OUT:-benchmarks/results/$DEVICE}"
WORK="$(mktemp -d "${TMPDIR:-/tmp}/minibert-bench.XXXXXX")"
export PYTHONUNBUFFERED=1
start=$SECONDS

if [ "$DEVICE" = cuda ]; then
    "$PYTHON" -c "import torch; assert torch.cuda.is_available(), 'no CUDA GPU visible to torch'; \
print('GPU:', torch.cuda.get_device_name(0), '| torch', torch.__version__, '| CUDA', torch.version.cuda)"
fi

echo "== 1/2 correctness (fp32 and bf16, every case, no timing)"
check=0
timeout "$CHECK_S" "$PYTHON" -m benchmarks --device "$DEVICE" --grid "$GRID" --check-only --no-compile --no-tokenizers --no-plots \
    --out "$WORK/check" 2>&1 | tee "$WORK/check.log" || check=$?
if [ "$check" -eq 124 ]; then
    echo "the check ran out of time; going on: every case is checked again before it is timed"
elif [ "$check" -ne 0 ]; then
    echo "correctness check failed (status $check): nothing is timed; the check is in $WORK"
    exit "$check"
fi

echo "== 2/2 the whole $GRID grid on $DEVICE"
status=0
timeout $((GRID_S + 150)) "$PYTHON" -m benchmarks --device "$DEVICE" --grid "$GRID" --time-budget "$GRID_S" --out "$DEST" 2>&1 \
    | tee "$WORK/log.txt" || status=$?
if [ "$status" -ne 0 ] && [ -f "$DEST/results.json" ]; then
    echo "the grid stopped early (status $status); writing the report from what was measured"
    "$PYTHON" -m benchmarks --report-only --out "$DEST" || true
fi
if [ -f "$DEST/.minibert-run" ] && [ ! -e "$DEST/check" ] && [ ! -e "$DEST/log.txt" ]; then
    if [ -d "$WORK/check" ]; then
        mv "$WORK/check.log" "$WORK/check/log.txt"
        mv "$WORK/check" "$DEST/check"
    fi
    mv "$WORK/log.txt" "$DEST/log.txt"
    rm -rf "$WORK"
else
    echo "the logs and the check stay in $WORK ($DEST is not this run's benchmark directory)"
fi
echo "== done in $((SECONDS - start)) s: $DEST/results.md"
exit "$status"
