#!/usr/bin/env bash
# Reproduce the shipped checkpoint (checkpoints/chatvla2-demo) and the paper's two ablations at this
# scale, each with the same budget, then evaluate them on both splits of the math game.
#
#     bash benchmarks/train_demo_model.sh [DATA_DIR] [RUNS_DIR]      (defaults: data/demo, runs/demo)
#
# Steps (the 2-core CPU figures are in checkpoints/chatvla2-demo/TRAINING.md):
#   1. data: 600 in-domain math-game episodes (seeds 100000.., disjoint from the evaluation's
#      seeds 0..) and 3,000 math image-text samples in each split's look (chatvla2/sim/tasks/image_text.py: both
#      splits' operands and every operator, in that split's fonts, boards and tables): ~8 min, 6 GB;
#   2. the recipe: stage 1 co-trains everything (image-text : robot = 1:3), stage 2 trains the
#      action head on robot frames with the VLM frozen;
#   3. ablations, the same steps and batch: "o-only" = stage 2 from the same stage-1 model with
#      the head conditioned on o in every layer (--reason-start-layer 4 = the head's depth);
#      "robot-only" = stage 1 without the image-text data, then stage 2;
#   4. eval: `chatvla2 eval` of each on both splits (fast mode), JSON lines in RUNS/eval/, and
#      one table (benchmarks/eval_table.py).
# One torch thread per run (OMP_NUM_THREADS=1): at this model size a step was faster on one thread
# than on two, so two runs go side by side on the two cores. A run that was interrupted continues
# where it stopped (--resume).
set -euo pipefail
DATA=${1:-data/demo}
RUNS=${2:-runs/demo}
STEPS1=${STEPS1:-10000}
STEPS2=${STEPS2:-3000}
EPISODES=${EPISODES:-10}
B=${CHATVLA2:-.venv/bin/chatvla2}
export OMP_NUM_THREADS=1
mkdir -p "$DATA" "$RUNS/eval"

gen() { [ -d "$DATA/$1" ] || $B sim generate --size 112x140 --out "$DATA/$1" "${@:2}"; }
gen math_in --task math_game --split in_domain --episodes 600 --seed 100000
gen it_in --task math_game --split in_domain --episodes 0 --image-text 3000 --image-text-kinds math --seed 100000
gen it_open --task math_game --split open_world --episodes 0 --image-text 3000 --image-text-kinds math --seed 100000

train() { if [ -f "$RUNS/$1/training_state.pt" ]; then set -- "$@" --resume; fi
  $B train --out "$RUNS/$1" --no-progress "${@:2}"; }
ROBOT="--data $DATA/math_in"
IMAGE_TEXT="--data $DATA/it_in --data $DATA/it_open"
# Stage 1 of the recipe and of the robot-only ablation, side by side.
train stage1 --config demo --stage 1 $ROBOT $IMAGE_TEXT --steps "$STEPS1" --seed 0 &
train robot_only_stage1 --config demo --stage 1 $ROBOT --steps "$STEPS1" --seed 0 &
wait
train stage2 --stage 2 --init "$RUNS/stage1" $ROBOT --steps "$STEPS2" --seed 0 &
train o_only_stage2 --stage 2 --init "$RUNS/stage1" $ROBOT --steps "$STEPS2" --seed 0 --reason-start-layer 4 &
wait
train robot_only_stage2 --stage 2 --init "$RUNS/robot_only_stage1" $ROBOT --steps "$STEPS2" --seed 0

for run in stage2 o_only_stage2 robot_only_stage2; do
  for split in in_domain open_world; do
    $B eval --task math_game --split "$split" --episodes "$EPISODES" --seed 0 --checkpoint "$RUNS/$run/checkpoint" \
      --json-out "$RUNS/eval/$run-$split.json" > "$RUNS/eval/$run-$split.txt" &
  done
  wait
done
.venv/bin/python benchmarks/eval_table.py "$RUNS"/eval/*.json
