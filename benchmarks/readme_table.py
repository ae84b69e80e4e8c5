"""The README's results table, generated from the per-dataset summary JSON files.

    python benchmarks/readme_table.py [--spec benchmarks/readme_rows.json] [--markdown README.md]

``readme_rows.json`` lists, per dataset, the summary rows (``benchmarks/results/summary_<dataset>.json``,
written by ``collect.py``) that the README shows and their labels. The table reports test and
validation side by side (mean ± sample std over seeds); under it, one line per dataset names the
row that the selection rule (highest mean validation NDCG@20 among the listed rows) would pick.
``--markdown FILE`` replaces the text between ``<!-- summary:readme -->`` and
``<!-- /summary:readme -->``.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from collect import _pm, replace_block

HERE = Path(__file__).resolve().parent


def table(spec: dict) -> str:
    lines = ["| data | model | seeds | R@20 (test) | N@20 (test) | N@20 (valid) | R@20 (valid) |",
             "|---|---|---|---|---|---|---|"]
    picks = []
    for dataset, entry in spec.items():
        summary = json.loads((HERE / "results" / f"summary_{dataset}.json").read_text())["rows"]
        missing = [r["row"] for r in entry["rows"] if r["row"] not in summary]
        if missing:
            raise SystemExit(f"summary_{dataset}.json has no rows {missing}")
        shown = [(r["label"], summary[r["row"]]) for r in entry["rows"]]
        for label, row in shown:
            lines.append(f"| {dataset} | {label} | {len(row['seeds'])} | {_pm(row, 'test_recall@20')} "
                         f"| {_pm(row, 'test_ndcg@20')} | {_pm(row, 'valid_ndcg@20')} "
                         f"| {_pm(row, 'valid_recall@20')} |")
        best = max(shown, key=lambda lr: lr[1]["valid_ndcg@20"])[0]
        top = max(shown, key=lambda lr: lr[1]["test_recall@20"])[0]
        picks.append(f"{dataset}: validation NDCG@20 picks **{best}**"
                     + ("" if top == best else f"; the best test R@20 is {top}'s") + ".")
    return "\n".join(lines + [""] + [" ".join(picks)])


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--spec", default=str(HERE / "readme_rows.json"))
    p.add_argument("--markdown", default=None, help="replace the summary:readme block of this file")
    a = p.parse_args(argv)
    text = table(json.loads(Path(a.spec).read_text()))
    print(text)
    if a.markdown:
        replace_block(Path(a.markdown), "readme", text)


if __name__ == "__main__":
    main()
