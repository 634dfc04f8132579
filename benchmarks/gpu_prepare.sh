#!/bin/bash
# Build the payload of a GPU round (benchmarks/gpu_round.sh) here, from the project's root with .venv built:
# the project's GPU payload (../shared/gpu/prepare.sh: wheels of what the GPU machine lacks, into .gpu/),
# less what a round never imports, so that it fits the device call's carry limit (64 MiB with .gpu-peers):
#   playwright, greenlet   the browser check of the rendered book (53 MB)
#   astra_toolbox, nvidia_* ASTRA's projector and the CUDA 12 libraries it loads (260 MB); the round does not
#                          run benchmarks/tomography.py
# Then: run with carry [".gpu", ".gpu-peers"] and `bash benchmarks/gpu_round.sh SECONDS STAGE...`.
set -eu
[ -f requirements.txt ] && [ -d mbook ] || { echo "run from the project's root" >&2; exit 2; }
bash ../shared/gpu/prepare.sh > /dev/null
rm -f .gpu/whl/playwright-*.whl .gpu/whl/greenlet-*.whl .gpu/whl/astra_toolbox-*.whl .gpu/whl/nvidia_*.whl
rm -rf .gpu/nbs  # the round reads the pages themselves (benchmarks/book.py)
size=$(du -sk .gpu | cut -f1); peers=0
[ -d .gpu-peers ] && peers=$(du -sk .gpu-peers | cut -f1)
echo ".gpu: $((size / 1024)) MiB, .gpu-peers: $((peers / 1024)) MiB, $(ls .gpu/whl | wc -l) wheels"
if [ $((size + peers)) -gt $((62 * 1024)) ]; then
  echo "over the 64 MiB carry limit: prune more wheels (the largest: $(ls -S .gpu/whl | head -3 | tr '\n' ' '))" >&2
  exit 1
fi
