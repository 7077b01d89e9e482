#!/usr/bin/env bash
# Training seeds on one finished run's data: copy a workspace's ingest, generate and curate stages, then for
# each seed train (--set train.seed=S plus the settings given) and score the student on gold. One JSON line
# per seed in bench/results/train_seeds-NAME.jsonl (gold metric, kept step, the dev curve, seconds).
#   bench/train_seeds.sh WORKSPACE NAME [--set key=value ...]
#   e.g. bench/train_seeds.sh .demo/devdocs-router lr1e3 --set train.lr=0.001
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
src=$(cd "$1" && pwd); name=$2; shift 2
run=$(ls "$src/runs")
ws=$(mktemp -d "${TMPDIR:-/tmp}/train-seeds-$name.XXXX")
out="$repo/bench/results/train_seeds-$name.jsonl"; : > "$out"
cp -r "$src"/{taskling.yaml,gold.jsonl,docs,.taskling} "$ws"/
mkdir -p "$ws/runs/$run/round-0"
for s in ingest generate curate; do cp -r "$src/runs/$run/round-0/$s" "$ws/runs/$run/round-0/"; done
cd "$ws"
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 PYTHONPATH="$repo/src"
for seed in ${SEEDS:-0 1 2}; do
  t0=$(date +%s)
  "$repo/.venv/bin/taskling" train --set train.seed="$seed" "$@" > "train-$seed.log" 2>&1
  t1=$(date +%s)
  "$repo/.venv/bin/taskling" evaluate --set train.seed="$seed" "$@" --set 'evaluate.models=[student]' \
    --set evaluate.constrained=false > "eval-$seed.log" 2>&1
  t2=$(date +%s)
  "$repo/.venv/bin/python" - "$seed" $((t1 - t0)) $((t2 - t1)) "$run" "$*" >> "$out" <<'PY'
import json, sys
seed, train_s, eval_s, run, sets = sys.argv[1:6]
ev = json.load(open(f"runs/{run}/round-0/evaluate/manifest.json"))["results"]["gold"]["student"]
sel = json.load(open(f"runs/{run}/round-0/train/manifest.json"))["selection"]
print(json.dumps({"seed": int(seed), "settings": sets, "gold": ev["metric"], "n": ev["n"], "kept_step": sel["kept_step"],
                  "dev_curve": [[c["step"], c["exact"]] for c in sel["curve"]], "train_s": int(train_s), "eval_s": int(eval_s)}))
PY
  tail -1 "$out"
done
echo "workspace: $ws"
