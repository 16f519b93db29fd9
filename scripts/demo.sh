#!/bin/sh
# make demo: the whole pipeline on the bundled tiny Mixtral-style model, in build/demo/:
# inspect, spectra, calibration on text, a 3-bit Hessian-allocated plan, GPTQ into a packed
# .moeq, verify, eval of the packed file against the original, unpack to a hub directory.
set -eu
M=tests/fixtures/tiny-mixtral
D=build/demo
rm -rf "$D" && mkdir -p "$D"
# calibrate on training text (corpus.txt.gz), evaluate on the held-out text
gzip -dc tests/fixtures/corpus.txt.gz | head -c 400000 > "$D/calib.txt"
cp tests/fixtures/heldout.txt "$D/test.txt"
step() { echo; echo "== moeq $*"; bin/moeq "$@"; }

step inspect "$M"
step spectral "$M" --mode farms -o "$D/spec.h5"
step calibrate "$M" --text "$D/calib.txt" --ctx 256 -o "$D/calib.h5"
step plan "$M" --budget 3.0 --bits 2,3,4,8 --cost hessian --calib "$D/calib.h5" -o "$D/plan.json"
step quantize "$M" --plan "$D/plan.json" --method gptq --calib "$D/calib.h5" -o "$D/model.moeq"
step verify "$D/model.moeq"
step eval "$D/model.moeq" --text "$D/test.txt" --ctx 256 --ref "$M"
step unpack "$D/model.moeq" -o "$D/unpacked"
echo
echo "demo outputs in $D/: spec.h5 calib.h5 plan.json model.moeq unpacked/"
