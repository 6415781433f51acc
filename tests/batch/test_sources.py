"""sources: a schedule's files read in batches of a fixed size."""

from __future__ import annotations

import pyarrow as pa

from skyprophet.batch import sources


def test_rebatch_gives_exact_sizes_in_order():
    batches = [pa.record_batch({"x": list(range(a, b))}) for a, b in ((0, 3), (3, 4), (4, 11), (11, 12))]
    tables = list(sources.rebatch(iter(batches), 5))
    assert [t.num_rows for t in tables] == [5, 5, 2]
    assert [v for t in tables for v in t["x"].to_pylist()] == list(range(12))
