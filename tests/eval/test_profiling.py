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


def test_a_students_own_network_is_timed_in_network_and_the_report_names_the_machine():
    """A student ignores the teacher's denoiser: its own network's calls count as 'in network', row by row."""
    import copy

    from policy_accel.samplers import StudentSampler
    from policy_accel.samplers.solvers import trailing_grid

    policy = tiny_policy()
    # a 4-step student with its own (here: a copy of the teacher's) network; the teacher's is never called
    student = StudentSampler(
        copy.deepcopy(policy.model), policy.normalizer, policy.config.to_dict(), trailing_grid(100, 4)
    )
    conds = [torch.randn(1, 40, generator=torch.Generator().manual_seed(i)) for i in range(2)]
    report = profile_samplers(policy, [student], conds, repeats=1, windows=(1, 2))
    (row,) = report["samplers"]
    assert row["rounds"] == 4 and row["rows"] == 4  # one row per student step, counted from its network
    assert 0 < row["network_ms"] <= row["chunk_ms"] and row["overhead_ms"] >= 0
    assert row["network_ms"] > 0.5 * row["chunk_ms"]  # the U-Net is most of a chunk, not 0.0 ms
    assert "forward" not in student.network.__dict__  # the timing wrapper is gone after profiling
    assert report["machine"]["cpu_count"] >= 1 and report["machine"]["torch"] == torch.__version__
    assert f"torch_threads {torch.get_num_threads()}" in profile_markdown(report)
