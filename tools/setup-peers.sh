#!/usr/bin/env bash
# Create the virtual environments of the peers that benchmarks/loader.py measures against recpack.Loader.
#
#   bash tools/setup-peers.sh [PEER...]     # default: torch ffcv mxnet; needs root for apt-get (FFCV only)
#
# Environments live in .peers/ at the repository root (it ignores itself: nothing there goes into git):
#   .peers/torch  ImageFolder files, WebDataset and LMDB runners: torch + webdataset + lmdb + Pillow. Built with
#                 --system-site-packages so it reuses the interpreter's torch 2.13.0 when present.
#   .peers/ffcv   ffcv 1.0.2 (built from source against Debian's libturbojpeg and OpenCV) + torch 2.13.0 + Pillow.
#   .peers/mxnet  mxnet 1.9.1 with numpy 1.23.5 (it imports with no later numpy) + Pillow; no torch.
# torch is always pinned to 2.13.0 (the local CPU build): a looser requirement would make pip pull the newest CUDA
# build. torchvision has no CPU build here, so a peer that needs it (mosaicml-streaming) is not measured; the
# script fails if any environment ends up with torchvision.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PEERS="$ROOT/.peers"
PY="${PYTHON:-python3}"
mkdir -p "$PEERS"
printf '*\n' > "$PEERS/.gitignore"
CONSTRAINTS="$PEERS/constraints.txt"
printf 'torch==2.13.0\n' > "$CONSTRAINTS"

log() { printf '\n== %s\n' "$*"; }

no_torchvision() {
    if "$1/bin/python" -c 'import importlib.util, sys; sys.exit(importlib.util.find_spec("torchvision") is None)'; then
        echo "error: $1 has torchvision (no CPU build here; it breaks torch 2.13.0): remove it" >&2
        exit 1
    fi
}

setup_torch() {
    local V="$PEERS/torch"
    log "torch peers (ImageFolder, WebDataset, LMDB) -> $V"
    [ -x "$V/bin/python" ] || "$PY" -m venv --system-site-packages "$V"
    "$V/bin/python" -m pip install -q -c "$CONSTRAINTS" torch==2.13.0 webdataset==1.0.2 lmdb pillow numpy
    no_torchvision "$V"
    "$V/bin/python" -c 'import torch, webdataset, lmdb, PIL; print("torch", torch.__version__, "webdataset",
webdataset.__version__, "lmdb", lmdb.__version__, "Pillow", PIL.__version__)'
}

setup_ffcv() {
    local V="$PEERS/ffcv"
    log "FFCV -> $V"
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
        if ! dpkg -s pkg-config libturbojpeg0-dev libopencv-dev >/dev/null 2>&1; then
            apt-get update -qq
            DEBIAN_FRONTEND=noninteractive apt-get install -y -qq pkg-config libturbojpeg0-dev libopencv-dev >/dev/null
        fi
    else
        echo "not root: assuming pkg-config, libturbojpeg0-dev and libopencv-dev are installed"
    fi
    [ -x "$V/bin/python" ] || "$PY" -m venv "$V"
    "$V/bin/python" -m pip install -q -U pip wheel setuptools
    # ffcv's setup.py imports numpy and needs torch at build time; install them first, then build without isolation
    # so that pip does not fetch a CUDA torch into a build environment.
    "$V/bin/python" -m pip install -q -c "$CONSTRAINTS" torch==2.13.0 "numpy<2.3" pillow
    "$V/bin/python" -m pip install -q -c "$CONSTRAINTS" --no-build-isolation ffcv==1.0.2
    no_torchvision "$V"
    "$V/bin/python" -c 'import ffcv, torch, numba, numpy; from ffcv.loader import Loader; print("ffcv", ffcv.__version__,
"torch", torch.__version__, "numba", numba.__version__, "numpy", numpy.__version__)'
}

setup_mxnet() {
    local V="$PEERS/mxnet"
    log "MXNet -> $V"
    [ -x "$V/bin/python" ] || "$PY" -m venv "$V"
    "$V/bin/python" -m pip install -q -U pip
    "$V/bin/python" -m pip install -q mxnet==1.9.1 numpy==1.23.5 pillow
    "$V/bin/python" -c 'import mxnet, numpy; print("mxnet", mxnet.__version__, "numpy", numpy.__version__)'
}

targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=(torch ffcv mxnet)
failed=()
for t in "${targets[@]}"; do
    case "$t" in
        torch|ffcv|mxnet) ( "setup_$t" ) || failed+=("$t") ;;
        *) echo "unknown peer environment: $t (torch, ffcv, mxnet)" >&2; exit 2 ;;
    esac
done
if [ ${#failed[@]} -gt 0 ]; then
    echo "setup failed for: ${failed[*]} (benchmarks/loader.py skips those peers and prints why)" >&2
    exit 1
fi
echo "peers ready in $PEERS"
