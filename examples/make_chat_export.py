"""Writes chat_export.csv: 300 rows of a chat product's feedback export, the way products export
it (thumbs up, down or empty; copied true/false; regenerated yes/no; some dwell cells empty), with
answers whose words say whether they are good. The README's "Your own log" section and the tests
read it. Run from the repository root: python examples/make_chat_export.py"""

import csv
from pathlib import Path

import numpy as np

GOOD = "clear correct concise helpful accurate thorough".split()
BAD = "vague wrong rambling unhelpful confusing broken".split()


def export_rows(rows: int = 300, seed: int = 0) -> list[dict]:
    """Rows as a product exports them: empty thumbs for no vote, text booleans, empty dwell cells."""
    rng = np.random.default_rng(seed)
    records = []
    for i in range(rows):
        preferred, engaged = rng.random() < 0.5, rng.random() < 0.6
        words = [*rng.choice(GOOD if preferred else BAD, 3), *rng.choice(GOOD + BAD, 2)]
        vote = ""
        if engaged and rng.random() < 0.5:
            vote = "up" if preferred == (rng.random() < 0.85) else "down"
        dwell = "" if rng.random() < 0.1 else f"{rng.gamma(2.0, 20.0 if preferred else 8.0):.1f}"
        records.append({
            "conversation_id": f"c{i // 2}",
            "user": f"u{rng.integers(12)}",
            "question": f"question {i // 2}",
            "answer": " ".join(words),
            "thumbs": vote,
            "copied": "true" if engaged and rng.random() < (0.7 if preferred else 0.1) else "false",
            "regenerated": "yes" if engaged and rng.random() < (0.1 if preferred else 0.5) else "no",
            "seconds_on_page": dwell,
        })  # fmt: skip
    return records


if __name__ == "__main__":
    rows = export_rows()
    path = Path(__file__).with_name("chat_export.csv")
    with path.open("w", newline="") as stream:
        writer = csv.DictWriter(stream, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    print(f"Wrote {len(rows)} rows to {path}")
