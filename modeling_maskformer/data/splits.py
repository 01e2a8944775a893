"""Which items a split name means (``val``, ``train[:80%]`` as `datasets` slices) for every source. A source without
a validation split holds ``train_val_split`` (default 15%) of its training split out; a trained model records it
(`HoldOut`), and reading data for that model (`RecordedHoldOut`) holds the same items out, never a larger fraction."""

from __future__ import annotations

import logging
import math
import re
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Literal

import numpy as np
from datasets import ReadInstruction

from ..errors import InvalidInputError

logger = logging.getLogger(__name__)

SPLITS = {"train": "train", "training": "train", "validation": "validation", "val": "validation"}
SPLITS.update({"valid": "validation", "test": "test", "testing": "test"})  # valid: Roboflow
DEFAULT_VALIDATION_FRACTION = 0.15
SPLIT_SEED = 0
WHOLE = "all"  # the one subset of a folder source without named subsets


def normalize_split(split: str) -> str:
    if split not in SPLITS:
        raise InvalidInputError(f"unknown split {split!r}; expected one of {sorted(SPLITS)}")
    return SPLITS[split]


def holdout_indices(count: int, fraction: float, seed: int = SPLIT_SEED) -> tuple[np.ndarray, np.ndarray]:
    """(training, held-out) indices, sorted, as ``datasets.Dataset.train_test_split(test_size=fraction, seed=seed)``.
    NOTE: by hand because folder sources are lists of files; tests check it against datasets' split."""
    check_fraction(fraction)
    held_out = math.ceil(fraction * count)
    if not 0 < held_out < count:
        raise InvalidInputError(
            f"holding {fraction:.0%} of {count} item(s) out as the validation split leaves no training or "
            f"no validation item"
        )
    permutation = np.random.default_rng(seed).permutation(count)
    return np.sort(permutation[held_out:]), np.sort(permutation[:held_out])


def check_fraction(fraction: float) -> float:
    if not 0 < fraction < 1:
        raise InvalidInputError(f"--train_val_split must be a fraction between 0 and 1 (exclusive), got {fraction}")
    return fraction


@dataclass(frozen=True)
class HoldOut:
    """A validation split held out of a training subset, as a model records it (``config.validation_held_out``)."""

    fraction: float
    seed: int = SPLIT_SEED
    subset: str | None = None
    items: int | None = None

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, record: Mapping, source: str) -> HoldOut:
        try:
            held_out = cls(
                float(record["fraction"]),
                int(record.get("seed", SPLIT_SEED)),
                record.get("subset"),
                None if record.get("items") is None else int(record["items"]),
            )
            check_fraction(held_out.fraction)
        except (KeyError, TypeError, ValueError, AttributeError) as error:
            raise InvalidInputError(
                f"{source}: config.validation_held_out {record!r} is not a hold-out record ({error}); "
                f'expected {{"fraction": 0.15, "seed": 0, "subset": ..., "items": ...}} or null'
            ) from None
        return held_out


@dataclass(frozen=True)
class RecordedHoldOut:
    """A model's recorded hold-out and the fraction asked for now (None: the recorded one): a ``train_val_split``."""

    held_out: HoldOut
    source: str
    requested: float | None = None


@dataclass(frozen=True)
class SplitPlan:
    """What to read: the source's ``subset``, then its ``slice``, or the ``part`` a held-out validation split leaves."""

    subset: str | None
    slice: str = ""
    part: Literal["all", "train", "held_out"] = "all"
    fraction: float | None = None
    where: str = ""
    seed: int = SPLIT_SEED
    recorded: RecordedHoldOut | None = None  # the model record the hold-out follows

    def select(self, count: int) -> np.ndarray | range:
        if self.part == "all" and not self.slice:
            return range(count)
        if self.part == "all":  # datasets' slicing rules
            name = self.subset or "split"
            try:
                (instruction,) = ReadInstruction.from_spec(name + self.slice).to_absolute({name: count})
            except ValueError as error:
                raise InvalidInputError(
                    f"split {name + self.slice!r}: {error} (write slices like train[:100] or train[80%:])"
                ) from None
            return range(instruction.from_, instruction.to)
        recorded = self.recorded.held_out if self.recorded is not None else None
        if recorded is not None and recorded.items is not None and recorded.items != count:
            data = repr(self.subset) if self.subset else "the data"
            logger.warning(
                f"{self.where}: {data} has {count} items, but {recorded.subset!r} had {recorded.items} when "
                f"{self.recorded.source} was trained: the held-out items are not the ones its training run held out, "
                "so if this is its training data with items added or removed, some were trained on and the metrics "
                "are optimistic"
            )
        try:
            train, held_out = holdout_indices(count, self.fraction, self.seed)
        except ValueError as error:
            whole = f" or read all of it with {_whole_split(self.subset)}" if self.subset else ""
            raise InvalidInputError(
                f"{self.where}: {error}; pass --train_val_split with another fraction{whole}"
            ) from None
        return train if self.part == "train" else held_out

    def held_out(self, count: int) -> HoldOut | None:
        return None if self.part == "all" else HoldOut(self.fraction, self.seed, self.subset, count)


def split_of(subset: str) -> str | None:
    """Our name of the split a subset stands for (COCO's ``val2017``: validation); None for others."""
    return SPLITS.get(re.sub(r"\d{4}$", "", subset.lower()))


