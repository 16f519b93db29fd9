#!/usr/bin/env python3
"""Writes the broken task files under tests/broken/tasks/, its README.md table and expected.tsv
(read by tests/cli/test_task.sh). Each file breaks one rule of docs/eval.md ("Tasks"); moeq eval
tests/fixtures/tiny-olmoe --task FILE --task-format FORMAT must exit 2 with a message holding
every fragment (FILE:LINE names the line). Stdlib only; deterministic.
Usage: python3 tests/broken/make_broken_tasks.py   (from the repository root)"""
import json
import os

ROOT = os.path.join("tests", "broken", "tasks")


def task(**kw):
    t = {"id": "t", "context": "The module provides ", "choices": ["a copy.", "a list.", "a map."], "gold": 0}
    t.update(kw)
    for k in [k for k, v in t.items() if v is None]:
        del t[k]
    return json.dumps(t)


GOOD = task(id="ok")
CASES = [
    # name, format, bytes, status, fragments
    ("missing_context.jsonl", "jsonl", GOOD + "\n" + task(context=None), "MOEQ_ERR_FORMAT",
     ["missing_context.jsonl:2:", "missing field 'context'"]),
    ("missing_choices.jsonl", "jsonl", task(choices=None), "MOEQ_ERR_FORMAT",
     ["missing_choices.jsonl:1:", "missing field 'choices'"]),
    ("missing_gold.jsonl", "jsonl", GOOD + "\n\n" + task(gold=None), "MOEQ_ERR_FORMAT",
     ["missing_gold.jsonl:3:", "missing field 'gold'"]),
    ("gold_out_of_range.jsonl", "jsonl", task(gold=3), "MOEQ_ERR_RANGE",
     ["gold_out_of_range.jsonl:1:", "'gold' is 3, outside 0..2"]),
    ("gold_negative.jsonl", "jsonl", task(gold=-1), "MOEQ_ERR_RANGE",
     ["gold_negative.jsonl:1:", "'gold' is -1"]),
    ("gold_not_integer.jsonl", "jsonl", task(gold="1"), "MOEQ_ERR_FORMAT",
     ["gold_not_integer.jsonl:1:", "'gold' is not an integer"]),
    ("choices_empty.jsonl", "jsonl", task(choices=[]), "MOEQ_ERR_FORMAT",
     ["choices_empty.jsonl:1:", "'choices' has 0 entries"]),
    ("choices_one.jsonl", "jsonl", task(choices=["only"]), "MOEQ_ERR_FORMAT",
     ["choices_one.jsonl:1:", "at least 2"]),
    ("choice_empty_string.jsonl", "jsonl", task(choices=["a", "b", ""]), "MOEQ_ERR_FORMAT",
     ["choice_empty_string.jsonl:1:", "choice 2 is empty"]),
    ("choice_not_string.jsonl", "jsonl", task(choices=["a", 7]), "MOEQ_ERR_FORMAT",
     ["choice_not_string.jsonl:1:", "choice 1 is not a string"]),
    ("choices_not_array.jsonl", "jsonl", task(choices="a"), "MOEQ_ERR_FORMAT",
     ["choices_not_array.jsonl:1:", "'choices' is not an array"]),
    ("context_empty.jsonl", "jsonl", task(context=""), "MOEQ_ERR_FORMAT",
     ["context_empty.jsonl:1:", "'context' is empty"]),
    ("context_only_spaces.jsonl", "jsonl", GOOD + "\n" + task(context="   "), "MOEQ_ERR_FORMAT",
     ["context_only_spaces.jsonl:2:", "task 't' choice 0", "the context tokenizes to no tokens"]),
    ("context_too_long.jsonl", "jsonl", task(context="word " * 1100), "MOEQ_ERR_RANGE",
     ["context_too_long.jsonl:1:", "more than its window of 1024"]),
    ("id_not_string.jsonl", "jsonl", task(id=[1]), "MOEQ_ERR_FORMAT",
     ["id_not_string.jsonl:1:", "'id' is neither a string nor an integer"]),
    ("not_json.jsonl", "jsonl", GOOD + "\n" + GOOD[:-5], "MOEQ_ERR_FORMAT", ["not_json.jsonl:2:", "not JSON"]),
    ("duplicate_key.jsonl", "jsonl", GOOD[:-1] + ', "gold": 1}', "MOEQ_ERR_FORMAT",
     ["duplicate_key.jsonl:1:", "not JSON", "duplicate"]),
    ("not_object.jsonl", "jsonl", "[1, 2]", "MOEQ_ERR_FORMAT", ["not_object.jsonl:1:", "must be a JSON object"]),
    ("bad_utf8.jsonl", "jsonl", GOOD.encode() + b"\n" + GOOD.replace("copy", "c\xffpy").encode("latin-1"),
     "MOEQ_ERR_FORMAT", ["bad_utf8.jsonl:2:", "invalid UTF-8 at byte offset %d" % (len(GOOD) + 1 + GOOD.index("copy") + 1)]),
    ("nul_byte.jsonl", "jsonl", GOOD.replace(" copy", "\0copy"), "MOEQ_ERR_FORMAT",
     ["nul_byte.jsonl:1:", "a NUL byte at byte offset %d" % GOOD.index(" copy")]),
    ("empty.jsonl", "jsonl", "\n \n", "MOEQ_ERR_FORMAT", ["empty.jsonl:", "no tasks"]),
    ("hs_incomplete.txt", "hellaswag", "Ctx\n1\na\nb\nc\nd\nCtx two\n0\na\nb\nc\n", "MOEQ_ERR_FORMAT",
     ["hs_incomplete.txt:7:", "5 of its 6 lines"]),
    ("hs_gold_range.txt", "hellaswag", "Ctx\n1\na\nb\nc\nd\nCtx two\n4\na\nb\nc\nd\n", "MOEQ_ERR_RANGE",
     ["hs_gold_range.txt:8:", "the gold ending is '4', not 0..3"]),
    ("hs_gold_text.txt", "hellaswag", "Ctx\none\na\nb\nc\nd\n", "MOEQ_ERR_RANGE",
     ["hs_gold_text.txt:2:", "'one'"]),
    ("hs_empty_ending.txt", "hellaswag", "Ctx\n1\na\nb\n\nd\n", "MOEQ_ERR_FORMAT",
     ["hs_empty_ending.txt:5:", "ending 2 is empty"]),
    ("hs_empty_context.txt", "hellaswag", "Ctx\n1\na\nb\nc\nd\n\n2\na\nb\nc\nd\n", "MOEQ_ERR_FORMAT",
     ["hs_empty_context.txt:7:", "the context is empty"]),
    ("wg_no_blank.csv", "winogrande", "0,The module _ copies.,makes,takes,1\n1,No blank here.,a,b,2\n",
     "MOEQ_ERR_FORMAT", ["wg_no_blank.csv:2:", "no '_'"]),
    ("wg_answer_3.csv", "winogrande", "0,The module _ copies.,makes,takes,3\n", "MOEQ_ERR_RANGE",
     ["wg_answer_3.csv:1:", "the answer is '3', not 1 or 2"]),
    ("wg_few_commas.csv", "winogrande", "\n0,The module _ copies.,makes\n", "MOEQ_ERR_FORMAT",
     ["wg_few_commas.csv:2:", "2 of the 4 commas"]),
    ("wg_unclosed_quote.csv", "winogrande", '0,"The module _ copies.,makes,takes,1\n', "MOEQ_ERR_FORMAT",
     ["wg_unclosed_quote.csv:1:", "1 of the 4 commas"]),
    ("wg_empty_option.csv", "winogrande", "0,The module _ copies.,makes,,1\n", "MOEQ_ERR_FORMAT",
     ["wg_empty_option.csv:1:", "option2 is empty"]),
]


