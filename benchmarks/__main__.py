"""Side-by-side benchmark: this package vs transformers 5.23's MaskFormer, same weights, same inputs.

    python -m benchmarks                  # full run (~5-10 min on 2 cores): `make bench`
    python -m benchmarks --quick          # 128 px inputs, one repeat: a smoke run of the real shapes
    python -m benchmarks --compile --train-backbones r50 swin-t --output outputs/benchmark.json

Models: a randomly initialised `transformers.MaskFormerForInstanceSegmentation` at the ADE20K shapes (150
classes, 100 queries, d=256, 6 decoder layers, FPN/mask 256) with a Swin-T and a ResNet-50 backbone, saved,
then converted to ours with `convert_from_transformers`, so both hold identical weights (the forward section
records the largest logit difference as a check). `--tiny` shrinks the model too (the test suite).

Timings are medians of --repeats calls after --warmup untimed ones; ours and transformers' calls alternate,
so that load drifting on a shared machine hits both alike. torch uses --threads threads (default: torch's).
- forward: eval, no_grad, batch 1 at 512x512. Ours also with the opt-in fast path: channels_last weights and
  input, alone and with bf16 autocast (the faster of the two is the "fast path" row); with --compile,
  `torch.compile(ours)` in a separate process (compile time reported; skipped with a note on failure or
  after --compile-timeout).
- post-processing: the three `post_process_*` of each processor on identical model outputs in several regimes
  (a random-init model's, a trained model's recorded at 128 px, 384 px and as a padded mixed batch, crafted
  confident ones, and the mixed batch again with another process busy), with the share of pixels equal to
  the authors' algorithm (tests/reference_inference.py); see benchmarks/postprocess.py.
- pipeline: the whole `pipeline("image-segmentation")` call with default settings and with subtask="semantic",
  in the random-init, trained and crafted regimes; ours also with `fast_inference=True` (channels-last, bf16
  where native); see benchmarks/pipeline.py.
- image processor: 2 PIL images 512x683 with semantic maps (150 classes, 20 present), shortest_edge 512,
  longest_edge 2048, size_divisor 32, ignore_index 255 on both sides.
- training (R50 by default; --train-backbones): batch of two 512x512 images with 20 instance masks each,
  forward + backward + AdamW step, our dense and point-sampled losses vs transformers' (dense); dropout 0 in
  all (transformers' default). --supervision: "deep" = a loss on every decoder layer (the paper; transformers
  needs output_hidden_states=True for it), "last" = the final layer only (transformers' default), "both".
  Each configuration runs in a fresh process (`python -m benchmarks.training`), so one
  allocator's cache never serves the next. Peak memory = peak resident set (VmHWM in /proc/self/status, reset with
  /proc/self/clear_refs once model, optimizer and batch exist) minus the resident set at that moment: what the
  steps add (activations, gradients, AdamW state; the last two are reported separately as an estimate).

- large (`--sections large`): post-processing at Cityscapes' size (2048x1024, K=19) and for 12-MP photos
  (4000x3000, K=150; 2048x2048 and 4096x4096 of noise), in trained-like, random-init and noise regimes and on the
  `make demo` model's recorded outputs, each task ours against transformers, time and peak memory measured in a
  fresh process per case; then the whole pipeline on a 12-MP photo (see benchmarks/large.py).

- data (`--sections data`): the training data path per image at the paper's settings (decode, random resize,
  crop, flip, photometric distortion, per-class masks, collate), ours against transformers' fine-tuning example
  pipeline (albumentations, the `bench` extra) and plain torchvision v2, one thread; then DataLoader workers
  0/1/2 and the workers needed for 16 and 64 images/s; see benchmarks/data_pipeline.py.
- data_check (`--sections data_check`): the data check before training (`check_dataset`) over 20,210 generated
  items of ADE20K's sizes on every core (target: under 2 minutes on 2 cores), and its cost per item against a full
  decode; see benchmarks/data_check.py.

Prints the medians and a table of ratios (time: transformers / ours, >1 = ours faster; memory: ours /
transformers, <1 = ours smaller) with PASS/MISS against the targets, and writes everything with machine
information (CPU, cores, threads, bf16 support, load average) to --output as JSON.

The sections live in `benchmarks` (common, forward, postprocess, pipeline, processor,
training, report, runner; runtimes and data_pipeline for the "runtime" and "data" sections).
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # nothing here downloads; fail fast if something tries

import torch  # noqa: E402

from benchmarks.common import bench_environment  # noqa: E402
from benchmarks.large import RUNS, bench_large, print_large  # noqa: E402
from benchmarks.report import print_seconds, print_table, summary_rows  # noqa: E402
from benchmarks.runner import run_all, settings_for  # noqa: E402
from modeling_maskformer.cli import run_cli  # noqa: E402

SECTIONS = (
    "main",
    "runtime",
    "data",
    "data_check",
    "large",
)  # main: forward, post-processing, pipeline, processor, training (above)


def by_size(args: argparse.Namespace, tiny, quick, full):
    """A section's settings for --tiny, --quick or neither."""
    return tiny if args.tiny else quick if args.quick else full


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--output", default="outputs/benchmark.json")
    parser.add_argument("--quick", action="store_true", help="128 px inputs, one repeat: a smoke test")
    parser.add_argument("--tiny", action="store_true", help="64 px inputs and a tiny model (the test suite)")
    parser.add_argument(
        "--backbones",
        nargs="*",
        default=["swin-t", "r50"],
        choices=["swin-t", "r50"],
        help="for forward and pipeline",
    )
    parser.add_argument("--train-backbones", nargs="*", default=["r50"], choices=["swin-t", "r50"])
    parser.add_argument(
        "--supervision",
        choices=["deep", "last", "both"],
        default="both",
        help="training losses on every decoder layer (the paper), the last only, or both runs",
    )
    parser.add_argument("--repeats", type=int, help="timed calls per measurement (default 5, quick 1)")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--compile", action="store_true", help="also time torch.compile(ours), in a subprocess")
    parser.add_argument("--compile-timeout", type=float, default=300.0, help="seconds, per backbone")
    parser.add_argument(
        "--sections",
        nargs="*",
        default=list(SECTIONS),
        choices=SECTIONS,
        help="main: the sections above; runtime: exported runtimes (onnxruntime, OpenVINO, int8) vs the FLOP "
        "floor, and int8 accuracy on --demo-model (benchmarks.runtimes); data: the training "
        "data pipeline per image and per DataLoader worker, ours vs transformers' fine-tuning example "
        "(albumentations) and plain torchvision v2 (benchmarks.data_pipeline); data_check: the "
        "data check before training over 20,210 ADE-sized items (benchmarks.data_check); large: "
        "post-processing at Cityscapes' size and for 12-MP photos, time and peak memory per task in fresh processes, "
        "and the pipeline on a 12-MP photo (benchmarks.large)",
    )
    parser.add_argument("--demo-model", default="outputs/demo", help="trained folder for the int8 accuracy check")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    settings = settings_for(tiny=args.tiny, quick=args.quick, repeats=args.repeats)
    started = time.perf_counter()
    results = {}
    with bench_environment(args.threads):
        if "main" in args.sections:
            results = run_all(
                settings,
                backbones=args.backbones,
                train_backbones=args.train_backbones,
                supervision=args.supervision,
                threads=args.threads,
                with_compile=args.compile,
                compile_timeout=args.compile_timeout,
            )
        if "runtime" in args.sections:
            from benchmarks.common import machine_info
            from benchmarks.runtimes import run_runtime_section

            results.setdefault("machine", machine_info())
            with tempfile.TemporaryDirectory(prefix="maskformer-runtimes-") as workdir:
                results["runtime"] = run_runtime_section(
                    settings,
                    backbones=args.backbones,
                    threads=args.threads,
                    demo_model=None if args.tiny else args.demo_model,
                    workdir=Path(workdir),
                )
        if "data" in args.sections:
            from benchmarks import data_pipeline

            print("data pipeline ...", flush=True)
            sizes = (data_pipeline.TINY_DATA, data_pipeline.QUICK_DATA, data_pipeline.FULL_DATA)
            results["data"] = data_pipeline.bench_data_pipeline(by_size(args, *sizes))
        if "data_check" in args.sections:
            from benchmarks import data_check

            print("data check before training ...", flush=True)
            sizes = (data_check.TINY_CHECK, data_check.QUICK_CHECK, data_check.FULL_CHECK)
            results["data_check"] = data_check.bench_data_check(by_size(args, *sizes))
        if "large" in args.sections:
            print("large post-processing (one process per measurement) ...", flush=True)
            quick = args.quick or args.tiny  # one cheap case, ours only: the machinery
            results["large"] = bench_large(
                threads=args.threads,
                repeats=1 if quick else 2,
                demo_model=args.demo_model,
                runs=[("cityscapes", "trained-like", ("instance",))] if quick else RUNS,
                impls=("ours",) if quick else ("transformers", "ours"),
                pipeline=not quick,
            )
    results["total_seconds"] = time.perf_counter() - started
    if "main" in args.sections:
        results["summary"] = summary_rows(results)
        print_seconds(results)
        print_table(results["summary"])
    if "runtime" in args.sections:
        from benchmarks.runtimes import print_runtime

        print_runtime(results["runtime"])
    if "data" in args.sections:
        from benchmarks.data_pipeline import print_data_pipeline

        print_data_pipeline(results["data"])
    if "data_check" in args.sections:
        from benchmarks.data_check import print_data_check

        print_data_check(results["data_check"])
    if "large" in args.sections:
        print_large(results["large"])
    output = Path(args.output)
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps(results, indent=2))
    print(f"\n{results['total_seconds']:.0f} s; written to {output}")
    if args.quick or args.tiny:
        print("NOTE: --quick/--tiny runs check the machinery; the targets are for the full run (at 128 px,")
        print("for one, point sampling's 12,544 points outnumber the pixels of a mask).")
    return results


if __name__ == "__main__":
    run_cli(main)
