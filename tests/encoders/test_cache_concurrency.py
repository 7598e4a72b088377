"""Several processes write one embedding cache at once: every row read back is the row written."""

import subprocess
import sys

import numpy as np

from pyro_irm.encoders import EmbeddingCache, text_keys

DIM = 16
ROWS = 240

_WRITER = """
import sys
import numpy as np
from pyro_irm.encoders import EmbeddingCache, text_keys

root, worker = sys.argv[1], int(sys.argv[2])
DIM, ROWS = 16, 240

def value(rows):
    return (rows[:, None] * 1000.0 + np.arange(DIM)[None, :]).astype(np.float32)

rows = np.random.default_rng(worker).permutation(ROWS)[:160]  # the workers' rows overlap
wrong = 0
for start in range(0, len(rows), 4):
    batch = rows[start : start + 4]
    keys = text_keys([f"p{r}" for r in batch], [f"r{r}" for r in batch])
    cache = EmbeddingCache(root, {"model": "m"}, "key", DIM) if start % 40 == 0 else cache
    cache.append(keys, value(batch))
    positions = cache.lookup(keys)  # what embed_rows does: read back the rows it just wrote
    wrong += int((positions < 0).sum()) + int((cache.read(positions) != value(batch)).any(axis=1).sum())
print(wrong)
"""


def test_concurrent_writers_leave_every_row_correct(tmp_path):
    workers = [
        subprocess.Popen(
            [sys.executable, "-c", _WRITER, str(tmp_path), str(w)], stdout=subprocess.PIPE, text=True
        )
        for w in range(4)
    ]
    wrong = [int(p.communicate(timeout=300)[0].strip() or -1) for p in workers]
    assert [p.returncode for p in workers] == [0, 0, 0, 0]
    assert wrong == [0, 0, 0, 0], f"rows read back wrong, per writer: {wrong}"
    cache = EmbeddingCache(tmp_path, {"model": "m"}, "key", DIM)
    assert len(cache) == 4 * 160 and len(cache.verify(np.arange(len(cache)))) == 0
    rows = np.arange(ROWS)
    positions = cache.lookup(text_keys([f"p{r}" for r in rows], [f"r{r}" for r in rows]))
    written = np.flatnonzero(positions >= 0)
    expected = (rows[written, None] * 1000.0 + np.arange(DIM)[None, :]).astype(np.float32)
    np.testing.assert_array_equal(cache.read(positions[written]), expected)
    assert len(written) > 200  # nearly every row was written by some worker
