"""The released MaskFormer checkpoints that transformers hosts, with their data, the authors' evaluation settings and
the paper's numbers (`get_entry("swin-large-ade")`, for `scripts/reproduce.py`).

NOTE: sources read from stored public snapshots: numbers from the authors' `MODEL_ZOO.md`; test sizes, TEST.AUG and
thresholds from each row's config, else detectron2's defaults; the ResNet rows (no model card) inferred from
transformers' `convert_maskformer_resnet_to_pytorch.py` (`hub_evidence`). The "+6 Enc" COCO and ADE20K-panoptic
models are not in transformers' format: convert the authors' `.pkl` (`convert_checkpoint.py --from original`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from ..data.registry import DATASETS, prepare_command
from ..errors import InvalidInputError
from ..inference.tta import TestTimeAugmentation
from ..variants import VARIANTS, Variant

MODEL_ZOO_SOURCE = "facebookresearch/MaskFormer MODEL_ZOO.md (commit da3e60d)"
AUTHORS_REPOSITORY = "https://github.com/facebookresearch/MaskFormer"

# TEST.AUG of the authors' configs (the source is named next to each).
ADE20K_512_TTA = TestTimeAugmentation((256, 384, 512, 640, 768, 896), 3584, flip=True)  # Base-ADE20K-150.yaml
ADE20K_640_TTA = TestTimeAugmentation((320, 480, 640, 800, 960, 1120), 4480, flip=True)  # swin/*_res640.yaml
COCO_STUFF_TTA = TestTimeAugmentation((320, 480, 640, 800, 960, 1120), 4480, flip=True)  # Base-COCOStuff10K-171.yaml
CITYSCAPES_TTA = TestTimeAugmentation((512, 768, 1024, 1280, 1536, 1792), 4096, flip=True)  # Base-Cityscapes-19.yaml

SWIN_CARD = "Hub page and model card seen (stored snapshot); the card names the dataset and the Swin size"
RESNET_SCRIPT = (
    "Hub page seen (stored snapshot), no model card; zoo row inferred from transformers' conversion script, "
    "not confirmed"
)


@dataclass(frozen=True)
class ZooEntry:
    """One released checkpoint: where, on what data, how, and the paper's number; the rest is its variant's."""

    name: str  # row name for scripts/reproduce.py: the Hub repo name without "maskformer-", a key of VARIANTS
    dataset: str  # the benchmark, as the paper names it
    task: Literal["semantic", "panoptic"]
    config: str  # the authors' config (facebookresearch/MaskFormer/configs/...)
    paper_single_scale: float  # mIoU or PQ, x100, from the model zoo
    paper_multi_scale: float | None  # "mIoU (ms+flip)"; None where the zoo reports none
    num_images: int  # the evaluation split's size
    split: str
    layout: str  # the local folder the data loader reads
    datasets_name: str | None = None  # the data's Hugging Face `datasets` name (model-card metadata only)
    prepare: str | None = None  # the `scripts/prepare_data.py` name that makes `layout`, if any
    size_divisor: int = 32  # MODEL.MASK_FORMER.SIZE_DIVISIBILITY (0: no padding)
    tta: TestTimeAugmentation | None = None  # TEST.AUG; None where the config gives no sizes
    threshold: float | None = None  # panoptic: MODEL.MASK_FORMER.TEST.OBJECT_MASK_THRESHOLD
    overlap_threshold: float | None = None  # panoptic: MODEL.MASK_FORMER.TEST.OVERLAP_THRESHOLD
    hub_evidence: str = RESNET_SCRIPT
    notes: tuple[str, ...] = ()

    @property
    def variant(self) -> Variant:
        return VARIANTS[self.name]

    @property
    def test_size(self) -> int:  # INPUT.MIN_SIZE_TEST
        return self.variant.processor["size"]["shortest_edge"]

    @property
    def max_test_size(self) -> int:  # INPUT.MAX_SIZE_TEST
        return self.variant.processor["size"]["longest_edge"]

    @property
    def hub_id(self) -> str:
        return f"facebook/maskformer-{self.name}"

    @property
    def metric(self) -> Literal["mIoU", "PQ"]:
        return "PQ" if self.task == "panoptic" else "mIoU"


def _benchmark(
    suffix: str,
    dataset: str,
    config_dir: str,
    rows: dict[str, tuple[str, float, float | None]],
    *,
    tta: dict[int, TestTimeAugmentation] | None = None,
    **shared: Any,
) -> list[ZooEntry]:
    """A benchmark's rows `{backbone: (config, single-scale, multi-scale)}` named "<backbone>-<suffix>"; `tta` by
    test size; `shared`: other ZooEntry fields (num_images and layout from the data registry with `prepare`)."""
    shared = {"dataset": dataset, "task": "semantic", "split": "validation", **shared}
    if "prepare" in shared:
        spec, split = DATASETS[shared["prepare"]], shared["split"]
        command = prepare_command(spec.name, None, [split])
        shared.update(num_images=spec.split_counts[split], layout=f"{spec.layout}, made by: {command}")
    entries = []
    for backbone, (config, single, multi) in rows.items():
        name = f"{backbone}-{suffix}"
        entries.append(
            ZooEntry(
                name=name,
                config=config_dir + config,
                paper_single_scale=single,
                paper_multi_scale=multi,
                tta=(tta or {}).get(VARIANTS[name].processor["size"]["shortest_edge"]),
                hub_evidence=SWIN_CARD if backbone.startswith("swin") else RESNET_SCRIPT,
                **shared,
            )
        )
    return entries


MODEL_ZOO: tuple[ZooEntry, ...] = (
    *_benchmark(
        "ade",
        "ADE20K-150",
        "configs/ade20k-150/",
        {
            "swin-tiny": ("swin/maskformer_swin_tiny_bs16_160k.yaml", 46.7, 48.8),
            "swin-small": ("swin/maskformer_swin_small_bs16_160k.yaml", 49.8, 51.0),
            "swin-base": ("swin/maskformer_swin_base_IN21k_384_bs16_160k_res640.yaml", 52.7, 53.9),
            "swin-large": ("swin/maskformer_swin_large_IN21k_384_bs16_160k_res640.yaml", 54.1, 55.6),
            "resnet50": ("maskformer_R50_bs16_160k.yaml", 44.5, 46.7),
            "resnet101": ("maskformer_R101_bs16_160k.yaml", 45.5, 47.2),
        },
        tta={512: ADE20K_512_TTA, 640: ADE20K_640_TTA},
        datasets_name="scene_parse_150",
        prepare="ade20k",
    ),
    *_benchmark(
        "coco",
        "COCO panoptic",
        "configs/coco-panoptic/swin/",
        {
            "swin-tiny": ("maskformer_panoptic_swin_tiny_bs64_554k.yaml", 47.7, None),
            "swin-small": ("maskformer_panoptic_swin_small_bs64_554k.yaml", 49.7, None),
            "swin-base": ("maskformer_panoptic_swin_base_IN21k_384_bs64_554k.yaml", 51.8, None),
            "swin-large": ("maskformer_panoptic_swin_large_IN21k_384_bs64_554k.yaml", 52.7, None),
        },
        task="panoptic",
        prepare="coco_panoptic",
        size_divisor=0,
        threshold=0.8,
        overlap_threshold=0.8,
        notes=("test size: detectron2's defaults (the config sets none); SIZE_DIVISIBILITY 0: no padding",),
    ),
    *_benchmark(
        "coco-stuff",
        "COCO-Stuff-10K",
        "configs/coco-stuff-10k-171/",
        {
            f"resnet{d}": (f"maskformer_R{d}_bs32_60k.yaml", *paper)
            for d, paper in ((50, (37.1, 38.9)), (101, (38.1, 39.8)))
        },
        tta={640: COCO_STUFF_TTA},
        split="test",
        num_images=1000,
        layout="images/testing/*.jpg + annotations/testing/*.png (class ids 0..170, 255 ignored: the authors' "
        "prepare_coco_stuff_10k_sem_seg.py output)",
    ),
    *_benchmark(
        "ade20k-full",
        "ADE20K-Full (847 classes)",
        "configs/ade20k-full-847/",
        {f"resnet{d}": (f"maskformer_R{d}_bs16_200k.yaml", single, None) for d, single in ((50, 16.0), (101, 16.8))},
        num_images=2000,
        layout="images/validation/*.jpg + annotations/validation/*.png, 16-bit class ids 0..846, 65535 ignored "
        "(the authors' prepare_ade20k_full_sem_seg.py writes .tif: convert them to 16-bit PNG)",
        notes=("the model zoo reports no multi-scale number for ADE20K-Full",),
    ),
    *_benchmark(
        "cityscapes",
        "Cityscapes",
        "configs/cityscapes-19/",
        {"resnet101": ("maskformer_R101_bs16_90k.yaml", 78.5, 80.3)},
        tta={1024: CITYSCAPES_TTA},
        prepare="cityscapes",
    ),
    *_benchmark(
        "vistas",
        "Mapillary Vistas",
        "configs/mapillary-vistas-65/",
        {"resnet50": ("maskformer_R50_bs16_300k.yaml", 53.1, 55.4)},
        num_images=2000,
        layout="images/validation/*.jpg + annotations/validation/*.png (class ids 0..64, 65 ignored)",
        notes=(
            "the model zoo reports ms+flip 55.4, but the config sets no TEST.AUG sizes (detectron2's defaults "
            "would be 400..1200 / 4000): not confirmed, so --tta is refused for this row",
        ),
    ),
)
_BY_NAME = {entry.name: entry for entry in MODEL_ZOO}


def get_entry(name: str) -> ZooEntry:
    """A row by name ("swin-large-ade"), repo name ("maskformer-swin-large-ade") or Hub id."""
    key = name.split("/")[-1].removeprefix("maskformer-")
    if key not in _BY_NAME:
        raise InvalidInputError(f"unknown model-zoo row {name!r}; rows are: {', '.join(_BY_NAME)}")
    return _BY_NAME[key]


def markdown_table() -> str:
    """The zoo as a Markdown table (docs/paper.md's, regenerated from this module)."""
    lines = [
        "| row | Hub id | data | test size (max) | TTA sizes (max) | metric | paper: single / multi-scale | row of the checkpoint |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for e in MODEL_ZOO:
        data = f"{e.dataset}, {e.split}, {e.num_images} images" + (
            f" (`prepare_data.py {e.prepare}`)" if e.prepare else ""
        )
        if e.task == "panoptic":
            tta = f"- (thresholds {e.threshold} / {e.overlap_threshold})"
        elif e.tta is not None:
            tta = f"{', '.join(map(str, e.tta.min_sizes))} ({e.tta.max_size}), flip"
        else:
            tta = "not in the authors' config" if e.paper_multi_scale is not None else "-"
        multi = "-" if e.paper_multi_scale is None else f"{e.paper_multi_scale}"
        evidence = "model card" if e.hub_evidence == SWIN_CARD else "inferred"
        lines.append(
            f"| `{e.name}` | `{e.hub_id}` | {data} | {e.test_size} ({e.max_test_size}) | {tta} | {e.metric} | "
            f"{e.paper_single_scale} / {multi} | {evidence} |"
        )
    return "\n".join(lines)