def main():
    os.makedirs(ROOT, exist_ok=True)
    for name, fmt, data, status, frags in CASES:
        with open(os.path.join(ROOT, name), "wb") as f:
            f.write(data if isinstance(data, bytes) else data.encode("utf-8"))
    with open(os.path.join(ROOT, "expected.tsv"), "w") as f:
        f.write("# file\tformat\tstatus\texit\tfragments (|-separated)\n")
        for name, fmt, _, status, frags in CASES:
            f.write("%s\t%s\t%s\t2\t%s\n" % (name, fmt, status, "|".join(frags)))
    with open(os.path.join(ROOT, "README.md"), "w") as f:
        f.write("# Broken task files\n\nGenerated by `python3 tests/broken/make_broken_tasks.py`; do not edit by hand. "
                "`moeq eval tests/fixtures/tiny-olmoe --task FILE --task-format FORMAT` must fail with exit 2 and a "
                "message that contains every fragment (FILE:LINE names the line); tests/cli/test_task.sh checks it. "
                "The same table is in `expected.tsv` for scripts.\n\n"
                "| file | format | status | message contains |\n|---|---|---|---|\n")
        for name, fmt, _, status, frags in CASES:
            f.write("| `%s` | %s | %s | %s |\n" % (name, fmt, status, ", ".join("`%s`" % x for x in frags)))


if __name__ == "__main__":
    main()
