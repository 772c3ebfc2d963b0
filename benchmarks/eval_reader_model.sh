#!/usr/bin/env bash
# Evaluate the reading demo model (issue 22) the way the README's table reports it: fresh seeds,
# >= 50 episodes a row, both tasks and both splits, the 95% interval beside each rate.
#
#     bash benchmarks/eval_reader_model.sh [RUNS_DIR] [SEED]        (default: runs/reader, seed 0)
#
# Rows (each `chatvla2 eval`, fast mode, the synchronous loop the calibration sweep uses):
#   reference   RUNS/stage2: the PyTorch model
#   fp32        its ONNX bundle at fp32 (cpu target): must equal the reference's success
#   auto        its bundle at the cpu target's auto plan, the one `make demo` runs: within 2 points
#   ablations   RUNS/o_only_stage2, RUNS/robot_only_stage2 (benchmarks/train_reader_model.sh --ablations),
#               where they exist
# Every policy plays the same episodes (seeds SEED .. SEED+EPISODES-1 of each split). SEED 0 is the
# documented evaluation; any other seed is one no test or document uses (the issue's unseen check).
# Writes RUNS/eval-SEED/<row>-<task>-<split>.json (and .txt), then one table per task
# (benchmarks/eval_table.py). EPISODES (default 50), JOBS (default 2: evaluations side by side,
# one torch/ONNX Runtime thread each) from the environment.
set -euo pipefail
RUNS=${1:-runs/reader}
SEED=${2:-0}
EPISODES=${EPISODES:-50}
JOBS=${JOBS:-2}
B=${CHATVLA2:-.venv/bin/chatvla2}
OUT="$RUNS/eval-$SEED"
export OMP_NUM_THREADS=1
mkdir -p "$OUT" "$RUNS/bundles"

[ -d "$RUNS/stage2/checkpoint" ] || { echo "no $RUNS/stage2/checkpoint: train it first (benchmarks/train_reader_model.sh)" >&2; exit 2; }
for plan in fp32 auto; do
  if [ ! -f "$RUNS/bundles/$plan/manifest.json" ]; then
    $B export --checkpoint "$RUNS/stage2/checkpoint" --target cpu --precision "$plan" --out "$RUNS/bundles/$plan" --force
  fi
done

rows=("reference --checkpoint $RUNS/stage2/checkpoint" "fp32 --bundle $RUNS/bundles/fp32 --threads 1" "auto --bundle $RUNS/bundles/auto --threads 1")
for ablation in o_only_stage2 robot_only_stage2; do
  if [ -d "$RUNS/$ablation/checkpoint" ]; then rows+=("$ablation --checkpoint $RUNS/$ablation/checkpoint"); fi
done

jobs=()
for row in "${rows[@]}"; do
  read -r name policy <<< "$row"
  for task in math_game toy_placement; do
    for split in in_domain open_world; do
      record="$OUT/$name-$task-$split.json"
      [ -f "$record" ] && continue  # done in an earlier invocation
      # shellcheck disable=SC2086  # $policy is the policy's options, split on purpose
      $B eval --task "$task" --split "$split" --episodes "$EPISODES" --seed "$SEED" $policy \
        --json-out "$record.partial" > "$OUT/$name-$task-$split.txt" && mv "$record.partial" "$record" &
      jobs+=($!)
      if [ "${#jobs[@]}" -ge "$JOBS" ]; then wait "${jobs[0]}"; jobs=("${jobs[@]:1}"); fi
    done
  done
done
wait
for task in math_game toy_placement; do
  files=()
  for row in "${rows[@]}"; do files+=("$OUT/${row%% *}-$task-in_domain.json" "$OUT/${row%% *}-$task-open_world.json"); done
  .venv/bin/python benchmarks/eval_table.py "${files[@]}" --names "reference=ChatVLA-2 reader, PyTorch" \
    "fp32=bundle fp32" "auto=bundle, cpu auto plan (make demo)" "o_only=ablation: o in all head layers" \
    "robot_only=ablation: robot data only in stages 1-2"
done
