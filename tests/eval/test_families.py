"""Env families (policy_accel.eval.families), the per-episode record and the eval package's import graph."""

from __future__ import annotations

import numpy as np
import pytest
from helpers import tiny_policy

from policy_accel.eval.families import METAWORLD, PUSHT, check_policy, family_for, family_named, family_of_policy
from policy_accel.eval.results import EpisodeResult, merge_results
from policy_accel.eval.rollout import evaluate_policy

PUSHT_CFG = {"id": "policy_accel/PushT-v0", "obs_type": "keypoints", "max_episode_steps": 300}
MT10_CFG = {"id": "policy_accel/MetaWorld-v0", "tasks": ["reach", "push"], "obs_type": "metaworld_state_task"}


def test_families_are_found_by_env_config_result_and_policy() -> None:
    assert family_for(PUSHT_CFG) is PUSHT and family_for(MT10_CFG) is METAWORLD
    assert family_for({"obs_type": "metaworld_state"}) is METAWORLD  # obs type alone (no id)
    assert family_for({"env_id": "policy_accel/MetaWorld-v0"}) is METAWORLD  # a result's env_id
    assert family_for({"id": "someone/PushTVariant-v0", "obs_type": "keypoints"}) is PUSHT
    assert family_named("metaworld") is METAWORLD
    with pytest.raises(ValueError, match="unknown env family 'nosuch'"):
        family_named("nosuch")
    assert family_of_policy(tiny_policy().config) is PUSHT


def test_control_rate_comes_from_the_env_metadata() -> None:
    assert PUSHT.control_hz() == 10.0 and METAWORLD.control_hz() == 80.0


def test_policy_checks_name_the_fix() -> None:
    config = tiny_policy().config  # PushT keypoints
    assert check_policy(config, PUSHT_CFG) is None
    assert "is a PushT policy" in check_policy(config, MT10_CFG, "ck")
    assert "pass env=pusht_keypoints" in check_policy(config, {**PUSHT_CFG, "obs_type": "state"}, "ck")
    assert check_policy(config, {**PUSHT_CFG, "obs_type": "state"}, "ck", observations=False) is None
    assert check_policy(config, {**MT10_CFG, "tasks": ["nosuch"]}).startswith("env: unknown Meta-World task")


def test_episode_record_round_trips_through_json() -> None:
    pusht = EpisodeResult(seed=3, max_reward=0.5, success=False, length=7, metrics={"max_coverage": 0.4})
    assert pusht.to_dict() == {"seed": 3, "max_reward": 0.5, "success": False, "length": 7, "max_coverage": 0.4}
    assert EpisodeResult.from_dict(pusht.to_dict()) == pusht
    task = EpisodeResult(seed=3, max_reward=2.0, success=True, length=9, task="push")
    assert list(task.to_dict())[0] == "task" and EpisodeResult.from_dict(task.to_dict()).key == ("push", 3)


def test_one_loop_serves_both_families_and_merges_like_one_run() -> None:
    policy = tiny_policy()
    seeds = [100000, 100001]
    whole = evaluate_policy(policy, "ddim-2", PUSHT_CFG, seeds, n_envs=1, progress=False, max_steps=6)
    parts = [evaluate_policy(policy, "ddim-2", PUSHT_CFG, [s], n_envs=1, progress=False, max_steps=6) for s in seeds]
    merged = merge_results(parts)
    assert merged["episodes"] == whole["episodes"] and merged["mean_max_reward"] == whole["mean_max_reward"]
    assert all(set(e) == {"seed", "max_reward", "success", "length", "max_coverage"} for e in whole["episodes"])
    assert np.isclose(merged["latency_ms"]["n_chunks"], whole["latency_ms"]["n_chunks"])


def test_eval_has_no_import_cycles() -> None:
    import grimp  # comes with import-linter (the [test] extra)

    graph = grimp.build_graph("policy_accel")
    modules = [m for m in graph.modules if m.startswith("policy_accel.eval.")]
    cycles = [
        (a, b)
        for a in modules
        for b in graph.find_modules_directly_imported_by(a)
        if b.startswith("policy_accel.eval.") and graph.find_shortest_chain(importer=b, imported=a)
    ]
    assert cycles == []
