#!/usr/bin/env bash
# The benchmarks on one CUDA GPU, in one go: under 15 minutes on an H100/H200.
#
#   1. correctness: every case of the CUDA grid (tiny/small/BERT-base, 128/512 tokens, fp32 and bf16 autocast),
#      each minibert and transformers variant against transformers sdpa, nothing timed; stops at the first
#      disagreement (exit status 1).                                                       about 2 minutes
#   2. the whole CUDA grid (each case is gated again before it is timed), the tokenizer comparison, the plots;
#      a time budget stops starting new cases so the script ends in time. BERT-base comes first, then the
#      unpadded-attention comparison, the sequence-length sweep and torch.compile, the small models last.  8-10 minutes
#
# Results: $OUT if set, else benchmarks/results/cuda (results.json, results.md, PNGs; the check in check/).
set -euo pipefail
cd "$(dirname "$0")/.."
DEST="${OUT:-benchmarks/results/cuda}"
mkdir -p "$DEST/check"
export PYTHONUNBUFFERED=1
start=$SECONDS

python -c "import torch; assert torch.cuda.is_available(), 'no CUDA GPU visible to torch'; \
print('GPU:', torch.cuda.get_device_name(0), '| torch', torch.__version__, '| CUDA', torch.version.cuda)"

echo "== 1/2 correctness (fp32 and bf16, every case, no timing)"
timeout 240 python -m benchmarks --device cuda --grid cuda --check-only --no-compile --no-tokenizers --no-plots \
    --out "$DEST/check" 2>&1 | tee "$DEST/check/log.txt"

echo "== 2/2 full CUDA grid"
status=0
timeout 600 python -m benchmarks --device cuda --grid cuda --time-budget 480 --out "$DEST" 2>&1 \
    | tee "$DEST/log.txt" || status=$?
if [ "$status" -ne 0 ] && [ -f "$DEST/results.json" ]; then
    echo "the grid stopped early (status $status); writing the report from what was measured"
    python -m benchmarks --report-only --out "$DEST" || true
fi
echo "== done in $((SECONDS - start)) s: $DEST/results.md"
exit "$status"
