#!/bin/sh
# make demo: the main job on the bundled tiny model. For now: inspect it, then evaluate it
# on held-out text tokens and compare it against another fixture with --ref.
set -eu
M=tests/fixtures/tiny-qwen2moe
T=tests/fixtures/heldout.safetensors
echo "== moeq inspect $M"
bin/moeq inspect "$M"
echo
echo "== moeq eval $M --tokens $T --ctx 512"
bin/moeq eval "$M" --tokens "$T" --ctx 512
echo
echo "== moeq eval $M --tokens $T --ctx 128 --max-tokens 4096 --ref tests/fixtures/tiny-mixtral --json"
bin/moeq eval "$M" --tokens "$T" --ctx 128 --max-tokens 4096 --ref tests/fixtures/tiny-mixtral --json
