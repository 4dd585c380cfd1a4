"""Tests for the interleaved sampler benchmark (policy_accel.eval.bench), its plots and ``bench``."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
from helpers import tiny_policy

from policy_accel.cli.main import main
from policy_accel.eval.bench import BenchSpecError, compare_pairs, run_benchmark
from policy_accel.eval.plots import pareto_front, plot_latency_distributions, plot_reward_vs_latency
from policy_accel.eval.report import bench_markdown, comparison_table
from policy_accel.eval.results import merge_results, paired_difference
from policy_accel.eval.rollout import evaluate_policy
from policy_accel.policy.diffusion_policy import DiffusionPolicy
from policy_accel.policy.loading import save_policy
from policy_accel.samplers.picard import PicardSampler

ENV_CFG = {"id": "policy_accel/PushT-v0", "obs_type": "keypoints", "max_episode_steps": 300}
SEEDS = [100000, 100001, 100002, 100003]
SAMPLERS = [
    {"name": "ddpm", "num_steps": 5},
    {"name": "ddim", "num_steps": 3},
    {"name": "paraddim", "num_steps": 4, "window": 2, "label": "para4-w2"},
]
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def policy() -> DiffusionPolicy:
    return tiny_policy()


@pytest.fixture(scope="module")
def report(policy: DiffusionPolicy) -> dict:
    return run_benchmark(policy, SAMPLERS, ENV_CFG, SEEDS, n_envs=2, max_steps=12, progress=False)


def test_one_pooled_result_per_sampler(report: dict, policy: DiffusionPolicy) -> None:
    results = report["results"]
    assert [r["label"] for r in results] == ["ddpm-5", "ddim-3", "para4-w2"] and report["baseline"] == "ddpm-5"
    assert report["batch_orders"] == [["ddpm-5", "ddim-3", "para4-w2"], ["ddim-3", "para4-w2", "ddpm-5"]]
    assert policy.sampler.name == "ddim-3"  # the policy's own sampler is left in place
    horizon = policy.config.n_action_steps
    for r in results:
        assert r["n_episodes"] == 4 and [e["seed"] for e in r["episodes"]] == SEEDS
        assert r["mean_max_reward"] == pytest.approx(np.mean([e["max_reward"] for e in r["episodes"]]))
        rewards = [e["max_reward"] for e in r["episodes"]]
        assert r["ci95"] == pytest.approx(1.96 * np.std(rewards, ddof=1) / 2)
        # Every batch plans ceil(longest episode / n_action_steps) chunks; all are pooled.
        expected_chunks = sum(math.ceil(max(e["length"] for e in r["episodes"][i : i + 2]) / horizon) for i in (0, 2))
        assert len(r["chunk_latencies_ms"]) == r["latency_ms"]["n_chunks"] == expected_chunks
        assert r["latency_ms"]["p50"] == pytest.approx(np.percentile(r["chunk_latencies_ms"], 50))
        assert r["n_batches"] == 2 and r["calibration"] is None
    json.dumps(report, allow_nan=False)


def test_speedups_and_rounds(report: dict) -> None:
    base, ddim, para = report["results"]
    assert base["speedup_vs_baseline"] == 1.0 and base["rounds_ratio_vs_baseline"] == 1.0
    assert base["rounds_per_chunk"] == 5 and ddim["rounds_per_chunk"] == 3
    assert ddim["rounds_ratio_vs_baseline"] == pytest.approx(5 / 3)
    assert 1 <= para["rounds_per_chunk"] <= 4 and para["nfe_per_chunk"] >= para["rounds_per_chunk"]
    assert para["rounds_ratio_vs_baseline"] == pytest.approx(5 / para["rounds_per_chunk"])
    assert ddim["speedup_vs_baseline"] == pytest.approx(base["latency_ms"]["p50"] / ddim["latency_ms"]["p50"])


def test_pooled_batches_equal_one_evaluation(report: dict, policy: DiffusionPolicy) -> None:
    # Rollouts reseed per batch, so pooling per-batch runs must reproduce a single run over all seeds.
    direct = evaluate_policy(
        policy, sampler="ddim-3", env_cfg=ENV_CFG, seeds=SEEDS, n_envs=2, progress=False, max_steps=12
    )
    pooled = report["results"][1]
    assert pooled["episodes"] == direct["episodes"]
    assert pooled["mean_max_reward"] == direct["mean_max_reward"] and pooled["ci95"] == direct["ci95"]
    assert pooled["latency_ms"]["n_chunks"] == direct["latency_ms"]["n_chunks"]
    assert pooled["nfe_per_chunk"] == direct["nfe_per_chunk"] == 3
    with pytest.raises(ValueError):
        merge_results([])


def test_auto_window_calibrates_once(policy: DiffusionPolicy, monkeypatch: pytest.MonkeyPatch) -> None:
    calls = []
    original = PicardSampler.calibrate

    def counting(self, *args, **kwargs):
        calls.append(self)
        return original(self, *args, **kwargs)

    monkeypatch.setattr(PicardSampler, "calibrate", counting)
    specs = [
        {"name": "ddim", "num_steps": 2},
        {"name": "paraddim", "num_steps": 4, "window": "auto", "auto_candidates": [1, 2]},
    ]
    out = run_benchmark(policy, specs, ENV_CFG, SEEDS, n_envs=2, max_steps=4, progress=False)
    assert len(calls) == 1
    cal = out["results"][1]["calibration"]
    assert cal["window"] in (1, 2) and set(cal["rounds"]) == {1, 2} and set(cal["call_cost_s"]) == {1, 2}
    assert "window" in bench_markdown(out)
    json.dumps(out, allow_nan=False)


def test_missing_student_is_skipped_and_bad_entries_fail(
    policy: DiffusionPolicy, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    missing = {"name": "student", "checkpoint": str(tmp_path / "nope.safetensors")}
    out = run_benchmark(
        policy, [{"name": "ddim", "num_steps": 2}, missing], ENV_CFG, SEEDS[:1], n_envs=1, max_steps=2, progress=False
    )
    assert [r["label"] for r in out["results"]] == ["ddim-2"]
    assert out["skipped"][0]["spec"] == missing and "not found" in out["skipped"][0]["reason"]
    assert "skipping sampler" in capsys.readouterr().out

    corrupt = tmp_path / "student.safetensors"
    corrupt.write_bytes(b"")  # present but not a checkpoint: an error, not a skip
    with pytest.raises(BenchSpecError, match="student"):
        run_benchmark(
            policy,
            [{"name": "student", "checkpoint": str(corrupt)}],
            ENV_CFG,
            SEEDS[:1],
            n_envs=1,
            max_steps=2,
            progress=False,
        )
    with pytest.raises(BenchSpecError, match="nosuch"):
        run_benchmark(policy, [{"name": "nosuch"}], ENV_CFG, SEEDS[:1], n_envs=1, max_steps=2, progress=False)
    with pytest.raises(BenchSpecError, match="label"):
        run_benchmark(policy, ["ddim-2", "ddim-2"], ENV_CFG, SEEDS[:1], n_envs=1, max_steps=2, progress=False)


def test_pareto_front() -> None:
    def r(latency: float, reward: float) -> dict:
        return {"latency_ms": {"p50": latency}, "mean_max_reward": reward}

    # slow+best, fast+worst, and a middle point dominated by the fast one.
    results = [r(100.0, 0.9), r(5.0, 0.6), r(20.0, 0.5), {"latency_ms": {"p50": None}, "mean_max_reward": 1.0}]
    assert pareto_front(results) == [1, 0]


def test_plots_are_pngs(report: dict, tmp_path: Path) -> None:
    for plot, name in ((plot_reward_vs_latency, "scatter.png"), (plot_latency_distributions, "boxes.png")):
        path = plot(report["results"], tmp_path / "sub" / name)
        data = path.read_bytes()
        assert data.startswith(PNG_MAGIC) and len(data) > 1000


def test_cli_end_to_end(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    checkpoint = save_policy(tiny_policy(), tmp_path / "p.safetensors")
    out_dir = tmp_path / "bench"
    missing = tmp_path / "student.safetensors"
    samplers = (
        "samplers=[{name: ddim, num_steps: 2},{name: paraddim, num_steps: 3, window: 2},"
        f"{{name: student, checkpoint: '{missing}'}}]"
    )
    args = [
        f"checkpoint={checkpoint}",
        samplers,
        "n_seeds=2",
        "n_envs=1",
        "max_steps=6",
        f"output_dir={out_dir}",
        "compare=[[paraddim-3,ddim-2],[student-2,ddim-2]]",
    ]
    main(["bench", *args])
    report = json.loads((out_dir / "report.json").read_text())
    assert [r["label"] for r in report["results"]] == ["ddim-2", "paraddim-3"]
    assert report["baseline"] == "ddim-2" and report["seeds"] == [100000, 100001] and report["n_envs"] == 1
    assert report["checkpoint"] == str(checkpoint) and report["command"].startswith("policy-accel bench ")
    assert all(r["n_episodes"] == 2 for r in report["results"]) and len(report["skipped"]) == 2
    assert [(c["a"], c["b"], c["n_seeds"]) for c in report["comparisons"]] == [("paraddim-3", "ddim-2", 2)]
    text = (out_dir / "report.md").read_text()
    assert "| ddim-2 | 2 |" in text and "1.00x" in text and "torch_threads" in text and "not found" in text
    assert "## Paired comparisons" in text and "| paraddim-3 | ddim-2 | 2 |" in text
    assert "no sampler labelled ['student-2']" in text
    for name in ("reward_vs_latency.png", "latency_distributions.png"):
        assert (out_dir / name).read_bytes().startswith(PNG_MAGIC)
    printed = capsys.readouterr().out
    assert "skipping sampler" in printed and "| paraddim-3 | 2 |" in printed


def test_cli_missing_checkpoint(tmp_path: Path) -> None:
    with pytest.raises(SystemExit, match="checkpoint not found"):
        main(["bench", f"checkpoint={tmp_path / 'nope.safetensors'}"])


def test_warm_start_entries_run_with_warm_start_and_restore_the_policy(policy: DiffusionPolicy) -> None:
    para = {"name": "paraddpm", "num_steps": 6, "window": 3, "tolerance": 1e-3}
    out = run_benchmark(
        policy, [para, {**para, "warm_start": True}], ENV_CFG, SEEDS[:2], n_envs=1, max_steps=20, progress=False
    )
    cold, warm = out["results"]
    assert (cold["label"], warm["label"]) == ("paraddpm-6", "paraddpm-6+warm")
    assert cold["warm_start"] is False and warm["warm_start"] is True
    assert policy.warm_start is False  # the policy's own setting is restored
    # Warm start shifts the previous chunk's noise instead of drawing new noise, so the two
    # runs plan different chunks after the first one; both still plan every chunk.
    assert cold["latency_ms"]["n_chunks"] > 0 and warm["latency_ms"]["n_chunks"] > 0
    with pytest.raises(BenchSpecError, match="warm_start"):
        run_benchmark(
            policy, [{**para, "warm_start": "yes"}], ENV_CFG, SEEDS[:1], n_envs=1, max_steps=2, progress=False
        )


def test_paired_difference_pairs_by_seed() -> None:
    def result(label: str, rewards: dict[int, float], p50: float) -> dict:
        return {
            "label": label,
            "latency_ms": {"p50": p50},
            "episodes": [{"seed": seed, "max_reward": r} for seed, r in rewards.items()],
        }

    a = result("a", {1: 0.9, 2: 0.5, 3: 0.7, 4: 0.8}, 2.0)
    b = result("b", {4: 0.7, 3: 0.7, 2: 0.4, 1: 0.8, 9: 0.0}, 10.0)  # other order, one extra seed
    c = paired_difference(a, b)
    assert c["n_seeds"] == 4 and c["mean_diff"] == pytest.approx(0.075)
    assert (c["a_better"], c["b_better"], c["ties"]) == (3, 0, 1)
    assert c["ci95"] == pytest.approx(1.96 * np.std([0.1, 0.1, 0.0, 0.1], ddof=1) / 2)
    assert c["a_clearly_better"] and c["latency_ratio_b_over_a"] == pytest.approx(5.0)
    assert not paired_difference(b, a)["a_clearly_better"]
    assert c["success_diff"] is None  # these episodes record no success: nothing is guessed
    for result_, successes in ((a, [1, 0, 1, 1]), (b, [0, 1, 0, 1, 0])):
        for episode, success in zip(result_["episodes"], successes):
            episode["success"] = bool(success)
    with_success = paired_difference(a, b)  # seeds 1-4: a succeeds 1,0,1,1; b (listed 4,3,2,1) 1,0,1,0
    assert with_success["success_diff"] == pytest.approx(0.25)
    assert with_success["success_ci95"] == pytest.approx(1.96 * np.std([1, 0, 0, 0], ddof=1) / 2)
    assert "+0.250 ± " in comparison_table([with_success]) and "n/a" in comparison_table([c])
    comparisons, notes = compare_pairs([a, b], [["a", "b"], ["a", "zz"]])
    assert len(comparisons) == 1 and "zz" in notes[0]["reason"]
    with pytest.raises(BenchSpecError, match="pair"):
        compare_pairs([a, b], [["a"]])


def test_paired_difference_pairs_metaworld_episodes_by_task_and_seed() -> None:
    """On Meta-World one seed is one episode per task: seed 7 on reach is not seed 7 on push."""

    def result(label: str, rewards: dict[tuple[str, int], float]) -> dict:
        return {
            "label": label,
            "latency_ms": {"p50": 1.0},
            "episodes": [{"task": t, "seed": s, "max_reward": r, "success": r > 5} for (t, s), r in rewards.items()],
        }

    a = result("a", {("reach", 7): 10.0, ("push", 7): 1.0, ("reach", 8): 9.0})
    b = result("b", {("push", 7): 1.0, ("reach", 8): 9.0, ("reach", 7): 10.0})  # same starts, other order
    c = paired_difference(a, b)
    assert c["n_seeds"] == 3 and c["mean_diff"] == 0.0 and c["ties"] == 3 and c["success_diff"] == 0.0


def test_a_bench_entry_with_a_student_guess_takes_the_shipped_student() -> None:
    """``initial_guess: student`` without ``guess_checkpoint`` resolves to the student shipped beside the teacher
    in a bench entry too (the bench builds its samplers itself), and says which option is missing elsewhere."""
    from helpers.paths import TEACHER

    from policy_accel.eval.bench import prepare_samplers
    from policy_accel.policy.loading import load_policy

    spec = {"name": "paraddpm", "num_steps": 100, "window": 32, "initial_guess": "student"}
    entries, skipped = prepare_samplers(load_policy(TEACHER), [spec])
    assert not skipped and isinstance(entries[0].sampler, PicardSampler)
    assert entries[0].sampler.initial_guess == "student"
    with pytest.raises(BenchSpecError, match="guess_checkpoint"):
        prepare_samplers(tiny_policy("ddim-3"), [spec])
