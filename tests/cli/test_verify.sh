#!/bin/sh
# moeq verify over the committed catalogue of broken inputs (tests/broken/safetensors/
# expected.tsv: exit code and message fragments), over the fixtures, and on injected NaN.
. tests/cli/lib.sh
B=tests/broken/safetensors

expect_exit "verify --help" 0 "" -- "$MOEQ" verify --help
for m in tiny-mixtral tiny-qwen2moe tiny-qwen3moe tiny-olmoe; do
  expect_exit "verify fixture $m" 0 "" -- "$MOEQ" verify $FX/$m
done
expect_exit "verify heldout tokens" 0 "" -- "$MOEQ" verify $FX/heldout.safetensors --tokens --vocab 1024

grep -v '^#' $B/expected.tsv | while IFS='	' read -r path status code frags; do
  case "$path" in
    tokens/*) set -- "$MOEQ" verify "$B/$path" --tokens --vocab 1024 ;;
    *)        set -- "$MOEQ" verify "$B/$path" ;;
  esac
  "$@" > "$TMPD/out" 2> "$TMPD/err"; rc=$?
  ok=1
  [ "$rc" -eq "$code" ] || { ok=0; echo "  $path: exit $rc, wanted $code" >&2; }
  grep -qF -- "$B/$path" "$TMPD/err" || grep -qF -- "$path" "$TMPD/err" || { ok=0; echo "  $path: message does not name the input" >&2; }
  old_ifs=$IFS; IFS='|'
  for f in $frags; do
    grep -qF -- "$f" "$TMPD/err" || { ok=0; echo "  $path: message lacks '$f'" >&2; }
  done
  IFS=$old_ifs
  [ $ok -eq 1 ] && echo "PASS verify broken $path" || { echo "FAIL verify broken $path"; sed 's/^/    /' "$TMPD/err" >&2; }
done

# A NaN and an Inf in bf16 weights: exit 3, naming the tensor and the file offset.
rm -rf "$TMPD/m"; cp -r $FX/tiny-qwen2moe "$TMPD/m"
python3 - "$TMPD/m/model.safetensors" <<'PY'
import json, struct, sys
p = sys.argv[1]; b = bytearray(open(p, "rb").read())
n = struct.unpack("<Q", b[:8])[0]; h = json.loads(b[8:8 + n])
off = 8 + n + h["model.layers.2.mlp.experts.5.down_proj.weight"]["data_offsets"][0]
b[off + 2 * 7:off + 2 * 8] = struct.pack("<H", 0x7FC0)     # NaN at element 7
b[off + 2 * 9:off + 2 * 10] = struct.pack("<H", 0x7F80)    # +Inf at element 9
open(p, "wb").write(bytes(b))
PY
expect_exit "verify NaN/Inf in weights" 3 "experts.5.down_proj.weight.*2 NaN/Inf values, the first at element 7" -- "$MOEQ" verify "$TMPD/m"