def _find(available: list[str], name: str) -> str | None:
    """The source's subset for split ``name`` (itself or an alias, any case); an error when two stand for it."""
    canonical = SPLITS.get(name.lower())
    found = next((candidate for candidate in available if candidate.lower() == name.lower()), None)
    if found is not None or canonical is None:
        return found
    matches = [candidate for candidate in available if split_of(candidate) == canonical]
    if len(matches) > 1:
        raise InvalidInputError(f"split {name!r} is ambiguous: the data has {matches}; give one of those names")
    return matches[0] if matches else None


def plan_split(
    split: str, available: list[str] | None, train_val_split: float | RecordedHoldOut | None, where: str
) -> SplitPlan:
    """Resolve ``split`` against the source's subsets ``available`` (None: one unnamed); ``train_val_split``: the
    fraction to hold out, or a model's record."""
    name, bracket, rest = split.partition("[")
    if bracket and not rest.endswith("]"):
        raise InvalidInputError(f"split {split!r}: a slice is written like train[:100] or train[80%:]")
    bracket += rest
    canonical = SPLITS.get(name.lower())
    recorded = train_val_split if isinstance(train_val_split, RecordedHoldOut) else None
    requested = recorded.requested if recorded is not None else train_val_split
    if requested is not None:
        check_fraction(requested)
        if bracket:
            raise InvalidInputError(f"{where}: give either a sliced split ({split!r}) or --train_val_split, not both")
    if available is None:  # one set of items: the split name does not select anything
        if (requested is not None or recorded is not None) and canonical in ("train", "validation") and not bracket:
            return _held_out(None, canonical, requested, recorded, where, "")
        return SplitPlan(None, bracket)

    found = _find(available, name)
    validation = _find(available, "validation")
    if requested is not None and validation is not None:
        raise InvalidInputError(
            f"{where}: --train_val_split holds a validation split out of data that has none, but this "
            f"has its own, {validation!r}; leave --train_val_split out to use it, or split differently "
            f"with slices (--train_split 'train[:80%]' --eval_split 'train[80%:]')"
        )
    if recorded is not None and validation is not None:
        logger.info(
            f"{where}: it has its own validation split, {validation!r}, so the hold-out {recorded.source} records "
            f"({recorded.held_out.fraction:g} of {recorded.held_out.subset!r}) does not apply"
        )
    holds_out = canonical in ("train", "validation") and not bracket and validation is None
    if not holds_out:
        if found is None:
            raise InvalidInputError(
                f"{where}: no split {name!r}; it has {available}. Pass one of those names (--train_split, "
                f"--eval_split, --split), a slice of one such as {available[0]}[80%:], or --train_val_split "
                f"FRACTION to hold a validation split out of the training split"
            )
        return SplitPlan(found, bracket)
    source = _find(available, "train") or (available[0] if len(available) == 1 else None)
    if source is None:
        raise InvalidInputError(
            f"{where}: no 'train' split to hold a validation split out of; it has {available}. Pass "
            f"--train_split and --eval_split with two of them"
        )
    return _held_out(source, canonical, requested, recorded, where, f"no validation split (only {available})")


def _whole_split(subset: str) -> str:
    return f"--split {subset}" if split_of(subset) is None else f"--split '{subset}[:100%]'"


def _held_out(
    source: str | None,
    canonical: str,
    requested: float | None,
    recorded: RecordedHoldOut | None,
    where: str,
    reason: str,
) -> SplitPlan:
    """The ``canonical`` part of ``source`` when a fraction (asked, else recorded, else 15%) is held out of it."""
    reasons = [reason] if reason else []
    fraction, seed = DEFAULT_VALIDATION_FRACTION if requested is None else requested, SPLIT_SEED
    if requested is not None:
        reasons.append(f"--train_val_split {requested}")
    if recorded is not None:
        kept, model = recorded.held_out, recorded.source
        seed = kept.seed
        if requested is None:
            fraction = kept.fraction
            reasons.append(
                f"{model} records that its training run held {kept.fraction:g} out (config.validation_held_out)"
            )
        elif requested > kept.fraction:
            raise InvalidInputError(
                f"{where}: --train_val_split {requested:g} is larger than the {kept.fraction:g} that {model} "
                f"held out of its training data (config.validation_held_out): the extra items are ones it "
                f"was trained on, so its metrics would be inflated; leave --train_val_split out to use "
                f"its held-out items, or pass a fraction up to {kept.fraction:g}"
            )
        elif requested < kept.fraction:
            logger.info(
                f"{where}: --train_val_split {requested:g} is smaller than the {kept.fraction:g} that {model} held "
                "out when it was trained: the validation split is a subset of the items it was not trained on"
            )
    of = f"{source!r}" if source else "the items"
    whole = f"; {_whole_split(source)} reads all of it" if source else ""
    # NOTE: said once, with the validation part (a run builds its training split first, then this one); the training
    # part says it at DEBUG level.
    because = " and ".join(reasons)
    logger.log(
        logging.INFO if canonical == "validation" else logging.DEBUG,
        f"{where}: {because}, so {100 * fraction:.0f}% of {of} (seed {seed}) are held out as the validation split "
        f"and the rest is the training split; --train_val_split FRACTION sets the fraction{whole}",
    )
    return SplitPlan(source, "", "train" if canonical == "train" else "held_out", fraction, where, seed, recorded)
