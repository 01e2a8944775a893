"""COCO mask average precision (AP@[.5:.95], AP50, AP75, by object size, and AR) through pycocotools.

Self-contained (numpy, pycocotools, datasets, evaluate) so that this folder can be pushed to the Hub as a
community metric. Load it offline with `modeling_maskformer.evaluation.load_metric("mask_ap")` or
`evaluate.load("<path to this folder>")`.
"""

from __future__ import annotations

import contextlib
import io

import datasets
import evaluate
import numpy as np
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

_CITATION = """\
@inproceedings{lin2014microsoft,
  title={Microsoft COCO: Common Objects in Context},
  author={Lin, Tsung-Yi and Maire, Michael and Belongie, Serge and Hays, James and Perona, Pietro and
          Ramanan, Deva and Doll{\\'a}r, Piotr and Zitnick, C. Lawrence},
  booktitle={ECCV},
  year={2014}
}
"""

_DESCRIPTION = """\
COCO instance segmentation metrics for masks: detections of a category are ranked by score and matched
greedily to ground-truth masks at mask-IoU thresholds 0.50:0.05:0.95; AP is the area under the
interpolated precision-recall curve (101 recall points), averaged over thresholds and over the categories
that have ground truth. Computed by pycocotools' `COCOeval(iouType="segm")`.
"""

_KWARGS_DESCRIPTION = """
Args:
    predictions (`List[dict]`): per image, `{"masks": (N, H, W) binary array (or a list of N (H, W) arrays,
        or of COCO RLE dicts), "labels": (N,) category ids, "scores": (N,) confidences}`. The output of
        transformers' `post_process_instance_segmentation` is accepted as it is: `{"segmentation": (H, W) id
        map or (N, H, W) binary maps, "segments_info": [{"id", "label_id", "score"}, ...]}`.
    references (`List[dict]`): per image, `{"masks", "labels"}` as above, and `"iscrowd"` (N,) optional:
        crowd regions absorb the detections that cover them without being counted as missed.
    max_detections (`int`, *optional*, defaults to 100): detections kept per image (highest scores).
Returns:
    `ap`, `ap50`, `ap75`, `ap_small`, `ap_medium`, `ap_large`, `ar1`, `ar10`, `ar{max_detections}`,
    `ar_small`, `ar_medium`, `ar_large` (`float` in [0, 1], or `None` where COCO reports -1: no ground
    truth in that size range), and `per_category_ap` (`dict`: category id -> AP@[.5:.95]).
Examples:
    >>> import numpy as np
    >>> from modeling_maskformer.evaluation import load_metric
    >>> mask_ap = load_metric("mask_ap")
    >>> square = np.zeros((1, 8, 8), dtype=bool); square[0, 2:6, 2:6] = True
    >>> results = mask_ap.compute(predictions=[{"masks": square, "labels": [3], "scores": [0.9]}],
    ...                           references=[{"masks": square, "labels": [3]}])
    >>> round(results["ap"], 4), results["ap_medium"]
    (1.0, None)
"""

_RLE = {"size": datasets.Sequence(datasets.Value("int64")), "counts": datasets.Value("string")}
_STATS = (
    "ap",
    "ap50",
    "ap75",
    "ap_small",
    "ap_medium",
    "ap_large",
    "ar1",
    "ar10",
    "ar_max",
    "ar_small",
    "ar_medium",
    "ar_large",
)


def _numpy(x) -> np.ndarray:
    return np.asarray(x.cpu() if hasattr(x, "cpu") else x)


def _rles(masks) -> list[dict]:
    """COCO RLEs (counts as text) of binary masks given as (N, H, W), a list of (H, W), or RLE dicts."""
    if isinstance(masks, (list, tuple)) and masks and isinstance(masks[0], dict):
        return [
            {
                "size": [int(v) for v in m["size"]],
                "counts": m["counts"].decode() if isinstance(m["counts"], bytes) else m["counts"],
            }
            for m in masks
        ]
    masks = [_numpy(m) for m in masks] if isinstance(masks, (list, tuple)) else list(_numpy(masks))
    if not masks:
        return []
    stacked = np.stack([m.astype(bool) for m in masks], axis=-1).astype(np.uint8)  # (H, W, N)
    encoded = mask_utils.encode(np.asfortranarray(stacked))
    return [{"size": [int(v) for v in rle["size"]], "counts": rle["counts"].decode()} for rle in encoded]


