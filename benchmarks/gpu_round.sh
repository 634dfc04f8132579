#!/bin/bash
# One device call's worth of GPU measurements, in the order the open work needs them, each stage stopped
# before the round's deadline. Run on the GPU machine from the project's root, after `bash
# benchmarks/gpu_prepare.sh` here (and `bash benchmarks/peers_gpu.sh` for py4DSTEM's wheels):
#
#   run  carry: [".gpu", ".gpu-peers"]  command: bash benchmarks/gpu_round.sh 480 tests electron prism pages
#
# Arguments: the round's budget in seconds (keep it 60-90 s under the call's limit: the wheels install
# first), then stages, in order:
#   tests          the unit tests that have a `gpu` parameter, and the fused-FFT tests, on the GPU
#   electron       benchmarks/electron.py --size full against abTEM on the GPU: the cuFFT floor ratio,
#                  fused and plain (issue: multislice within 1.3x of the floor)
#   prism          benchmarks/prism.py --size gpu: 256² probes on 16² cells, PRISM f = 4-16 against multislice
#                  (issue: >= 100x at < 1 % HAADF error); PRISM_ARGS adds arguments, e.g. "--thick 20
#                  --factors 4 8 --batches 1024": a 7.8 nm slab, one multislice run of about 90 s
#   prism-abtem    the same geometry with 64² probes, against abTEM's PRISM at matched error
#   prism-particle benchmarks/prism.py --size gpu --specimen particle: gold on carbon, 768², 64² probes,
#                  PRISM f = 1, 2, 4 against the LMA at p = 96, 128 (issue: LMA below PRISM in memory and
#                  error at equal time; on a 2-core CPU LMA p = 128 was 1.3x faster than PRISM f = 2)
#   ptychography   benchmarks/ptychography.py on the GPU against py4DSTEM (needs .gpu-peers)
#   launch         benchmarks/launch.py: CuPy's cost per operation and per copy to the host, the figures
#                  that turn book.py's operation counts on the strict stand-in into a GPU time floor
#   pages[:a,b]    benchmarks/book.py --size full --markdown: every page, or those named (as in _toc.yml,
#                  e.g. pages:01-simulation/stem,02-inverse/wasserstein), PAGE_S seconds each (default 90),
#                  JOBS pages at a time (default 1; more gives each page's time as an upper bound of its
#                  time run alone, for a lease too short to run the pages one by one)
# A stage written with a trailing '+' (tests+) runs in the background, beside the stages after it; the
# round waits for it at the end. CAP_<stage> (CAP_prism=150) overrides a stage's cap in seconds, and
# TEST_WORKERS the tests' processes (default 8), TESTS the test files (default all) and TESTS_K their -k.
# Every stage's output goes to $OUT/<stage>.txt (OUT: the run tool's folder, else .gpu/out), and its
# last lines to stdout. A stage that would start with under 30 s left is skipped and said so.
set -u
budget=${1:?usage: gpu_round.sh SECONDS STAGE...}; shift
deadline=$((SECONDS + budget))
OUT=${OUT:-.gpu/out}; mkdir -p "$OUT"
# A dry run here: SKIP_INSTALL=1 PYTHON=.venv/bin/python DEVICE=cpu OUT=/tmp/round bash benchmarks/gpu_round.sh ...
PYTHON=${PYTHON:-python3}
if [ -z "${SKIP_INSTALL:-}" ]; then
  [ -d .gpu/whl ] || { echo "no .gpu/whl: run bash benchmarks/gpu_prepare.sh here first and carry .gpu" >&2; exit 2; }
  wheels=(.gpu/whl/*.whl); [ -d .gpu-peers ] && wheels+=(.gpu-peers/*.whl)
  t=$SECONDS
  $PYTHON -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site \
    "${wheels[@]}" > "$OUT/install.txt" 2>&1 || { tail -5 "$OUT/install.txt"; exit 3; }
  echo "wheels installed in $((SECONDS - t)) s"
  export PYTHONPATH=/tmp/site:$PWD
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
  $PYTHON -c "import cupy, numpy; print('CuPy', cupy.__version__, 'NumPy', numpy.__version__, 'cuFFT', cupy.cuda.cufft.getVersion())"
fi
export PYTHONUNBUFFERED=1 MPLBACKEND=Agg MBOOK_DEVICE=${DEVICE:-gpu} MBOOK_PROGRESS=0 MBOOK_PAGE_CACHE=0

stage() {  # stage NAME CAP COMMAND...: run COMMAND with the smaller of CAP (or CAP_NAME) and the time left
  local name=$1 cap=$2; shift 2
  local override="CAP_${name//-/_}"; cap=${!override:-$cap}
  local left=$((deadline - SECONDS - 5))
  if [ $left -lt 30 ]; then echo "== $name: skipped, $((left + 5)) s left"; return; fi
  [ $cap -lt $left ] && left=$cap
  local t=$SECONDS
  timeout -k 5 $left "$@" > "$OUT/$name.txt" 2>&1
  local rc=$?
  echo "== $name: rc=$rc in $((SECONDS - t)) s (limit $left s)"
  tail -${TAIL:-25} "$OUT/$name.txt"
}

run_stage() {
  local s=$1
  case $s in
    tests) stage tests 240 $PYTHON -m pytest ${TESTS:-tests} -q -n ${TEST_WORKERS:-8} -p no:cacheprovider -o addopts="" \
             -rs --import-mode=importlib -k "${TESTS_K:-gpu or fused}" --ignore=tests/test_book.py \
             --ignore=tests/test_notebook_runner.py ;;  # (those two need jupytext, which the machine lacks)
    electron) stage electron 240 $PYTHON benchmarks/electron.py --size full --abtem-device gpu --repeat 3 ;;
    prism) stage prism 240 $PYTHON benchmarks/prism.py --size gpu ${PRISM_ARGS:-} ;;
    prism-abtem) stage prism-abtem 240 $PYTHON benchmarks/prism.py --size gpu --scan 64 --abtem ;;
    prism-particle) stage prism-particle 240 $PYTHON benchmarks/prism.py --size gpu --specimen particle ;;
    launch) stage launch 60 $PYTHON benchmarks/launch.py ;;
    ptychography) stage ptychography 240 $PYTHON benchmarks/ptychography.py ${PTYCHO_ARGS:-} ;;
    pages|pages:*)  # book.py stops starting pages itself, so the table of those run is printed
      names=""; [ "$s" != pages ] && names=$(echo "${s#pages:}" | tr ',' ' ')
      stage pages 3600 $PYTHON benchmarks/book.py --size full --markdown --timeout "${PAGE_S:-90}" \
        --jobs "${JOBS:-1}" --log "$OUT/pages_log.txt" --budget $((deadline - SECONDS - 15)) $names ;;
    *) echo "unknown stage $s (tests, electron, prism, prism-abtem, prism-particle, launch, ptychography, pages[:a,b])" >&2 ;;
  esac
}

for s in "$@"; do
  if [ "${s%+}" != "$s" ]; then
    run_stage "${s%+}" &  # beside the next stages; its lines print when it ends
  else
    run_stage "$s"
  fi
done
wait
echo "round done in $SECONDS s"
