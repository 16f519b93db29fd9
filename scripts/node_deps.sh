#!/bin/sh
# The llama.cpp consumer of the GGUF tests: node-llama-cpp 3.21.1 (its prebuilt CPU llama.cpp,
# tag v0.4.0) and @huggingface/gguf 0.4.6, pinned by tests/node/package-lock.json, installed with
# `npm ci` into build/node (ignored by git; no global install, no install scripts, no GPU builds).
# Usage: scripts/node_deps.sh [DIR]   exit 0 when DIR/node_modules is ready; otherwise says why.
set -u
dir=${1:-build/node}
want=$(sha256sum tests/node/package-lock.json | cut -c1-16)
if [ -f "$dir/.lock-sha" ] && [ "$(cat "$dir/.lock-sha")" = "$want" ] && [ -d "$dir/node_modules/node-llama-cpp" ]; then
  cp tests/node/ppl.mjs tests/node/tokenize.mjs "$dir/"
  exit 0
fi
command -v npm > /dev/null 2>&1 || { echo "moeq: npm is not installed (Node.js 20 with npm is needed for the llama.cpp tests)" >&2; exit 1; }
mkdir -p "$dir" && cp tests/node/package.json tests/node/package-lock.json tests/node/ppl.mjs tests/node/tokenize.mjs "$dir/" || exit 1
if ! (cd "$dir" && npm ci --ignore-scripts --omit=optional --no-audit --no-fund > npm.log 2>&1); then
  echo "moeq: npm ci of node-llama-cpp@3.21.1 failed: the npm registry could not be reached or refused it (see $dir/npm.log):" >&2
  tail -n 5 "$dir/npm.log" >&2
  exit 1
fi
echo "$want" > "$dir/.lock-sha"
