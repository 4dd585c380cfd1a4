"""Print the tables of docs/benchmarks.md "The robot never waits" from the bench reports (no re-run)."""

from __future__ import annotations

import json
import sys

from policy_accel.eval.results import paired_difference


def fmt(x, d=3):
    return "n/a" if x is None else f"{x:.{d}f}"


def sweep(path: str) -> None:
    report = json.load(open(path))
    results = report["results"]
    by = {r["label"]: r for r in results}

    print(
        "| sampler | mode | delay | mean max reward ± CI95 | success | reward − sync (paired) ± CI95 | switch jump mean / p95 | within-chunk mean / p95 |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for r in results:
        base = r["label"].split("/")[0]
        sync = by.get(base.replace("-replace-only", "").replace("-whole-overlap", ""))
        diff = paired_difference(r, sync) if sync is not None and r is not sync else None
        sm = r.get("smoothness") or {}
        sw, wi = sm.get("switch") or {}, sm.get("within") or {}
        print(
            f"| {base} | {r.get('execution')}{' g=' + format(r['rtc_guidance'], 'g') if r.get('rtc_guidance') is not None else ''}"
            f"{' span ' + str(r['rtc_span']) if r.get('rtc_guidance') and r.get('rtc_span') is not None else ''} | {r.get('delay_steps')} "
            f"| {fmt(r['mean_max_reward'])} ± {fmt(r['ci95'])} | {fmt(r['success_rate'], 2)} "
            f"| {'' if diff is None else fmt(diff['mean_diff']) + ' ± ' + fmt(diff['ci95'])} "
            f"| {fmt(sw.get('mean'), 1)} / {fmt(sw.get('p95'), 1)} | {fmt(wi.get('mean'), 1)} / {fmt(wi.get('p95'), 1)} |"
        )


def robot(path: str) -> None:
    report = json.load(open(path))
    results = report["results"]
    print("| sampler | chunk latency (measured) | delay (steps) | mode | mean max reward ± CI95 | success |")
    print("|---|---|---|---|---|---|")
    for r in results:
        print(
            f"| {r['label'].split('/')[0]} | {fmt(r.get('delay_measured_ms'), 0)} ms | {r.get('delay_steps')} | {r.get('execution')} "
            f"| {fmt(r['mean_max_reward'])} ± {fmt(r['ci95'])} | {fmt(r['success_rate'], 2)} ± {fmt(r.get('success_ci95'), 2)} |"
        )

    print()
    for a in results:
        for b in results:
            if b["label"].startswith("ddpm-100/blocking") and a is not b and a.get("execution") != "blocking":
                d = paired_difference(a, b)
                print(
                    f"{a['label']} - {b['label']}: reward {fmt(d['mean_diff'])} ± {fmt(d['ci95'])}, success "
                    f"{fmt(d['success_diff'], 2)} ± {fmt(d['success_ci95'], 2)}, clearly better: {d['a_clearly_better']}"
                )
    for note in report.get("skipped", []):
        print("skipped:", note.get("label", note.get("spec")), note["reason"][:80])


if __name__ == "__main__":
    if len(sys.argv) != 3 or sys.argv[1] not in ("sweep", "robot"):
        sys.exit("usage: python docs/realtime-figures/summarise_latency.py sweep|robot REPORT.json")
    {"sweep": sweep, "robot": robot}[sys.argv[1]](sys.argv[2])
