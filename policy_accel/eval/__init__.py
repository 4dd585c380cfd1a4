"""Evaluation: rollouts, measurement and reports, over every env family.

* :mod:`.families` — what differs per env family (PushT, Meta-World): envs, control rate, observation
  adapters, scoring, datasets, demo recording and replay; ``family_for(env_cfg)`` picks one.
* :mod:`.rollout` — the one rollout loop: seeded episodes in vector envs, policy calls timed.
* :mod:`.results` — the per-episode record, summaries (CIs, percentiles, per task), merging, paired comparisons.
* :mod:`.bench` — many samplers interleaved batch by batch on the same seeds.
* :mod:`.report` / :mod:`.plots` — Markdown and JSON reports, figures.
* :mod:`.machine`, :mod:`.profiling`, :mod:`.load_test` — what the machine is, where a chunk's time goes, latency under load.
"""
