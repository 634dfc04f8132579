#!/bin/bash
# Wheels for benchmarks/ptychography.py's py4DSTEM comparison on the offline GPU machine (Python 3.12, NumPy 2,
# CuPy 14, and the packages that ../shared/gpu/device-image-packages.txt lists). Run here, from the project's
# root: `bash benchmarks/peers_gpu.sh`. It fills .gpu-peers/ (git-ignored, 1.8 MB) with py4DSTEM 0.14.18
# and those of its dependencies that its single-slice ptychography imports and that machine lacks; mbook
# needs nothing more on that path than NumPy, SciPy, threadpoolctl and tqdm, which the machine has.
#
# py4DSTEM's metadata pins numpy < 2 (and scikit-learn < 1.5, ncempy <= 1.11.2), so the wheels go in with
# --no-deps (pip would otherwise downgrade NumPy under CuPy); 0.14.18 imports and runs this benchmark under
# NumPy 2.4 with the newer ones (checked on the CPU with exactly these wheels installed as below into a Python
# 3.12 venv holding only packages the GPU machine has). Left out on purpose: hdf5plugin (a 46 MB wheel that py4DSTEM and ncempy import only to
# register HDF5 compression filters for reading Dectris and Arina files; the benchmark puts an empty module in
# its place and says so), and the declared dependencies that this path never imports (dask, distributed, dill,
# mpire). The versions are those checked; the list of what the machine must already have is checked against
# its package list below.
#
# On the GPU machine, from the project's root (see benchmarks/README.md):
#   python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .gpu-peers/*.whl
#   PYTHONPATH=/tmp/site:$PWD MBOOK_DEVICE=gpu python3 benchmarks/ptychography.py --sides 64 128 --window 128
set -eu
[ -f requirements.txt ] && [ -d mbook ] || { echo "run from the project's root" >&2; exit 2; }
device_list=${DEVICE_PACKAGES:-../shared/gpu/device-image-packages.txt}
grep -qx '/.gpu-peers/' .git/info/exclude 2>/dev/null || echo '/.gpu-peers/' >> .git/info/exclude

# What py4DSTEM's import and SingleslicePtychography load that the machine lacks (pinned: the versions checked).
peers="py4DSTEM==0.14.18 emdfile==0.0.16 colorspacious==1.1.2 ncempy==1.16 pylops==2.8.0 scikit-optimize==0.10.2
       gdown==6.5.1 beautifulsoup4==4.15.0 soupsieve==4.1.3"
# What the same imports load and the machine must already have (import names differ from some of these).
needed="numpy scipy matplotlib contourpy cycler fonttools kiwisolver packaging pillow pyparsing python-dateutil
        h5py scikit-image scikit-learn joblib threadpoolctl tqdm requests urllib3 idna certifi charset-normalizer
        filelock pyyaml narwhals lazy-loader typing-extensions cloudpickle"
if [ -f "$device_list" ]; then
  missing=""
  for n in $needed; do grep -qx "$n" "$device_list" || missing+=" $n"; done
  [ -z "$missing" ] || { echo "the GPU machine lacks:$missing (add them to the list above)" >&2; exit 1; }
else
  echo "no $device_list (set DEVICE_PACKAGES): what the GPU machine has is not checked" >&2
fi

rm -rf .gpu-peers && mkdir -p .gpu-peers
platforms=""
for p in manylinux_2_17_x86_64 manylinux2014_x86_64 manylinux_2_24_x86_64 manylinux_2_27_x86_64 \
  manylinux_2_28_x86_64 manylinux_2_31_x86_64 manylinux_2_34_x86_64 manylinux1_x86_64; do
  platforms+=" --platform $p"
done
python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp $platforms \
  -d .gpu-peers $peers 2>&1 | grep -v "WARNING: Location" || true
# A project that .gpu/whl (../shared/gpu/prepare.sh) also holds would be named twice in one pip install: keep
# that one only.
for f in .gpu-peers/*.whl; do
  n=$(basename "$f" | sed 's/-[0-9].*//' | tr 'A-Z_.' 'a-z--')
  for g in .gpu/whl/*.whl; do
    [ -e "$g" ] || continue
    [ "$(basename "$g" | sed 's/-[0-9].*//' | tr 'A-Z_.' 'a-z--')" = "$n" ] || continue
    echo "in .gpu/whl already: $n"; rm -f "$f"
  done
done
expected=$(echo $peers | wc -w)
got=$(ls .gpu-peers/*.whl .gpu/whl/*.whl 2>/dev/null | sed 's|.*/||; s/-[0-9].*//' | tr 'A-Z_.' 'a-z--' | sort -u \
      | grep -cxE "$(echo $peers | sed 's/==[^ ]*//g; s/ /|/g' | tr 'A-Z_.' 'a-z--')" || true)
ls .gpu-peers
du -sh .gpu-peers
[ "$got" -eq "$expected" ] || { echo "only $got of $expected wheels downloaded" >&2; exit 1; }
