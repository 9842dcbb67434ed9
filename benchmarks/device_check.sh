#!/usr/bin/env bash
# The GPU check: one prepared run on a machine with an accelerator (e.g. the workplace's H200).
#
# That machine has its own python3 with jax (CUDA), flax, optax, orbax, chex, scipy, matplotlib,
# but not the rest of our stack, and no network. So, first, here (with a network):
#
#   bash benchmarks/device_check.sh --fetch     # wheels for Python 3.12 into .whl/ (ignored)
#
# then run this script there with .whl carried, e.g. with the device tool:
#   run(command="bash benchmarks/device_check.sh", carry=[".whl"], timeout_s=580)
#
# It prints and saves under $OUT: the devices, a GPU pass of the loss tests (the shard_map tests
# need 8 devices and are left out), benchmarks/losses.py and benchmarks/train.py on the GPU
# (JSON + a BENCHMARKS section each), benchmarks/heavy_losses.py and a subset of
# benchmarks/loss_in_step.py, benchmarks/seeds.py (3 seeds vmapped vs in turn: one step,
# then a whole `compare` in both --seeds_mode), and the main job (configs/focal.py) with its
# metrics. Each stage has its own time limit, so one that hangs does not take the others with it.
set -uo pipefail
cd "$(dirname "$0")/.."

WHEELS=(
  ml_collections==1.1.0 tensorflow-datasets==4.9.10 grain==0.2.18 array_record==0.8.6
  tensorboardX==2.6.5 importlib_resources==7.1.0 dm-tree==0.1.10 docstring_parser==0.18.0
  googleapis-common-protos==1.76.0 immutabledict==4.3.1 portpicker==1.6.0 simple-parsing==0.1.9
  tensorflow-metadata==1.21.0 termcolor==3.3.0 toml==0.10.2
)

if [[ "${1:-}" == "--fetch" ]]; then
  mkdir -p .whl
  platforms=()
  for p in manylinux_2_28_x86_64 manylinux_2_27_x86_64 manylinux_2_24_x86_64 \
    manylinux_2_17_x86_64 manylinux2014_x86_64 manylinux1_x86_64; do
    platforms+=(--platform "$p")
  done
  python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 \
    --implementation cp "${platforms[@]}" -d .whl "${WHEELS[@]}" || exit 1
  python3 -m pip wheel -q --no-deps -w .whl promise==2.3 || exit 1  # sdist only: build it here
  du -sh .whl
  exit 0
fi

OUT="${OUT:-/tmp/device_check}"
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 JAX_PLATFORMS=cuda,cpu  # cpu: checkify's error callback runs on the host
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
  --target /tmp/site .whl/*.whl || { echo "wheel install failed"; exit 1; }
export PYTHONPATH="$PWD:/tmp/site"
data=/tmp/tfds

# e.g. STAGES="devices loss_tests": run only those stages (default: all). All stages' limits add
# up to more than one device call allows (600 s): split them over calls, e.g. the speed issue's
# STAGES="devices train_benchmark heavy_losses loss_in_step main_job".
STAGES="${STAGES:-}"

stage() {  # stage NAME SECONDS COMMAND...: runs it, logs to $OUT/NAME.log, goes on on failure.
  local name=$1 limit=$2
  shift 2
  if [[ -n "$STAGES" && " $STAGES " != *" $name "* ]]; then return 0; fi
  echo "== $name"
  local start=$SECONDS
  timeout "$limit" "$@" 2>&1 | tee "$OUT/$name.log"
  echo "== $name: exit ${PIPESTATUS[0]} after $((SECONDS - start)) s" | tee -a "$OUT/stages.txt"
}

stage devices 60 python3 -c "import jax; print(jax.__version__, jax.devices())"
stage loss_tests 120 python3 -m pytest -q -p no:cacheprovider -x tests/test_losses_contract.py \
  tests/test_overlap.py tests/test_cross_entropy.py tests/test_focal.py -k "not shard_map"
stage loss_benchmark 150 python3 benchmarks/losses.py --repeats 20 \
  --json "$OUT/losses_gpu.json" --markdown "$OUT/BENCHMARKS_gpu.md"
stage train_benchmark 90 python3 benchmarks/train.py --data_dir "$data" \
  --json "$OUT/train_gpu.json" --markdown "$OUT/BENCHMARKS_gpu.md"
stage heavy_losses 90 python3 benchmarks/heavy_losses.py \
  --json "$OUT/heavy_losses_gpu.json" --markdown "$OUT/BENCHMARKS_gpu.md"
stage loss_in_step 180 python3 benchmarks/loss_in_step.py --data_dir "$data" --rounds 5 \
  --losses cross_entropy,dice,dice_focal,focal_tversky,lovasz,cldice,boundary,unified_focal \
  --json "$OUT/loss_in_step_gpu.json" --markdown "$OUT/BENCHMARKS_gpu.md"
stage seeds_benchmark 90 python3 benchmarks/seeds.py --seeds 3 --out "$OUT"
stage seeds_compare 240 python3 benchmarks/seeds.py --compare --seeds 3 --steps 100 \
  --workdir /tmp/seeds_compare --out "$OUT"
stage main_job 120 python3 launch.py --config=configs/focal.py --workdir=/tmp/run_focal \
  --config.data.data_dir="$data" --config.train.progress_bar=False
cp /tmp/run_focal/metrics.jsonl "$OUT/focal_metrics.jsonl" 2>/dev/null
cat "$OUT/stages.txt"
