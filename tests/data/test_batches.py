"""Resumable batches: the stream is a function of (seed, position), so seeking equals replaying."""

from __future__ import annotations

from itertools import islice

import pytest

from policy_accel.data.batches import ResumableBatchSampler


def test_seek_continues_the_uninterrupted_stream_across_epochs():
    full = list(islice(iter(ResumableBatchSampler(10, 3, seed=7)), 12))  # 3 batches an epoch: 4 epochs
    resumed = ResumableBatchSampler(10, 3, seed=7, position=5)
    assert list(islice(iter(resumed), 7)) == full[5:]
    assert resumed.position == 12


def test_each_epoch_is_a_fresh_shuffle_without_repeats():
    batches = list(islice(iter(ResumableBatchSampler(9, 3, seed=0)), 6))
    first, second = sum(batches[:3], []), sum(batches[3:], [])
    assert sorted(first) == sorted(second) == list(range(9))
    assert first != second
    assert batches != list(islice(iter(ResumableBatchSampler(9, 3, seed=1)), 6))


def test_bad_sizes_are_refused():
    with pytest.raises(ValueError, match="full batch"):
        ResumableBatchSampler(2, 3)
    with pytest.raises(ValueError, match="position"):
        ResumableBatchSampler(5, 2).seek(-1)
