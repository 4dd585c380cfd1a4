"""Compare before/after report.json files: every field but timing and machine facts must be equal."""
import json, sys
from pathlib import Path
TIMING = ("latency", "ms", "_s", "time", "machine", "device", "wall", "throughput", "calibrat", "videos", "speedup", "plot")
def strip(x, path=""):
    if isinstance(x, dict):
        return {k: strip(v, f"{path}.{k}") for k, v in x.items() if not any(t in k for t in TIMING)}
    if isinstance(x, list):
        return [strip(v, path) for v in x]
    return x
def diff(a, b, path=""):
    out = []
    if isinstance(a, dict) and isinstance(b, dict):
        for k in sorted(set(a) | set(b)):
            if k not in a or k not in b:
                out.append(f"{path}.{k}: only in {'after' if k not in a else 'before'}")
            else:
                out += diff(a[k], b[k], f"{path}.{k}")
    elif isinstance(a, list) and isinstance(b, list) and len(a) == len(b):
        for i, (x, y) in enumerate(zip(a, b)):
            out += diff(x, y, f"{path}[{i}]")
    elif a != b:
        out.append(f"{path}: {str(a)[:80]} != {str(b)[:80]}")
    return out
before, after = Path(sys.argv[1]), Path(sys.argv[2])
for f in sorted(before.rglob("*.json")):
    g = after / f.relative_to(before)
    if not g.exists():
        print(f"MISSING {g}"); continue
    d = diff(strip(json.loads(f.read_text())), strip(json.loads(g.read_text())))
    print(f"{f.relative_to(before)}: {'IDENTICAL (outside timing/machine)' if not d else str(len(d)) + ' differences'}")
    for line in d[:15]: print("   ", line)
