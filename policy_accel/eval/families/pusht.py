"""PushT (Diffusion Policy's planar pushing task): one task, coverage-scored, human demonstrations.

Success is the env's own ``info["is_success"]`` (coverage of the goal above the env's threshold), max
reward is the env's coverage-based reward, and every episode records its ``max_coverage``. Policies
read the env as trained: project checkpoints by obs type, Diffusion Policy image checkpoints through the
env config's ``obs_keys``, LeRobot folders through their feature names (:mod:`.lerobot_pusht`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Mapping, Sequence

import numpy as np

from policy_accel.envs import PUSHT_ID, PUSHT_MAX_EPISODE_STEPS
from policy_accel.eval.families.base import EnvFamily, ObsAdapter, RolloutSetup, StepScore, cfg_value
from policy_accel.eval.families.lerobot_pusht import env_plan, uses_feature_names
from policy_accel.eval.families.obs_keys import make_obs_adapter

if TYPE_CHECKING:
    import gymnasium as gym

    from policy_accel.data.datasets import PushTDataset

PUSHT_OBS_TYPES = ("keypoints", "state", "pixels", "pixels_agent_pos")


class PushTFamily(EnvFamily):
    name = "pusht"
    title = "PushT"
    env_id = PUSHT_ID
    reward_name = "Diffusion Policy's coverage score"
    obs_types = PUSHT_OBS_TYPES
    supports_video = True

    def describe_policy(self, policy_config: Any) -> str:
        return f"a PushT policy (obs_type '{policy_config.obs_type}', {policy_config.obs_dim} numbers)"

    def env_hint(self, policy_config: Any) -> str:
        """Image Diffusion Policies observe ``env=pusht_image`` (its ``obs_keys``); others ``env=pusht_<obs_type>``."""
        if policy_config.dict_obs and policy_config.obs_type == "pixels_agent_pos":
            return "env=pusht_image"
        return f"env=pusht_{policy_config.obs_type}"

    def owns_policy(self, policy_config: Any) -> bool:
        return super().owns_policy(policy_config) or uses_feature_names(policy_config)

    def check_policy(
        self, policy_config: Any, env_cfg: Any, checkpoint: Any = "the checkpoint", observations: bool = True
    ) -> str | None:
        if not observations:
            return None
        if uses_feature_names(policy_config):  # a LeRobot folder: the rollout picks the PushT view it needs
            try:
                env_plan(policy_config, env_cfg)
            except ValueError as exc:
                return f"'{checkpoint}': {exc}"
            return None
        env_obs = cfg_value(env_cfg, "obs_type")
        if policy_config.obs_type != env_obs:
            return (
                f"'{checkpoint}' was trained on obs_type '{policy_config.obs_type}' but env gives '{env_obs}'; "
                f"pass {self.env_hint(policy_config)}"
            )
        return None

    def setup(self, policy_config: Any, env_cfg: Any, max_steps: int | None) -> RolloutSetup:
        obs_type = cfg_value(env_cfg, "obs_type", "keypoints")
        plan = env_plan(policy_config, env_cfg)  # LeRobot feature names: the PushT view the policy's features need
        if max_steps is None:
            max_steps = cfg_value(env_cfg, "max_episode_steps", PUSHT_MAX_EPISODE_STEPS)
        return RolloutSetup(
            env_id=str(cfg_value(env_cfg, "id", PUSHT_ID)),
            obs_type=plan.obs_type if plan is not None else obs_type,
            max_steps=int(max_steps),
            env_kwargs=dict(plan.env_kwargs) if plan is not None else {},
            obs_keys=cfg_value(env_cfg, "obs_keys"),
            adapt=plan.adapt if plan is not None else None,
            render_size=int(cfg_value(env_cfg, "render_size", 96)),
        )

    def make_env(self, setup: RolloutSetup, task: str | None, **options: Any) -> gym.Env:
        import gymnasium as gym

        import policy_accel.envs  # noqa: F401  (registers the gymnasium ids)

        kwargs = {**setup.env_kwargs, **options}
        return gym.make(setup.env_id, obs_type=setup.obs_type, max_episode_steps=setup.max_steps, **kwargs)

    def obs_adapter(self, space: gym.Space, policy_config: Any, setup: RolloutSetup) -> ObsAdapter:
        if setup.adapt is not None:
            return setup.adapt
        return make_obs_adapter(space, policy_config, setup.obs_type, setup.obs_keys, self.env_hint(policy_config))

    def score(self, info: Mapping[str, Any], reward: Any, n: int) -> StepScore:
        coverage = np.asarray(info.get("coverage", np.zeros(n)), dtype=float)
        success = np.asarray(info.get("is_success", np.zeros(n, dtype=bool)), dtype=bool)
        return StepScore(np.asarray(reward), success, {"max_coverage": coverage})

    def dataset(
        self,
        zarr_path: Any,
        obs_type: str,
        horizon: int,
        n_obs_steps: int,
        n_action_steps: int,
        tasks: Sequence[str] | None = None,
        **split: Any,
    ) -> PushTDataset:
        from policy_accel.data.datasets import PushTDataset

        return PushTDataset(
            zarr_path,
            obs_type=obs_type,
            horizon=horizon,
            n_obs_steps=n_obs_steps,
            n_action_steps=n_action_steps,
            **split,
        )

    def replay_demos(self, *args: Any, **kwargs: Any) -> dict[str, Any]:
        """Open-loop replay of the human demonstrations (:func:`.pusht_replay.replay_demos`)."""
        from policy_accel.eval.families.pusht_replay import replay_demos

        return replay_demos(*args, **kwargs)
