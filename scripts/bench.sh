#!/bin/sh
# make bench: forward-pass speed on the fixtures and on a synthetic Mixtral-style model of
# realistic matrix sizes (hidden 1024, experts 2048 wide), as a fraction of the sgemm rate
# measured in the same run.
set -eu
make -s build/rel/bench/bench_forward
S=build/bench/synth-mixtral
[ -f $S/model.safetensors ] || python3 bench/make_synthetic.py $S
FX=tests/fixtures
build/rel/bench/bench_forward --ctx 512 --windows 8 \
  $FX/tiny-mixtral $FX/heldout.safetensors $FX/tiny-qwen2moe $FX/heldout.safetensors \
  $FX/tiny-qwen3moe $FX/heldout.safetensors $FX/tiny-olmoe $FX/heldout.safetensors \
  $S $S/tokens.u32
make -s build/rel/bench/bench_spectral && build/rel/bench/bench_spectral
T=tests/fixtures/tokenizers
# tokenizer MB/s on one core over the 1.2 MB training text (the held-out text is only 62 kB)
mkdir -p build/bench && gzip -dc $FX/corpus.txt.gz > build/bench/corpus.txt
make -s build/rel/bench/bench_tokenizer && build/rel/bench/bench_tokenizer build/bench/corpus.txt $FX/tiny-mixtral/tokenizer.json $T/tok_llama3.json $T/tok_nfkc.json $T/tok_metaspace.json $T/tok_legacy.json
make -s build/rel/bench/bench_calib && build/rel/bench/bench_calib --ctx 512 --windows 32 $FX/tiny-mixtral $FX/heldout.safetensors $FX/tiny-qwen2moe $FX/heldout.safetensors $FX/tiny-qwen3moe $FX/heldout.safetensors $FX/tiny-olmoe $FX/heldout.safetensors
bin/moeq bench kernel   # GEMV/GEMM of the packed codecs vs memory bandwidth and sgemm (docs/bench.md)
make -s build/rel/bench/bench_gptq && build/rel/bench/bench_gptq   # GPTQ vs RTN s/matrix (2048 x 1408), Qwen1.5-MoE extrapolation, plan solve for 10000 matrices
