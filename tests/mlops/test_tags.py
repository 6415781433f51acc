"""Tag names steps exchange: the typed readers read back what the writers write."""

import pandas as pd

from skyprophet.mlops import tags


def test_staged_reads_back_what_register_writes():
    assert tags.is_staged({tags.STAGED_TAG: tags.staged_value(True)})
    assert not tags.is_staged({tags.STAGED_TAG: tags.staged_value(False)})
    assert not tags.is_staged({}), "no tag: not staged"
    assert tags.staged_value(True) == "True", "the value runs of before carry"


def test_trained_through_reads_back_what_train_writes():
    through = pd.Timestamp("2017-10-31 23:55:00")
    assert tags.trained_through({tags.TRAINED_THROUGH_TAG: tags.trained_through_value(through)}) == through
    assert tags.trained_through({}) is None
    assert tags.trained_through({tags.TRAINED_THROUGH_TAG: ""}) is None
