"""Evaluation under latency: the execution modes on the simulated clock, their checks and the bench sweep."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from helpers import tiny_policy

from policy_accel.cli.main import main
from policy_accel.eval.bench import BenchSpecError, execution_variants, prepare_samplers, run_benchmark, variant_label
from policy_accel.eval.execution import DelayedExecution, check_execution_options, make_execution
from policy_accel.eval.results import Timing
from policy_accel.eval.rollout import evaluate_policy
from policy_accel.policy.chunking import BLEND_OLD_WEIGHT, delay_steps
from policy_accel.policy.diffusion_policy import DiffusionPolicy
from policy_accel.policy.loading import save_policy
from policy_accel.samplers import SampleOutput, SampleStats

ENV_CFG = {"id": "policy_accel/PushT-v0", "obs_type": "keypoints", "max_episode_steps": 300}
SEEDS = [100000, 100001, 100002]


@pytest.fixture(scope="module")
def policy() -> DiffusionPolicy:
    return tiny_policy("ddim-3")


def _episodes(result: dict) -> list[tuple[float, int]]:
    return [(e["max_reward"], e["length"]) for e in result["episodes"]]


def run(policy: DiffusionPolicy, execution: str = "sync", delay: int | str = 0, **kw) -> dict:
    return evaluate_policy(
        policy, None, ENV_CFG, SEEDS, n_envs=3, progress=False, max_steps=40, execution=execution, delay=delay, **kw
    )


def test_async_and_blocking_at_zero_delay_equal_sync(policy: DiffusionPolicy) -> None:
    sync = run(policy)
    assert sync["execution"] == "sync" and sync["delay_steps"] == 0
    for mode in ("async", "blocking"):
        other = run(policy, mode, 0)
        assert _episodes(other) == _episodes(sync), mode
        assert other["smoothness"] == sync["smoothness"], mode


@pytest.mark.parametrize("mode", ["blocking", "async", "blend", "rtc"])
def test_a_rerun_gives_identical_results(policy: DiffusionPolicy, mode: str) -> None:
    first, second = run(policy, mode, 3), run(policy, mode, 3)
    assert _episodes(first) == _episodes(second)
    assert first["action_jumps"] == second["action_jumps"]
    assert first["delay_steps"] == 3 and first["execution"] == mode


def _drive(policy: DiffusionPolicy, mode: str, delay: int, steps: int = 40) -> tuple[list, list[np.ndarray]]:
    """Run an executor on random observations; return the planned chunks (with their kwargs) and the actions."""
    planned: list[tuple[np.ndarray, dict]] = []
    original = policy.predict_action_chunk

    def recording(history, **kwargs):
        chunk = original(history, **kwargs)
        planned.append((chunk.numpy().copy(), kwargs))
        return chunk

    policy.predict_action_chunk = recording
    try:
        policy.reset(seed=0)
        executor = DelayedExecution(policy, mode, delay)
        rng = np.random.default_rng(0)
        actions = [executor.act(rng.uniform(0, 512, (2, 20)), Timing()) for _ in range(steps)]
    finally:
        del policy.predict_action_chunk
    return planned, actions


@pytest.mark.parametrize("delay", [0, 2, 5])
def test_rtc_holds_the_committed_actions_in_env_units(policy: DiffusionPolicy, delay: int) -> None:
    cfg = policy.config
    planned, actions = _drive(policy, "rtc", delay)
    e, fa = cfg.n_action_steps, cfg.first_action
    assert len(planned) >= 4
    for k, (chunk, kwargs) in enumerate(planned[1:], start=1):
        start = e * k - delay  # planning steps: e - d, 2e - d, ...
        assert kwargs["constraint"].hard == fa + delay
        for j in range(fa + delay):  # positions of steps already executed or executing while it plans
            step = start - fa + j
            if 0 <= step < len(actions):
                np.testing.assert_allclose(chunk[:, j], actions[step], rtol=1e-5, atol=1e-3)
        arrival = start + delay
        if arrival < len(actions):  # and from its arrival on, the new chunk executes
            np.testing.assert_allclose(actions[arrival], chunk[:, fa + delay], rtol=1e-6)


def test_the_schedules(policy: DiffusionPolicy) -> None:
    cfg = policy.config
    e, fa, d = cfg.n_action_steps, cfg.first_action, 3
    # blocking: hold the last command for d steps, then the new chunk from its first executed position
    planned, actions = _drive(policy, "blocking", d)
    for step in range(e, e + d):
        np.testing.assert_array_equal(actions[step], actions[e - 1])
    np.testing.assert_allclose(actions[e + d], planned[1][0][:, fa], rtol=1e-6)
    # async: planned d steps early; on arrival skip the d actions already past
    planned, actions = _drive(policy, "async", d)
    np.testing.assert_allclose(actions[e], planned[1][0][:, fa + d], rtol=1e-6)
    np.testing.assert_allclose(actions[e - 1], planned[0][0][:, fa + e - 1], rtol=1e-6)
    # blend: where the old chunk still has actions, 0.3 old + 0.7 new (LeRobot's default)
    planned, actions = _drive(policy, "blend", d)
    old, new = planned[0][0], planned[1][0]
    expected = BLEND_OLD_WEIGHT * old[:, fa + e] + (1 - BLEND_OLD_WEIGHT) * new[:, fa + d]
    np.testing.assert_allclose(actions[e], expected, rtol=1e-5)


def test_measured_delay_is_reported_in_control_steps(policy: DiffusionPolicy) -> None:
    result = run(policy, "rtc", "measured")
    assert result["control_hz"] == 10.0
    assert result["delay_measured_ms"] > 0
    assert result["delay_steps"] == delay_steps(result["delay_measured_ms"] / 1e3, 10.0)
    assert delay_steps(0.51, 10) == 6 and delay_steps(0.5, 10) == 5 and delay_steps(0.0, 80) == 0


def test_bad_execution_options_fail_before_any_work(policy: DiffusionPolicy) -> None:
    for execution, delay, match in [
        ("warp", 0, "execution must be one of"),
        ("rtc", -1, "delay must be an integer"),
        ("rtc", 2.5, "delay must be an integer"),
        ("rtc", True, "delay must be an integer"),
        ("async", "auto", "delay must be an integer"),
    ]:
        with pytest.raises(ValueError, match=match):
            run(policy, execution, delay)
    with pytest.raises(ValueError, match=r"delay=8 does not fit execution=rtc.*at most delay=7.*blocking or sync"):
        check_execution_options("rtc", 8, policy.config)
    with pytest.raises(ValueError, match="delay=40 does not fit execution=blend"):
        run(policy, "blend", 40)
    assert run(policy, "blocking", 40)["delay_steps"] == 40  # blocking has no horizon limit
    with pytest.raises(ValueError, match="rtc guidance span must be an integer"):
        make_execution(policy, "rtc", 2, span=-1)
    with pytest.raises(ValueError, match="control_hz must be > 0"):
        delay_steps(0.1, 0)


def test_rtc_needs_a_sampler_with_inpainting() -> None:
    class Plain:
        name = "plain"

        def sample(self, denoiser, cond, shape, generator=None, **kwargs):
            return SampleOutput(torch.zeros(shape), SampleStats(nfe=1, rounds=1))

    policy = tiny_policy()
    policy.sampler = Plain()
    with pytest.raises(ValueError, match="supports inpainting"):
        make_execution(policy, "rtc", 2)
    make_execution(policy, "async", 2)  # the other modes need nothing of the sampler


def test_bench_crosses_modes_and_delays(policy: DiffusionPolicy) -> None:
    runs, notes = execution_variants({"name": "ddim"}, ["sync", "async", "rtc"], [0, 7, 8], 4.0, policy.config)
    assert ("sync", 0, 4.0) in runs and ("rtc", 7, 4.0) in runs and ("async", 8, 4.0) not in runs
    assert len([r for r in runs if r[0] == "sync"]) == 1 and len(notes) == 2
    assert variant_label("ddim-3", "rtc", 4, 4.0, 4.0) == "ddim-3/rtc/d4"
    assert variant_label("ddim-3", "rtc", 4, 0.0, 4.0) == "ddim-3/rtc/d4/g0"
    report = run_benchmark(
        policy,
        [{"name": "ddim", "num_steps": 3}, {"name": "ddim", "num_steps": 3, "label": "own", "execution": "blend"}],
        ENV_CFG,
        SEEDS[:2],
        n_envs=2,
        max_steps=20,
        progress=False,
        execution=["sync", "rtc"],
        delay=[2],
    )
    labels = [r["label"] for r in report["results"]]
    assert labels == ["ddim-3", "ddim-3/rtc/d2", "own/blend/d2"]
    rtc = report["results"][1]
    assert rtc["execution"] == "rtc" and rtc["delay_steps"] == 2 and rtc["smoothness"]["switch"]["n"] > 0
    assert "action_jumps" not in rtc
    assert rtc["rtc_span"] == 2 and report["results"][0]["rtc_span"] is None


def test_the_guidance_span_changes_rtc_and_nothing_else(policy: DiffusionPolicy) -> None:
    short, whole = run(policy, "rtc", 2), run(policy, "rtc", 2, span=None)
    assert whole["rtc_span"] == "all" and short["rtc_span"] == 2
    assert [e["max_reward"] for e in short["episodes"]] != [e["max_reward"] for e in whole["episodes"]] or (
        short["smoothness"] != whole["smoothness"]
    )
    assert run(policy, "async", 2, span=None)["episodes"] == run(policy, "async", 2)["episodes"]
    entries, _ = prepare_samplers(policy, [{"name": "ddim", "num_steps": 3, "rtc_span": None}], False, "rtc", 2)
    assert [e.label for e in entries] == ["ddim-3/rtc/d2/sall"] and entries[0].span is None
    with pytest.raises(BenchSpecError, match="span must be an integer"):
        prepare_samplers(policy, [{"name": "ddim", "num_steps": 3, "rtc_span": "x"}], False, "rtc", 2)


def test_cli_refuses_a_delay_past_the_horizon(policy: DiffusionPolicy, tmp_path, capsys) -> None:
    checkpoint = save_policy(policy, tmp_path / "tiny.safetensors")
    with pytest.raises(SystemExit, match=r"delay=9 does not fit execution=async.*1 \+ 9 \+ 8 > 16"):
        main(["eval", f"checkpoint={checkpoint}", "execution=async", "delay=9", f"output_dir={tmp_path / 'out'}"])
    with pytest.raises(SystemExit, match="execution must be one of"):
        main(["eval", f"checkpoint={checkpoint}", "execution=later", f"output_dir={tmp_path / 'out2'}"])
    with pytest.raises(SystemExit, match="delay must be an integer"):
        main(["bench", f"checkpoint={checkpoint}", "delay=[1,-2]", f"output_dir={tmp_path / 'out3'}"])
    main(
        [
            "eval",
            f"checkpoint={checkpoint}",
            "sampler=ddim-3",
            "execution=rtc",
            "delay=2",
            "n_seeds=2",
            "n_envs=2",
            "max_steps=12",
            f"output_dir={tmp_path / 'ok'}",
        ]
    )
    assert "rtc" in (tmp_path / "ok" / "report.json").read_text()


def test_help_documents_the_execution_options(capsys) -> None:
    for command in ("eval", "bench"):
        try:
            main([command, "--help"])
        except SystemExit as exc:
            assert not exc.code
        text = capsys.readouterr().out
        assert "execution" in text and "delay" in text and "measured" in text and "rtc_guidance" in text
