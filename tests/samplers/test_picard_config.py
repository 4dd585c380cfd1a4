"""The Picard options' defaults have one source, samplers/picard.py; the sampler YAMLs must repeat it."""

from __future__ import annotations

import inspect

import pytest
from omegaconf import OmegaConf

from policy_accel.paths import config_dir
from policy_accel.samplers import PICARD_DEFAULTS, PicardSampler, build_sampler

PICARD_YAMLS = ("paraddpm", "picard", "paraddim", "paradpmsolver")


@pytest.mark.parametrize("name", PICARD_YAMLS)
def test_each_picard_yaml_has_the_python_defaults(name: str) -> None:
    values = OmegaConf.to_container(OmegaConf.load(config_dir() / "sampler" / f"{name}.yaml"))
    assert {k: values.get(k, "<missing>") for k in PICARD_DEFAULTS} == dict(PICARD_DEFAULTS)


def test_the_sampler_signature_uses_the_defaults() -> None:
    parameters = inspect.signature(PicardSampler.__init__).parameters
    assert {k: parameters[k].default for k in PICARD_DEFAULTS} == dict(PICARD_DEFAULTS)
    built = build_sampler("paraddpm")
    assert (built.window, built.tolerance, built.max_iterations, built.initial_guess, built.deadline_s) == tuple(
        PICARD_DEFAULTS[k] for k in ("window", "tolerance", "max_iterations", "initial_guess", "deadline_s")
    )
