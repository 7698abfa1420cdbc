#!/usr/bin/env bash
# The image branch trained on a GPU host, measured in one command (docs/benchmarks.md).
#
# On a bare host with Python 3.12, NumPy, pandas, Pillow, scikit-learn, JAX and PyTorch but no
# package index: makes a venv on top of the host's packages and installs into it, offline, the
# wheels of bench/gpu-requirements.txt from bench/wheels/ (`make gpu-wheels` fills it here;
# the folder travels with the working tree) and the project itself. Then: writes 20,000
# synthetic 500x500 photos (`rakuten data synth`), times photo decoding with 1 to 16 threads
# (bench_image_pipeline.py), and trains the image branch for 2 epochs at 224 px in mixed
# precision under KERAS_BACKEND=jax, then torch (the small network, and EfficientNetB0 from
# scratch), then the small network under the first backend again, reading a photo cache.
# Writes to $OUT (default bench/results/gpu): gpu_<backend>.json (photos/s per epoch, input wait
# share, nvidia-smi utilisation), image_pipeline.json, gpus.txt, summary.md.
#
# Usage: bench/bench_gpu.sh [--cpu-smoke] [--python PY] [--backends "jax torch"]
#   --cpu-smoke  tiny sizes (96 photos of 64 px, trained at 32 px), for a CPU (tests run it)
#   --python PY  use this interpreter as it is (it has the project installed): no venv, no wheels
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
out=${OUT:-$root/bench/results/gpu}
smoke=0 python="" backends="jax torch"
while (($#)); do
    case $1 in
        --cpu-smoke) smoke=1 ;;
        --python) python=$2; shift ;;
        --backends) backends=$2; shift ;;
        -h | --help) sed -n '2,19p' "$0"; exit 0 ;;
        *) echo "bench_gpu.sh: unknown option $1 (see --help)" >&2; exit 2 ;;
    esac
    shift
done
if ((smoke)); then
    photos=96 photo_size=64 size=32 batch=8 pipeline_photos=64 threads="1 2"
    limit=1800  # a shared CI machine may compile slowly
else
    photos=20000 photo_size=500 size=224 batch=128 pipeline_photos=3000 threads="1 2 4 8 16"
    limit=240  # seconds per backend: a hung run still leaves time for the others
fi
log() { echo "[bench_gpu $(date +%T)] $*" >&2; }
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
mkdir -p "$out"
cd "$root"

if [[ -z $python ]]; then
    wheels=$root/bench/wheels
    if [[ ! -d $wheels ]]; then
        echo "bench_gpu.sh: $wheels is missing: run \`make gpu-wheels\` where pip can reach PyPI" >&2
        exit 1
    fi
    log "venv on the host's packages, wheels from $wheels (offline)"
    python3 -m venv --system-site-packages "$work/venv"
    pip=("$work/venv/bin/python" -m pip install --quiet --no-index --find-links "$wheels")
    "${pip[@]}" -r bench/gpu-requirements.txt
    "${pip[@]}" --no-deps --editable .
    python=$work/venv/bin/python
fi
rakuten=$(dirname "$python")/rakuten
"$python" -c 'import sys; print(sys.version)' > "$out/gpus.txt"
if command -v nvidia-smi > /dev/null; then
    nvidia-smi -L >> "$out/gpus.txt"
else
    echo "no nvidia-smi: no GPU" >> "$out/gpus.txt"
fi
cat "$out/gpus.txt" >&2

log "synthesising $photos photos of $photo_size px"
"$rakuten" data synth --out "$work/raw" --rows $((photos + 100)) --test-rows 1 \
    --image-size "$photo_size" --seed 0 > /dev/null

first=${backends%% *}
log "photo decoding with $threads threads"
# shellcheck disable=SC2086  # one argument per thread count
KERAS_BACKEND=$first "$python" bench/bench_image_pipeline.py --photos "$pipeline_photos" --sizes "$size" \
    --threads $threads --out "$out" | tee "$out/image_pipeline.md"

failed=0
train() {  # backend, label, extra arguments
    local backend=$1 label=$2
    shift 2
    log "training under $backend ($label)"
    if ! KERAS_BACKEND=$backend timeout "$limit" "$python" bench/bench_gpu.py --raw "$work/raw" \
        --out "$out" --photos "$photos" --image-size "$size" --batch-size "$batch" --epochs 2 \
        "$@" | tee "$out/train_$label.md"; then
        log "training under $backend ($label) failed or ran past ${limit}s"
        failed=1
    fi
}
for backend in $backends; do
    train "$backend" "$backend" --networks small efficientnetb0
done
train "$first" "$first-cache" --networks small --cache-dir "$work/cache"

cat "$out"/image_pipeline.md "$out"/train_*.md > "$out/summary.md"
log "done: $out"
exit "$failed"
