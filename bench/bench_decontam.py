"""Decontamination recall and false positives per kind of planted overlap (the README's table):
benchmark items hidden in an AVQA source re-encoded, resampled, cropped, under noise or
paraphrased, among clean items (`sari_data.testing.planted_overlaps`).

    python bench/bench_decontam.py [N_CLEAN]
"""

from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "sari_data"))

from test_decontam_planted import flagged_by_source_id  # noqa: E402

from sari_data.testing import overlap_table  # noqa: E402


def main(n_clean: int = 60) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        flagged, truth, found = flagged_by_source_id(Path(tmp), n_clean)
    table = overlap_table(flagged, truth)
    print("| kind | items | found (planted) / flagged (clean) |\n|---|---|---|")
    for row in table:
        print(f"| {row['kind']} | {row['items']} | {row.get('found', row.get('flagged'))} |")
    planted = [r for r in table if r["planted"]]
    print(json.dumps({"recall": round(sum(r["found"] for r in planted) / sum(r["items"] for r in planted), 3),
                      "false_positives": sum(r["flagged"] for r in table if not r["planted"]),
                      "methods": found.method.value_counts().to_dict()}))


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 60)
