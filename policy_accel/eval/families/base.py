"""The env family interface: everything that differs between PushT and Meta-World, in one place.

A family owns making its envs, its control rate, turning env observations into what each kind of policy
reads (project checkpoints, Diffusion Policy ``obs_keys``, LeRobot feature names), what reward and success
mean, its demonstration dataset, and demo recording or replay. The rollout loop, the benchmark, the
reports and the commands ask the family instead of branching on the env, so a new env family is one
folder in ``envs/`` and one module here registered in :mod:`policy_accel.eval.families`.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Mapping, Sequence

import numpy as np

if TYPE_CHECKING:
    import gymnasium as gym

    from policy_accel.data.datasets import WindowDataset

ObsAdapter = Callable[[Any], Any]
Episode = tuple[str | None, int]  # (task, seed): one initial state; task is None for single-task families


def cfg_value(cfg: Any, key: str, default: Any = None) -> Any:
    """Read ``key`` from a DictConfig, a mapping or an attribute object (``None`` counts as missing)."""
    if cfg is None:
        return default
    value = cfg.get(key, default) if isinstance(cfg, Mapping) or hasattr(cfg, "get") else getattr(cfg, key, default)
    return default if value is None else value


@dataclass
class RolloutSetup:
    """What a rollout of one policy on one env config needs, checked once before any env is made."""

    env_id: str
    obs_type: str
    max_steps: int
    tasks: tuple[str | None, ...] = (None,)
    env_kwargs: dict[str, Any] = field(default_factory=dict)  # extra gym.make options (e.g. LeRobot's frame size)
    obs_keys: Mapping[str, str] | None = None  # Diffusion Policy dict policies: policy key -> env key
    adapt: ObsAdapter | None = None  # a fixed observation converter (LeRobot feature names), else built per env
    render_size: int = 96


@dataclass
class StepScore:
    """One vector-env step scored: reward and success per sub-env, and the family's own per-step metrics,
    whose episode maxima the rollout records under the same names (PushT: ``max_coverage``)."""

    reward: np.ndarray
    success: np.ndarray
    metrics: dict[str, np.ndarray] = field(default_factory=dict)


class EnvFamily(ABC):
    """One env family (PushT, Meta-World); subclasses are stateless singletons in the registry."""

    name: str  # registry name, e.g. "pusht"
    title: str  # what reports and errors call it, e.g. "PushT"
    env_id: str  # the gymnasium id of its envs (an env config's ``id`` may name a variant)
    reward_name: str  # what "max reward" means in reports
    obs_types: tuple[str, ...]  # the observation types its envs give (and its policies observe)
    supports_video: bool = False
    task_order: tuple[str, ...] = ()  # the order per-task tables list tasks in (multi-task families)

    # ------------------------------------------------------------------ identity
    def owns_env(self, env_cfg: Any) -> bool:
        """Whether an env config (or a result dict, which carries ``env_id`` and ``obs_type``) is this family's."""
        return cfg_value(env_cfg, "obs_type") in self.obs_types

    def owns_policy(self, policy_config: Any) -> bool:
        """Whether a policy observes this family's observations."""
        return getattr(policy_config, "obs_type", None) in self.obs_types

    def control_hz(self, env_id: str | None = None) -> float:
        """Control steps per second, declared by the env class in its ``metadata`` (no env is made)."""
        import gymnasium as gym
        from gymnasium.envs.registration import load_env_creator

        import policy_accel.envs  # noqa: F401  (registers the gymnasium ids)

        entry = gym.spec(env_id or self.env_id).entry_point
        creator = load_env_creator(entry) if isinstance(entry, str) else entry
        return float(creator.metadata["control_hz"])

    # ------------------------------------------------------------------ checks
    def check_env(self, env_cfg: Any) -> str | None:
        """Why an env config of this family is unusable (an unknown task), else None."""
        return None

    def describe_policy(self, policy_config: Any) -> str:
        """``a PushT policy (obs_type 'keypoints', 20 numbers)``: for errors about the wrong family."""
        return f"a {self.title} policy (obs_type '{policy_config.obs_type}')"

    def env_hint(self, policy_config: Any) -> str:
        """The ``env=`` override that gives a policy of this family its observations."""
        return f"env={self.name}"

    def checkpoint_advice(self) -> str:
        """Prefix of the advice when a policy of another family meets this family's env."""
        return ""

    def check_policy(
        self, policy_config: Any, env_cfg: Any, checkpoint: Any = "the checkpoint", observations: bool = True
    ) -> str | None:
        """Why a policy of this family cannot run on this family's env config, else None. ``observations``:
        also check the observation type in detail (what a rollout needs)."""
        return None

    # ------------------------------------------------------------------ rollouts
    @abstractmethod
    def setup(self, policy_config: Any, env_cfg: Any, max_steps: int | None) -> RolloutSetup:
        """Check the env config against the policy and fix what every rollout batch uses."""

    def episodes(self, setup: RolloutSetup, seeds: Sequence[int]) -> list[Episode]:
        """The (task, seed) initial states of an evaluation: every seed on every task, task by task."""
        return [(task, int(seed)) for task in setup.tasks for seed in seeds]

    @abstractmethod
    def make_env(self, setup: RolloutSetup, task: str | None, **options: Any) -> gym.Env:
        """One env of ``task``; ``options`` are extra ``gym.make`` options (rendering)."""

    def make_vector_env(self, setup: RolloutSetup, episodes: Sequence[Episode]) -> gym.vector.SyncVectorEnv:
        """One synchronous sub-env per episode. NEXT_STEP autoreset (gymnasium's default, named
        explicitly): a finished sub-env is reset on the following step; the rollout masks it out."""
        import gymnasium as gym

        import policy_accel.envs  # noqa: F401  (registers the gymnasium ids)

        makers = [(lambda task=task: self.make_env(setup, task)) for task, _ in episodes]
        return gym.vector.SyncVectorEnv(makers, autoreset_mode=gym.vector.AutoresetMode.NEXT_STEP)

    @abstractmethod
    def obs_adapter(self, space: gym.Space, policy_config: Any, setup: RolloutSetup) -> ObsAdapter:
        """The converter of the vector env's batched observations into the policy's."""

    @abstractmethod
    def score(self, info: Mapping[str, Any], reward: Any, n: int) -> StepScore:
        """Reward, success and family metrics of one vector-env step of ``n`` sub-envs."""

    def summarise(self, result: dict[str, Any]) -> dict[str, Any]:
        """Add the family's own summary fields to an evaluation result (Meta-World: success per task)."""
        return result

    # ------------------------------------------------------------------ data
    def tasks(self, env_cfg: Any) -> list[str] | None:
        """The tasks an env config names (None: a single-task family)."""
        return None

    @abstractmethod
    def dataset(
        self,
        zarr_path: Any,
        obs_type: str,
        horizon: int,
        n_obs_steps: int,
        n_action_steps: int,
        tasks: Sequence[str] | None = None,
        **split: Any,
    ) -> WindowDataset:
        """The demonstration windows of this family (``split``: val_ratio, seed, max_train_episodes)."""

    def record_demos(self, *args: Any, **kwargs: Any) -> dict[str, Any]:
        """Record expert demonstrations into a zarr (families with scripted experts)."""
        raise NotImplementedError(f"{self.title} has no demo recorder")

    def replay_demos(self, *args: Any, **kwargs: Any) -> dict[str, Any]:
        """Replay recorded demonstrations open loop to check the simulator's fidelity."""
        raise NotImplementedError(f"{self.title} has no demo replay")
