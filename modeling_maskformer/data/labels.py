"""What a model's classes mean, as its folder records them, and the rules every reader follows (`LabelSettings`): the
recorded convention unless told otherwise, never ADE's by guess; classes that differ from the model's refused.

NOTE: a folder written by this package before the label settings were recorded (no `thing_ids` in its config)
always said `do_reduce_labels: false`, whatever the data, so its convention counts as unknown.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Collection, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch
from transformers import PretrainedConfig
from transformers.image_processing_base import ImageProcessingMixin

from ..configuration.configuration_maskformer import MaskFormerConfig, check_local_source
from ..configuration.configuration_per_pixel import PerPixelBaselineConfig
from ..configuration.transformers_format import STASH_KEY
from ..errors import InvalidInputError, MissingInputError

logger = logging.getLogger(__name__)

OUR_MODEL_TYPES = (MaskFormerConfig.model_type, PerPixelBaselineConfig.model_type)
# How the convention is spelled on the command line, and as a loader argument.
CONVENTION_FLAGS = {True: "--label_convention ade", False: "--label_convention as_is"}
CONVENTION_NAMES = {True: "ade", False: "as_is"}
OVERRIDE_FLAG = "--ignore_class_mismatch"
TASKS = ("semantic", "instance", "panoptic")


def convention_flag(reduce_labels: bool) -> str:
    return f"{CONVENTION_FLAGS[reduce_labels]} (reduce_labels={reduce_labels})"


def _names(id2label: Mapping[int, str], limit: int = 6) -> str:
    names = [id2label[i] for i in sorted(id2label)]
    return ", ".join(names[:limit]) + (", ..." if len(names) > limit else "")


def _normalized(id2label: Mapping[int, str]) -> dict[int, str]:
    """Names compared without case and surrounding spaces (transformers' ADE20K checkpoints say "bed ")."""
    return {int(k): str(v).strip().lower() for k, v in id2label.items()}


@dataclass(frozen=True)
class LabelSettings:
    """A model's classes and the label convention of its training data (None: unknown / not recorded)."""

    id2label: dict[int, str]
    thing_ids: list[int] | None
    reduce_labels: bool | None
    ignore_index: int | None
    source: str
    held_out: Mapping[str, Any] | None = None

    @property
    def num_labels(self) -> int:
        return len(self.id2label)

    @classmethod
    def from_pretrained(cls, model_path: str | os.PathLike, **hub_kwargs: Any) -> LabelSettings:
        """From a model folder or Hub id: ours (either format) or transformers' own."""
        source = str(model_path)
        check_local_source(source)  # a path that does not exist: said so, not the Hub's repo-id message
        config, _ = PretrainedConfig.get_config_dict(source, **hub_kwargs)
        if not config:
            raise MissingInputError(f"{source} has no config.json: not a saved model folder")
        try:
            processor, _ = ImageProcessingMixin.get_image_processor_dict(source, **hub_kwargs)
        except OSError:  # no preprocessor_config.json
            processor = {}
        ours = config.get("model_type") in OUR_MODEL_TYPES or STASH_KEY in config
        reduce_labels = next(
            (bool(processor[k]) for k in ("do_reduce_labels", "reduce_labels") if k in processor), None
        )
        if ours and config.get("thing_ids") is None:
            reduce_labels = None  # see the module docstring
        return cls(
            id2label={int(k): v for k, v in (config.get("id2label") or {}).items()},
            thing_ids=None if config.get("thing_ids") is None else sorted(int(i) for i in config["thing_ids"]),
            reduce_labels=reduce_labels,
            ignore_index=processor.get("ignore_index"),
            source=source,
            held_out=config.get("validation_held_out"),
        )

    @classmethod
    def from_model(cls, model, processor=None) -> LabelSettings:
        """From a loaded model: its config's classes; the convention from its folder, else from `processor` (when the
        config records `thing_ids`, as training writes)."""
        config = model.config
        id2label = {int(k): v for k, v in config.id2label.items()}
        thing_ids = getattr(config, "thing_ids", None)
        held_out = getattr(config, "validation_held_out", None)
        folder = getattr(config, "name_or_path", "") or getattr(config, "_name_or_path", "")
        if folder and (Path(folder) / "config.json").is_file():
            return replace(cls.from_pretrained(folder), id2label=id2label, thing_ids=thing_ids, held_out=held_out)
        recorded = processor is not None and thing_ids is not None
        return cls(
            id2label=id2label,
            thing_ids=thing_ids,
            reduce_labels=bool(processor.do_reduce_labels) if recorded else None,
            ignore_index=getattr(processor, "ignore_index", None),
            source=f"the {type(model).__name__}" + (f" from {folder}" if folder else ""),
            held_out=held_out,
        )

    def label_convention(self, requested: bool | None) -> bool:
        """`requested` (None: the recorded convention); a contradiction is followed with a warning."""
        if requested is None:
            if self.reduce_labels is None:
                raise InvalidInputError(
                    f"{self.source} records no label convention, so how to read semantic label maps for it must be "
                    f"chosen: pass {convention_flag(True)} for ADE20K's (pixel 0 = 'other', ignored; pixel k = class "
                    f"k-1) or {convention_flag(False)} for pixel values that are the class ids"
                )
            logger.info(
                f"label convention {CONVENTION_NAMES[self.reduce_labels]}, recorded by {self.source} "
                f"(do_reduce_labels={str(self.reduce_labels).lower()})"
            )
            return self.reduce_labels
        if self.reduce_labels is not None and requested != self.reduce_labels:
            logger.warning(
                f"{convention_flag(requested)} contradicts {self.source}, whose training data was read with "
                f"{convention_flag(self.reduce_labels)}: using {CONVENTION_NAMES[requested]} as asked (right only if "
                "these label files are written differently from the training data's)"
            )
        return requested

    def check_dataset(self, dataset, *, ignore_class_mismatch: bool = False, name: str = "the dataset") -> None:
        """Refuse a dataset whose classes differ from the model's (`ignore_class_mismatch`: a warning); numbered classes
        of the model's count take its names."""
        ours, theirs = self.id2label, dataset.id2label
        numbered = [all(name == str(index) for index, name in names.items()) for names in (ours, theirs)]
        if len(ours) == len(theirs) and numbered == [False, True]:  # the loader's "0", "1", ...: the model's names
            dataset.id2label = dict(ours)
            logger.info("%s names no classes: using the %d names of %s", name, len(ours), self.source)
            return
        if _normalized(theirs) != _normalized(ours):
            differ = "class counts" if len(theirs) != len(ours) else "class names"
            message = (
                f"{name} has {len(theirs)} classes ({_names(theirs)}) but {self.source} predicts {len(ours)} "
                f"({_names(ours)})"
            )
            if not ignore_class_mismatch:
                raise InvalidInputError(
                    f"{message}: the {differ} differ; pass {OVERRIDE_FLAG} to evaluate anyway "
                    f"(class ids are then compared as numbers)"
                )
            logger.warning("%s; evaluating anyway (%s): class ids are compared as numbers", message, OVERRIDE_FLAG)
        known = self.thing_ids is not None and dataset.task != "semantic"
        if known and sorted(dataset.thing_ids) != sorted(self.thing_ids):
            logger.warning(
                f"{name} and {self.source} differ in which classes are things ({dataset.thing_ids} vs "
                f"{self.thing_ids}): the metrics follow {name}"
            )


def model_thing_ids(config, source: str = "the model") -> list[int] | None:
    """`config.thing_ids`, or None (logged) when the model does not record it."""
    thing_ids = getattr(config, "thing_ids", None)
    if thing_ids is None:
        logger.info(
            f"{source} does not record which classes are things and which stuff (config.thing_ids): instance "
            "segmentation lists every class, panoptic segmentation fuses no class by default"
        )
        return None
    if not thing_ids:
        logger.info(
            f"{source} records no thing class (trained on semantic labels): instance segmentation finds nothing; "
            "use semantic or panoptic segmentation"
        )
    return list(thing_ids)


def task_caveats(config, tasks: Collection[str], source: str = "the model") -> list[str]:
    """One line per limit of this model for `tasks`: no thing class, or no stuff class (`config.thing_ids`)."""
    thing_ids = getattr(config, "thing_ids", None)
    if thing_ids is None:
        return []
    lines = []
    if "instance" in tasks and not thing_ids:
        lines.append(
            f"{source} records no thing class (config.thing_ids is empty: it was trained on semantic label "
            f"maps), so instance segmentation finds nothing: every image gets 0 instances (COCO results []). "
            f"Use semantic or panoptic segmentation with this model; for instances, train on instance or "
            f"panoptic data (COCO JSON, a COCO panoptic folder)"
        )
    no_stuff = {int(i) for i in thing_ids} >= {int(i) for i in config.id2label}
    dense = [task for task in ("semantic", "panoptic") if task in tasks]
    if no_stuff and dense:
        effects = {
            "semantic": "semantic maps give every pixel one of its object classes, the background included",
            "panoptic": "panoptic output leaves empty only the pixels no confident object mask covers, so the "
            "background often becomes part of an object segment",
        }
        lines.append(
            f"{source} has no background or stuff class (every class is a thing, as after training on COCO "
            f"instance data): {'; '.join(effects[task] for task in dense)}. Instance segmentation gives "
            f"its objects alone"
        )
    return lines


def drop_stuff(result: dict, thing_ids: Collection[int]) -> dict:
    """An instance result without its stuff segments (as Mask2Former's instance inference), ids renumbered 0..N-1."""
    things = {int(i) for i in thing_ids}
    segments = result["segments_info"]
    kept = [n for n, segment in enumerate(segments) if segment["label_id"] in things]
    if len(kept) == len(segments):
        return result
    segmentation = result["segmentation"]
    if segmentation.dim() == 3:  # (N, H, W) binary maps, one per segment in segments_info's order
        segmentation = segmentation[kept]
    else:  # (H, W) segment ids, -1 = no instance
        lookup = torch.full((len(segments) + 1,), -1, dtype=segmentation.dtype, device=segmentation.device)
        lookup[torch.tensor([segments[n]["id"] for n in kept], dtype=torch.long)] = torch.arange(
            len(kept), dtype=segmentation.dtype, device=segmentation.device
        )
        segmentation = lookup[segmentation.long().clamp(min=-1)]  # index -1 is the last entry: -1
    info = [{**segments[n], "id": new} for new, n in enumerate(kept)]
    return {**result, "segmentation": segmentation, "segments_info": info}


def segment(
    processor,
    outputs,
    task: str,
    *,
    thing_ids: Collection[int] | None,
    target_sizes: list[tuple[int, int]] | None = None,
    threshold: float = 0.5,
    mask_threshold: float = 0.5,
    overlap_mask_area_threshold: float = 0.8,
    label_ids_to_fuse: Collection[int] | None = None,
    return_binary_maps: bool = False,
) -> list:
    """Post-process `outputs` for `task`: instance results hold no stuff class, panoptic results fuse the stuff
    classes unless `label_ids_to_fuse` says otherwise (`thing_ids` None: neither)."""
    if task == "semantic":
        return processor.post_process_semantic_segmentation(outputs, target_sizes=target_sizes)
    common = dict(threshold=threshold, mask_threshold=mask_threshold, target_sizes=target_sizes)
    common["overlap_mask_area_threshold"] = overlap_mask_area_threshold
    if task == "instance":
        results = processor.post_process_instance_segmentation(
            outputs, return_binary_maps=return_binary_maps, **common
        )
        return results if thing_ids is None else [drop_stuff(result, thing_ids) for result in results]
    if task == "panoptic":
        if label_ids_to_fuse is None and thing_ids is not None:
            num_labels = outputs["class_queries_logits"].shape[-1] - 1  # (B, Q, K + 1)
            label_ids_to_fuse = set(range(num_labels)) - {int(i) for i in thing_ids}
        fuse = None if label_ids_to_fuse is None else set(label_ids_to_fuse)
        return processor.post_process_panoptic_segmentation(outputs, label_ids_to_fuse=fuse, **common)
    raise InvalidInputError(f"unknown task {task!r}; choose from {', '.join(TASKS)}")
