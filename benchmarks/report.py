"""The summary: ratios ours vs transformers against their targets (PASS/MISS), and the raw medians."""

from __future__ import annotations

import operator
from collections.abc import Callable

from benchmarks.common import TRAIN_IMPLS


def ratio(numerator: float | None, denominator: float | None) -> float | None:
    if numerator is None or denominator is None or denominator <= 0:
        return None
    return numerator / denominator


NO_GOAL = ("", None)


def goal(op: str, bound: float) -> tuple[str, Callable[[float], bool]]:
    """A target as (text, check), e.g. goal(">=", 1.5)."""
    compare = {">=": operator.ge, ">": operator.gt, "<=": operator.le}[op]
    return f"{op} {bound}", lambda value: compare(value, bound)


def summary_rows(results: dict) -> list[dict]:
    """One row per comparison: the ratio, the target and PASS/MISS ("-": no target or no figure)."""
    rows = []

    def add(name, value, target=NO_GOAL, note=""):
        text, check = target
        verdict = "-" if check is None or value is None else ("PASS" if check(value) else "MISS")
        rows.append({"comparison": name, "ratio": value, "target": text, "verdict": verdict, "note": note})

    for backbone, forward in results["forward"].items():
        s, theirs = forward["seconds"], forward["seconds"]["transformers"]
        add(f"forward {backbone} fp32 (time t/o)", ratio(theirs, s["ours"]), goal(">=", 1.0))
        add(f"forward {backbone} channels_last (time t/o)", ratio(theirs, s["ours_channels_last"]))
        bf16 = ratio(theirs, s.get("ours_channels_last_bf16"))
        add(f"forward {backbone} channels_last+bf16 (time t/o)", bf16, note=forward.get("bf16_error", ""))
        fast = min((k for k in s if k.startswith("ours_channels_last")), key=s.get)
        add(
            f"forward {backbone} fast path (time t/o)",
            ratio(theirs, s[fast]),
            goal(">", 1.0),
            f"best: {fast}",
        )
        compiled = results.get("compile", {}).get(backbone)
        if compiled is not None:  # NOTE: timed in its own process, against transformers' time from this one
            note = compiled.get("error", f"compile {compiled.get('compile_seconds', 0):.0f} s")
            add(
                f"forward {backbone} torch.compile (time t/o)",
                ratio(theirs, compiled.get("seconds")),
                note=note,
            )
    post = results["post_processing"]
    for regime, entry in post.items():
        if not isinstance(entry, dict):
            continue
        at_scale = regime in ("trained-384",)  # trained outputs at >= 384 px: the 2x target
        for task in ("semantic", "instance", "panoptic"):
            seconds = entry[task]["seconds"]
            same = entry[task].get("ours_agreement_with_original")
            speed = ratio(seconds["transformers"], seconds["ours"])
            floor = 2.0 if at_scale else 1.0
            exact = task == "instance" or same is None or same >= 0.999
            target = (
                f">= {floor}" + ("" if task == "instance" else ", >= 99.9% = original"),
                lambda v, floor=floor, exact=exact: v >= floor and exact,
            )
            theirs = entry[task].get("transformers_agreement_with_original")
            note = "" if same is None else f"{100 * same:.3f}% = original (transformers {100 * theirs:.2f}%)"
            add(f"post-process {task}, {regime} (time t/o)", speed, target, note)
    for backbone, pipe in results["pipeline"].items():
        for regime, entry in pipe.items():
            if not isinstance(entry, dict) or "defaults" not in entry:
                continue
            for call in ("defaults", "semantic"):
                s = entry[call]
                add(
                    f"pipeline {call} {backbone} {regime} (time t/o)",
                    ratio(s["transformers"], s["ours"]),
                    goal(">=", 1.0),
                )
                fast_goal = goal(">=", 1.5) if (pipe.get("fast_path") or {}).get("bf16") else NO_GOAL
                add(
                    f"pipeline {call} {backbone} {regime}, fast path (time t/o)",
                    ratio(s["transformers"], s["ours_fast"]),
                    fast_goal,
                    str(pipe.get("fast_path")),
                )
    s = results["image_processor"]["seconds"]
    add("image processor with maps (time t/o)", ratio(s["transformers"], s["ours"]))
    for name, training in results["training"].items():
        theirs = training["transformers"]
        for impl in ("ours-dense", "ours-point"):
            ours, point = training[impl], impl == "ours-point"
            note = theirs.get("error") or ours.get("error") or ""
            step_time = ratio(theirs.get("step_seconds"), ours.get("step_seconds"))
            memory = ratio(ours.get("peak_memory_mb"), theirs.get("peak_memory_mb"))
            step_goal, memory_goal = (goal(">=", 1.5), goal("<=", 0.6)) if point else (NO_GOAL, NO_GOAL)
            add(f"train {name} {impl}: step time (t/o)", step_time, step_goal, note)
            add(f"train {name} {impl}: peak memory (o/t)", memory, memory_goal, note)
    return rows


def print_table(rows: list[dict]) -> None:
    print(f"\n{'comparison':<62} {'ratio':>8}  {'target':<26} {'verdict':<7} note")
    for row in rows:
        value = "n/a" if row["ratio"] is None else f"{row['ratio']:.3f}"
        print(f"{row['comparison']:<62} {value:>8}  {row['target']:<26} {row['verdict']:<7} {row['note']}")


def print_seconds(results: dict) -> None:
    """The raw medians behind the ratios."""
    print("\nmedian seconds")
    for backbone, values in results["forward"].items():
        print(f"  forward {backbone}: " + ", ".join(f"{k} {v:.3f}" for k, v in values["seconds"].items()))
    for backbone, pipe in results["pipeline"].items():
        for regime, entry in pipe.items():
            if isinstance(entry, dict) and "defaults" in entry:
                for call in ("defaults", "semantic"):
                    times = ", ".join(f"{k} {v:.3f}" for k, v in entry[call].items())
                    print(f"  pipeline {backbone} {regime} {call}: {times}")
    for regime, entry in results["post_processing"].items():
        if isinstance(entry, dict):
            for task in ("semantic", "instance", "panoptic"):
                times = ", ".join(f"{k} {v:.4f}" for k, v in entry[task]["seconds"].items())
                print(f"  post-process {regime} {task}: {times}")
    seconds = results["image_processor"]["seconds"]
    print("  image processor: " + ", ".join(f"{k} {v:.4f}" for k, v in seconds.items()))
    for backbone, training in results["training"].items():
        for impl in TRAIN_IMPLS:
            run = training[impl]
            text = run.get("error") or f"step {run['step_seconds']:.2f} s, peak +{run['peak_memory_mb']:.0f} MB"
            print(f"  train {backbone} {impl}: {text}")
