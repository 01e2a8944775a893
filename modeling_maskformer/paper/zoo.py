"""The released MaskFormer checkpoints that transformers hosts, with the data, the evaluation settings and the
numbers each should reach: the model zoo as data, for `scripts/reproduce.py`.

    from modeling_maskformer.paper.zoo import MODEL_ZOO, get_entry

    entry = get_entry("swin-large-ade")   # also "maskformer-swin-large-ade" or "facebook/maskformer-swin-large-ade"
    entry.paper_multi_scale               # 55.6 (mIoU, multi-scale + flip)

Where each figure comes from (NOTE: no network here; the Hub pages were read from stored public snapshots):
- the paper's numbers: the authors' model zoo, facebookresearch/MaskFormer `MODEL_ZOO.md` (commit da3e60d):
  single-scale mIoU, "mIoU (ms+flip)", PQ;
- test sizes, scales and thresholds: the authors' config named in `config` (same repository) and detectron2's
  defaults (`detectron2/config/defaults.py`) where that config sets none: INPUT.MIN_SIZE_TEST 800,
  INPUT.MAX_SIZE_TEST 1333, TEST.AUG.MIN_SIZES (400, ..., 1200), TEST.AUG.MAX_SIZE 4000; the architecture, class
  count, test size and ignored label of each row are its variant's (`modeling_maskformer.variants`, same name);
- which zoo row a Hub checkpoint holds: the Swin checkpoints' model cards (ADE20K / COCO panoptic, by size);
  the ResNet checkpoints have no model card, and their rows are inferred from transformers' conversion script
  (`convert_maskformer_resnet_to_pytorch.py`: the dataset from the name, ResNet-101 and not ResNet-101c).
  `hub_evidence` says which, per row.
The COCO panoptic R50/R101 "+6 Enc" and the ADE20K-panoptic models are not on the Hub in transformers' format
(transformers cannot represent "+6 Enc"); convert the authors' `.pkl` files with
`scripts/convert_checkpoint.py --from original` and evaluate them with `scripts/evaluate_maskformer.py`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

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

ADE_LAYOUT = (
    "ADEChallengeData2016: images/validation/*.jpg + annotations/validation/*.png (0 = other, 1..150 = classes), "
    "made by: python scripts/prepare_data.py ade20k --root DIR"
)
COCO_PANOPTIC_LAYOUT = (
    "COCO 2017: val2017/*.jpg + annotations/panoptic_val2017.json + annotations/panoptic_val2017/*.png, made by: "
    "python scripts/prepare_data.py coco_panoptic --splits val --root DIR"
)
CITYSCAPES_LAYOUT = (
    "images/validation/<name>.png + annotations/validation/<name>.png (gtFine labelTrainIds 0..18, 255 ignored), "
    "made from the two local archives (a Cityscapes login) by: python scripts/prepare_data.py cityscapes --archives "
    "gtFine_trainvaltest.zip leftImg8bit_trainvaltest.zip --root DIR"
)
SWIN_CARD = "Hub page and model card seen (stored snapshot); the card names the dataset and the Swin size"
RESNET_SCRIPT = (
    "Hub page seen (stored snapshot), no model card; zoo row inferred from transformers' conversion script, "
    "not confirmed"
)


@dataclass(frozen=True)
class ZooEntry:
    """One released checkpoint: where it is, what it is evaluated on, how, and the number it should reach. Its
    architecture, class count, test size and ignored label are those of the variant of the same name."""

    name: str  # row name for scripts/reproduce.py: the Hub repo name without "maskformer-", a key of VARIANTS
    backbone: str
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
    notes: tuple[str, ...] = field(default_factory=tuple)

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
    def ignore_index(self) -> int:
        return self.variant.processor["ignore_index"]

    @property
    def label_convention(self) -> Literal["ade", "as_is"] | None:
        """Of the semantic PNGs (see README "Fine-tune on your data"): "ade" where the labels are reduced."""
        if self.task != "semantic":
            return None
        return "ade" if self.variant.processor.get("do_reduce_labels") else "as_is"

    @property
    def hub_id(self) -> str:
        return f"facebook/maskformer-{self.name}"

    @property
    def metric(self) -> Literal["mIoU", "PQ"]:
        return "PQ" if self.task == "panoptic" else "mIoU"

    @property
    def prepare_command(self) -> str | None:
        if self.prepare is None:
            return None
        splits = " --splits val" if self.prepare == "coco_panoptic" else ""
        archives = (
            " --archives gtFine_trainvaltest.zip leftImg8bit_trainvaltest.zip" if self.prepare == "cityscapes" else ""
        )
        return f"python scripts/prepare_data.py {self.prepare}{splits}{archives} --root DIR"

    def paper_value(self, tta: bool) -> float | None:
        return self.paper_multi_scale if tta else self.paper_single_scale


def _ade(name, backbone, config, single, multi, evidence=SWIN_CARD):
    return ZooEntry(
        name=name,
        backbone=backbone,
        dataset="ADE20K-150",
        task="semantic",
        config=f"configs/ade20k-150/{config}",
        paper_single_scale=single,
        paper_multi_scale=multi,
        num_images=2000,
        split="validation",
        layout=ADE_LAYOUT,
        datasets_name="scene_parse_150",
        prepare="ade20k",
        tta=ADE20K_640_TTA if VARIANTS[name].processor["size"]["shortest_edge"] == 640 else ADE20K_512_TTA,
        hub_evidence=evidence,
    )


def _coco(name, backbone, config, pq):
    return ZooEntry(
        name=name,
        backbone=backbone,
        dataset="COCO panoptic",
        task="panoptic",
        config=f"configs/coco-panoptic/swin/{config}",
        paper_single_scale=pq,
        paper_multi_scale=None,
        num_images=5000,
        split="validation",
        layout=COCO_PANOPTIC_LAYOUT,
        size_divisor=0,
        threshold=0.8,
        overlap_threshold=0.8,
        hub_evidence=SWIN_CARD,
        prepare="coco_panoptic",
        notes=("test size: detectron2's defaults (the config sets none); SIZE_DIVISIBILITY 0: no padding",),
    )


MODEL_ZOO: tuple[ZooEntry, ...] = (
    _ade("swin-tiny-ade", "Swin-T", "swin/maskformer_swin_tiny_bs16_160k.yaml", 46.7, 48.8),
    _ade("swin-small-ade", "Swin-S", "swin/maskformer_swin_small_bs16_160k.yaml", 49.8, 51.0),
    _ade("swin-base-ade", "Swin-B (IN-21k)", "swin/maskformer_swin_base_IN21k_384_bs16_160k_res640.yaml", 52.7, 53.9),
    _ade(
        "swin-large-ade", "Swin-L (IN-21k)", "swin/maskformer_swin_large_IN21k_384_bs16_160k_res640.yaml", 54.1, 55.6
    ),
    _ade("resnet50-ade", "R50", "maskformer_R50_bs16_160k.yaml", 44.5, 46.7, evidence=RESNET_SCRIPT),
    _ade("resnet101-ade", "R101", "maskformer_R101_bs16_160k.yaml", 45.5, 47.2, evidence=RESNET_SCRIPT),
    _coco("swin-tiny-coco", "Swin-T", "maskformer_panoptic_swin_tiny_bs64_554k.yaml", 47.7),
    _coco("swin-small-coco", "Swin-S", "maskformer_panoptic_swin_small_bs64_554k.yaml", 49.7),
    _coco("swin-base-coco", "Swin-B (IN-21k)", "maskformer_panoptic_swin_base_IN21k_384_bs64_554k.yaml", 51.8),
    _coco("swin-large-coco", "Swin-L (IN-21k)", "maskformer_panoptic_swin_large_IN21k_384_bs64_554k.yaml", 52.7),
    *(
        ZooEntry(
            name=f"resnet{depth}-coco-stuff",
            backbone=f"R{depth}",
            dataset="COCO-Stuff-10K",
            task="semantic",
            config=f"configs/coco-stuff-10k-171/maskformer_R{depth}_bs32_60k.yaml",
            paper_single_scale=single,
            paper_multi_scale=multi,
            num_images=1000,
            split="test",
            layout="images/testing/*.jpg + annotations/testing/*.png (class ids 0..170, 255 ignored: the authors' "
            "prepare_coco_stuff_10k_sem_seg.py output)",
            tta=COCO_STUFF_TTA,
        )
        for depth, single, multi in ((50, 37.1, 38.9), (101, 38.1, 39.8))
    ),
    *(
        ZooEntry(
            name=f"resnet{depth}-ade20k-full",
            backbone=f"R{depth}",
            dataset="ADE20K-Full (847 classes)",
            task="semantic",
            config=f"configs/ade20k-full-847/maskformer_R{depth}_bs16_200k.yaml",
            paper_single_scale=single,
            paper_multi_scale=None,
            num_images=2000,
            split="validation",
            layout="images/validation/*.jpg + annotations/validation/*.png, 16-bit class ids 0..846, 65535 ignored "
            "(the authors' prepare_ade20k_full_sem_seg.py writes .tif: convert them to 16-bit PNG)",
            notes=("the model zoo reports no multi-scale number for ADE20K-Full",),
        )
        for depth, single in ((50, 16.0), (101, 16.8))
    ),
    ZooEntry(
        name="resnet101-cityscapes",
        backbone="R101",
        dataset="Cityscapes",
        task="semantic",
        config="configs/cityscapes-19/maskformer_R101_bs16_90k.yaml",
        paper_single_scale=78.5,
        paper_multi_scale=80.3,
        num_images=500,
        split="validation",
        layout=CITYSCAPES_LAYOUT,
        prepare="cityscapes",
        tta=CITYSCAPES_TTA,
    ),
    ZooEntry(
        name="resnet50-vistas",
        backbone="R50",
        dataset="Mapillary Vistas",
        task="semantic",
        config="configs/mapillary-vistas-65/maskformer_R50_bs16_300k.yaml",
        paper_single_scale=53.1,
        paper_multi_scale=55.4,
        num_images=2000,
        split="validation",
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
