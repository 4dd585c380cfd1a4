"""Meta-World MT10 (robot-arm manipulation, MuJoCo): success per task, scripted-expert demonstrations.

One seed means one episode *per task* (seed 100000 on ``push`` and on ``reach`` are two episodes), so
``n_seeds=50`` on MT10 is 500 episodes. Episodes end at their first success (nothing after it changes
the score) or at Meta-World's 500 steps. Episodes of all tasks share the vector env (all observations
are 49 numbers), so the policy sees one batch. Success is ``info["success"]``; max reward is
Meta-World's dense reward (0..10). Evaluations report success per task and the mean over tasks.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Mapping, Sequence

import numpy as np

from policy_accel.envs import METAWORLD_ID
from policy_accel.envs.metaworld.config import metaworld_tasks
from policy_accel.envs.metaworld.tasks import MAX_EPISODE_STEPS, MT10_TASKS, OBS_TYPES
from policy_accel.eval.families.base import EnvFamily, ObsAdapter, RolloutSetup, StepScore, cfg_value
from policy_accel.eval.families.obs_keys import make_obs_adapter
from policy_accel.eval.results import add_task_breakdown

if TYPE_CHECKING:
    import gymnasium as gym

    from policy_accel.data.metaworld_dataset import MetaWorldDataset


class MetaWorldFamily(EnvFamily):
    name = "metaworld"
    title = "Meta-World"
    env_id = METAWORLD_ID
    reward_name = "Meta-World's dense reward (0-10)"
    obs_types = tuple(OBS_TYPES)
    task_order = MT10_TASKS

    def env_hint(self, policy_config: Any) -> str:
        return "env=metaworld_mt10 (or env=metaworld env.task=TASK)"

    def checkpoint_advice(self) -> str:
        return "a Meta-World checkpoint, or "

    def check_env(self, env_cfg: Any) -> str | None:
        try:
            metaworld_tasks(env_cfg)
        except ValueError as exc:
            return str(exc)
        return None

    def check_policy(
        self, policy_config: Any, env_cfg: Any, checkpoint: Any = "the checkpoint", observations: bool = True
    ) -> str | None:
        env_obs = cfg_value(env_cfg, "obs_type")
        if env_obs != policy_config.obs_type:
            return (
                f"'{checkpoint}' observes '{policy_config.obs_type}' but the env gives '{env_obs}'; "
                f"pass env.obs_type={policy_config.obs_type}"
            )
        return None

    def tasks(self, env_cfg: Any) -> list[str]:
        return metaworld_tasks(env_cfg)

    def setup(self, policy_config: Any, env_cfg: Any, max_steps: int | None) -> RolloutSetup:
        tasks = metaworld_tasks(env_cfg)
        obs_type = str(cfg_value(env_cfg, "obs_type"))
        if obs_type not in OBS_TYPES:
            raise ValueError(f"unknown Meta-World obs_type '{obs_type}'; choose one of {sorted(OBS_TYPES)}")
        if obs_type != policy_config.obs_type:
            raise ValueError(
                f"policy was trained on obs_type '{policy_config.obs_type}' but the env config gives '{obs_type}'"
            )
        if max_steps is None:  # the env config's limit, as for PushT
            max_steps = cfg_value(env_cfg, "max_episode_steps", MAX_EPISODE_STEPS)
        max_steps = int(max_steps)
        if not 1 <= max_steps <= MAX_EPISODE_STEPS:
            raise ValueError(f"Meta-World episodes last 1..{MAX_EPISODE_STEPS} steps, got max_steps={max_steps}")
        return RolloutSetup(env_id=METAWORLD_ID, obs_type=obs_type, max_steps=max_steps, tasks=tuple(tasks))

    def make_env(self, setup: RolloutSetup, task: str | None, **options: Any) -> gym.Env:
        import gymnasium as gym

        import policy_accel.envs  # noqa: F401  (registers the gymnasium ids)

        return gym.make(
            setup.env_id,
            task=task,
            obs_type=setup.obs_type,
            terminate_on_success=True,
            max_episode_steps=setup.max_steps,
            **options,
        )

    def obs_adapter(self, space: gym.Space, policy_config: Any, setup: RolloutSetup) -> ObsAdapter:
        return make_obs_adapter(space, policy_config, setup.obs_type, env_hint=self.env_hint(policy_config))

    def score(self, info: Mapping[str, Any], reward: Any, n: int) -> StepScore:
        success = np.asarray(info.get("success", np.zeros(n)), dtype=bool)
        return StepScore(np.asarray(reward, dtype=float), success)

    def summarise(self, result: dict[str, Any]) -> dict[str, Any]:
        """Success per task (with CI95) and the task-averaged success rate, the MT10 score."""
        return add_task_breakdown(result, self.task_order)

    def dataset(
        self,
        zarr_path: Any,
        obs_type: str,
        horizon: int,
        n_obs_steps: int,
        n_action_steps: int,
        tasks: Sequence[str] | None = None,
        **split: Any,
    ) -> MetaWorldDataset:
        """The zarr of ``policy-accel record-demos``; ``tasks=None`` keeps every task it holds."""
        from policy_accel.data.metaworld_dataset import MetaWorldDataset

        extra = {} if tasks is None else {"tasks": list(tasks)}
        return MetaWorldDataset(
            zarr_path,
            obs_type=obs_type,
            horizon=horizon,
            n_obs_steps=n_obs_steps,
            n_action_steps=n_action_steps,
            **split,
            **extra,
        )

    def record_demos(self, *args: Any, **kwargs: Any) -> dict[str, Any]:
        """Noisy scripted-expert episodes into a zarr (:func:`.metaworld_demos.record_demos`)."""
        from policy_accel.eval.families.metaworld_demos import record_demos

        return record_demos(*args, **kwargs)