def _standard(image: dict, is_prediction: bool) -> dict:
    """One image in the stored form: RLE masks, labels and scores (predictions) or crowd flags (references)."""
    if "segments_info" in image:
        info = image["segments_info"]
        segmentation = _numpy(image["segmentation"])
        if segmentation.ndim == 2:
            segmentation = segmentation[None] == np.array([s["id"] for s in info]).reshape(-1, 1, 1)
        image = {
            "masks": segmentation[: len(info)],
            "labels": [s.get("category_id", s.get("label_id")) for s in info],
            "scores": [s.get("score") for s in info],
            "iscrowd": [s.get("iscrowd", 0) for s in info],
        }
    masks = _rles(image["masks"])
    labels = [int(v) for v in _numpy(image["labels"]).reshape(-1)]
    extra = image.get("scores" if is_prediction else "iscrowd")
    if extra is None and is_prediction:
        raise ValueError("every prediction needs 'scores'")
    extra = [0] * len(labels) if extra is None else _numpy(extra).reshape(-1).tolist()
    if not len(masks) == len(labels) == len(extra):
        raise ValueError(
            f"{len(masks)} masks, {len(labels)} labels and {len(extra)} scores/iscrowd flags differ in number"
        )
    key = "scores" if is_prediction else "iscrowd"
    return {"masks": masks, "labels": labels, key: [float(v) if is_prediction else int(v) for v in extra]}


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class MaskAp(evaluate.Metric):
    def _info(self):
        labels = datasets.Sequence(datasets.Value("int64"))
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation=_CITATION,
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features(
                {
                    "predictions": {
                        "masks": [_RLE],
                        "labels": labels,
                        "scores": datasets.Sequence(datasets.Value("float64")),
                    },
                    "references": {
                        "masks": [_RLE],
                        "labels": labels,
                        "iscrowd": datasets.Sequence(datasets.Value("int64")),
                    },
                }
            ),
            reference_urls=[
                "https://cocodataset.org/#detection-eval",
                "https://github.com/cocodataset/cocoapi",
            ],
        )

    # NOTE: masks are run-length encoded before they are stored: the module keeps a few bytes per mask
    # instead of one value per pixel.
    def add_batch(self, *, predictions=None, references=None, **kwargs):
        """Add a batch of images (see the arguments below)."""
        if predictions is not None:
            predictions = [_standard(image, is_prediction=True) for image in predictions]
        if references is not None:
            references = [_standard(image, is_prediction=False) for image in references]
        super().add_batch(predictions=predictions, references=references, **kwargs)

    def add(self, *, prediction=None, reference=None, **kwargs):
        """Add one image (see the arguments below)."""
        if prediction is not None:
            prediction = _standard(prediction, is_prediction=True)
        if reference is not None:
            reference = _standard(reference, is_prediction=False)
        super().add(prediction=prediction, reference=reference, **kwargs)

    def _compute(self, predictions, references, max_detections: int = 100):
        names = [f"ar{max_detections}" if name == "ar_max" else name for name in _STATS]
        images, ground_truth, detections = [], [], []
        for image_id, (prediction, reference) in enumerate(zip(predictions, references), start=1):
            sizes = [m["size"] for m in reference["masks"] + prediction["masks"]]
            if any(size != sizes[0] for size in sizes):
                raise ValueError(f"image {image_id - 1}: masks of different sizes {sorted(set(map(tuple, sizes)))}")
            height, width = sizes[0] if sizes else (0, 0)
            images.append({"id": image_id, "height": height, "width": width})
            for rle, label, crowd in zip(reference["masks"], reference["labels"], reference["iscrowd"]):
                ground_truth.append(_annotation(len(ground_truth) + 1, image_id, rle, label) | {"iscrowd": crowd})
            for rle, label, score in zip(prediction["masks"], prediction["labels"], prediction["scores"]):
                detections.append(
                    _annotation(len(detections) + 1, image_id, rle, label) | {"score": score, "iscrowd": 0}
                )
        if not any(not annotation["iscrowd"] for annotation in ground_truth):
            return dict.fromkeys(names) | {"per_category_ap": {}}
        categories = sorted({a["category_id"] for a in ground_truth + detections})
        with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints its progress and tables
            coco = {}
            for key, annotations in (("gt", ground_truth), ("dt", detections)):
                coco[key] = COCO()
                coco[key].dataset = {
                    "images": images,
                    "annotations": annotations,
                    "categories": [{"id": c} for c in categories],
                }
                coco[key].createIndex()
            evaluation = COCOeval(coco["gt"], coco["dt"], iouType="segm")
            evaluation.params.maxDets = [1, 10, max_detections]
            evaluation.evaluate()
            evaluation.accumulate()
            evaluation.summarize()
        results = {name: float(value) if value >= 0 else None for name, value in zip(names, evaluation.stats)}
        precision = evaluation.eval["precision"][:, :, :, 0, -1]  # (IoU thresholds, recall points, categories)
        per_category = {}
        for k, category in enumerate(evaluation.params.catIds):
            values = precision[:, :, k]
            per_category[int(category)] = float(values[values > -1].mean()) if (values > -1).any() else None
        return results | {"per_category_ap": per_category}


def _annotation(annotation_id: int, image_id: int, rle: dict, category_id: int) -> dict:
    rle = {"size": list(rle["size"]), "counts": rle["counts"].encode()}
    return {
        "id": annotation_id,
        "image_id": image_id,
        "category_id": int(category_id),
        "segmentation": rle,
        "area": float(mask_utils.area(rle)),
        "bbox": mask_utils.toBbox(rle).tolist(),
    }
