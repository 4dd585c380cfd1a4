"""The profiler splits a chunk's time into network and bookkeeping and counts rows."""

from __future__ import annotations

import torch
from helpers import tiny_policy

from policy_accel.eval.profiling import profile_markdown, profile_samplers


def test_profile_counts_rows_and_splits_time():
    policy = tiny_policy()
    conds = [torch.randn(1, 40, generator=torch.Generator().manual_seed(i)) for i in range(2)]
    report = profile_samplers(
        policy, ["ddim-6", {"name": "paraddim", "num_steps": 6, "window": 3}], conds, repeats=1, windows=(1, 2, 4)
    )
    sequential, picard = report["samplers"]
    assert sequential["rounds"] == 6 == sequential["rows"]
    assert picard["rounds"] <= 6 and picard["rows"] >= picard["rounds"]
    for row in report["samplers"]:
        assert 0 < row["network_ms"] <= row["chunk_ms"] and row["overhead_ms"] >= 0
    assert set(report["call_cost_ms"]) == {1, 2, 4}
    table = profile_markdown(report)
    assert "| ddim-6 |" in table and "rows per call" in table
