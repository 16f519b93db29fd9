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
make -s build/rel/bench/bench_gemm_vnni && build/rel/bench/bench_gemm_vnni   # int8 GEMM vs float tiles vs sgemm, 1 and 2 threads
make -s build/rel/bench/bench_ggml && build/rel/bench/bench_ggml   # GGUF block types: GB/s vs read bandwidth, batch 16 vs the reference (docs/GGML-TYPES.md)
# eval of a 4-bit packed file (q4 g64 asymmetric, routed experts) against its bf16 original,
# windows timed alternately: the tiny fixtures and the synthetic model of realistic widths
P=build/bench/packed && mkdir -p $P
for m in tiny-mixtral tiny-qwen3moe; do bin/moeq quantize $FX/$m --bits 4 --group 64 -o $P/$m-q4.moeq -q; done
bin/moeq quantize $S --bits 4 --group 64 -o $P/synth-q4.moeq -q
make -s build/rel/bench/bench_packed_eval && build/rel/bench/bench_packed_eval --ctx 512 --windows 16 \
  $FX/tiny-mixtral $P/tiny-mixtral-q4.moeq $FX/heldout.safetensors \
  $FX/tiny-qwen3moe $P/tiny-qwen3moe-q4.moeq $FX/heldout.safetensors \
  $S $P/synth-q4.moeq $S/tokens.u32
# issue 15: float-weight kernels vs sgemm, then moeq eval at ctx 256/512, bf16 and q4, with and without
# OPENBLAS_CORETYPE, KLD of the fast kernels vs the reference, calibrate vs eval (docs/bench.md)
make -s build/rel/bench/bench_wgemm && build/rel/bench/bench_wgemm
make -s build/rel/bench/bench_attn && build/rel/bench/bench_attn   # fused attention vs wgemm + softmax per head
Q=build/bench/synth-qwen3
[ -f $Q/model.safetensors ] || python3 bench/make_synthetic.py $Q --family qwen3_moe --hidden 512 --inter 256 \
  --experts 16 --layers 4 --heads 8 --kv-heads 4 --head-dim 64 --vocab 4096
bin/moeq bench eval $Q --tokens $Q/tokens.u32 --max-tokens 8192 --threads 2
make -s build/rel/bench/bench_gptq && build/rel/bench/bench_gptq   # GPTQ vs RTN s/matrix (2048 x 1408), Qwen1.5-MoE extrapolation, plan solve for 10000 matrices
# moeq eval --task: tasks/s and scored tokens/s against eval's tokens/s for as many tokens (target 0.8)
make -s build/rel/bench/bench_task && build/rel/bench/bench_task --threads 2 --reps 3 $FX/tasks/cloze.jsonl $FX/heldout.safetensors \
  $FX/tiny-mixtral $FX/tiny-qwen2moe $FX/tiny-qwen3moe $FX/tiny-olmoe > build/bench/task.json
bench/bench_gptq_generalize.sh   # GPTQ with the generalization defaults vs as before, ms per matrix (issue 13: <= 1.5x)
