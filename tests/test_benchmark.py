"""Smoke test of `python -m benchmarks` (`make bench`): the tiniest run (tiny model, 64 px inputs) fills every section of the
JSON. No timing assertions: timings on a shared CI machine say nothing."""

from __future__ import annotations

import json

from benchmarks.__main__ import main
from benchmarks.common import TRAIN_IMPLS

ARGS = [
    "--tiny",
    "--threads",
    "1",
    "--backbones",
    "r50",
    "--train-backbones",
    "r50",
    "--supervision",
    "deep",
    "--sections",
    "main",
]  # the runtime section: tests/test_export.py


def test_tiny_benchmark_writes_every_section(tmp_path):
    output = tmp_path / "benchmark.json"
    returned = main([*ARGS, "--output", str(output)])
    results = json.loads(output.read_text())
    assert results["summary"] == json.loads(json.dumps(returned["summary"]))

    assert {"cpu_model", "cores", "torch", "torch_threads", "mkldnn_bf16_supported"} <= set(results["machine"])
    forward = results["forward"]["r50"]
    assert {"transformers", "ours", "ours_channels_last"} <= set(forward["seconds"])
    assert forward["max_abs_logit_difference"] < 1e-3  # the conversion kept the weights
    post = results["post_processing"]
    assert post["original_algorithm_available"]
    for regime in (
        "random-init",
        "trained-128",
        "trained-384",
        "trained-mixed",
        "crafted",
        "trained-mixed, loaded",
    ):
        for task in ("semantic", "instance", "panoptic"):
            ours = {"ours", "ours_dense", "ours_bounded"}
            assert set(post[regime][task]["seconds"]) == {"transformers"} | ours, (regime, task)
            if regime != "trained-mixed, loaded":
                for name in ours:
                    assert post[regime][task][f"{name}_agreement_with_original"] >= 0.999, (
                        regime,
                        task,
                        name,
                    )
    for regime in ("random-init", "trained", "crafted"):
        entry = results["pipeline"]["r50"][regime]
        for call in ("defaults", "semantic"):
            assert set(entry[call]) == {"transformers", "ours", "ours_fast"}
    assert set(results["image_processor"]["seconds"]) == {"transformers", "ours"}
    training = results["training"]["r50/deep-supervision"]
    for impl in TRAIN_IMPLS:
        assert "error" not in training[impl], training[impl]
        assert training[impl]["step_seconds"] > 0 and training[impl]["peak_memory_mb"] >= 0
    assert {row["verdict"] for row in results["summary"]} <= {"PASS", "MISS", "-"}


def test_large_section_measures_in_a_fresh_process(tmp_path):
    """The large section's machinery (`--sections large --tiny`: one Cityscapes-sized case, ours only): a time, a
    peak memory and the size of the returned map, from a worker process."""
    output = tmp_path / "large.json"
    main(["--tiny", "--threads", "1", "--sections", "large", "--output", str(output)])
    (entry,) = json.loads(output.read_text())["large"]["post_processing"].values()
    run = entry["ours"]
    assert "error" not in run, run
    assert run["seconds"] > 0 and run["peak_mb"] >= 0 and run["returned_mb"] == 8.0  # 1024 x 2048 int32
