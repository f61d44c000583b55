"""Splitting a dataset by the group its file names carry: CamVid's drive, Cityscapes' city.

The frames of one drive are near-duplicates of each other. CamVid's val split is all drive
``0016E5``, which also gives 204 of its 367 training frames, so its val score measures how well
a model remembers that drive rather than how it does on roads it has not seen. Holding out
whole groups instead (:func:`split_by_group`) trains on every other group and validates on the
held-out one; holding out each group once in turn is leave-one-group-out validation.

A group is read from a file's stem (name without suffix) with a regular expression: its first
capture group, or the whole match when it has none. :data:`DEFAULT_GROUP_PATTERNS` holds the
patterns of the formats whose names carry a group.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

from semseg.data.formats import DatasetError, SplitFiles

DEFAULT_GROUP_PATTERNS = {
    "camvid": r"^([^_]+)_",  # 0016E5_07959 -> 0016E5, Seq05VD_f00000 -> Seq05VD
    "cityscapes": r"^([^_]+)_",  # aachen_000000_000019_leftImg8bit -> aachen
}
"""Format -> pattern whose first capture group is the group of a file stem."""


def group_of(stem: str, pattern: re.Pattern[str]) -> str | None:
    """The group of file stem ``stem``: ``pattern``'s first capture group (the whole match when
    it has none), searched anywhere in the stem (``re.search``); None when it does not match."""
    found = pattern.search(stem)
    if found is None:
        return None
    return found.group(1) if pattern.groups else found.group(0)


@dataclass(frozen=True)
class GroupSplit:
    """The training and validation files of a split by group.

    Attributes:
        train: files of the groups not held out.
        val: files of the held-out groups.
        frames: group -> (training frames, validation frames), every group of the pool, sorted
            by name.
        pattern: the regular expression that read the groups.
    """

    train: SplitFiles
    val: SplitFiles
    frames: dict[str, tuple[int, int]]
    pattern: str

    def table(self) -> str:
        """One line per group with its training and validation frame counts, then the totals."""
        width = max(len("group"), *(len(g) for g in self.frames)) + 2
        lines = [f"{'group':<{width}}{'train':>7}{'validate':>10}"]
        lines += [f"{g:<{width}}{t:>7d}{v:>10d}" for g, (t, v) in self.frames.items()]
        lines.append(f"{'total':<{width}}{len(self.train.samples):>7d}{len(self.val.samples):>10d}")
        return "\n".join(lines)


def split_by_group(files: SplitFiles, pattern: str, holdout: Sequence[str]) -> GroupSplit:
    """Split ``files`` into the frames of the ``holdout`` groups (validation) and the rest.

    Args:
        files: the pool of frames, e.g. CamVid's train and val splits together.
        pattern: regular expression reading the group from a file stem (see :func:`group_of`).
        holdout: the groups to validate on; at least one, each matching some file.

    Raises:
        DatasetError: a file whose stem the pattern does not match (naming the file and the
            pattern), a held-out group no file belongs to (naming it and the groups found), or
            no group left to train on.
    """
    if not holdout:
        raise ValueError("split_by_group needs at least one group to hold out")
    regex = re.compile(pattern)
    groups = []
    for sample in files.samples:
        group = group_of(sample.image.stem, regex)
        if group is None:
            raise DatasetError(
                f"{sample.image}: data.group_pattern {pattern!r} does not match its name"
            )
        groups.append(group)
    found = Counter(groups)
    missing = [g for g in holdout if g not in found]
    if missing:
        raise DatasetError(
            f"data.holdout_groups: no file of group(s) {', '.join(map(repr, missing))} "
            f"(data.group_pattern {pattern!r} found: {', '.join(sorted(found))})"
        )
    held_out = set(holdout)
    if held_out >= set(found):
        raise DatasetError(
            f"data.holdout_groups holds out every group ({', '.join(sorted(found))}): "
            "none is left to train on"
        )
    train = tuple(s for s, g in zip(files.samples, groups, strict=True) if g not in held_out)
    val = tuple(s for s, g in zip(files.samples, groups, strict=True) if g in held_out)
    frames = {g: (0, count) if g in held_out else (count, 0) for g, count in sorted(found.items())}
    return GroupSplit(
        train=SplitFiles(train, files.labels, files.colour_masks),
        val=SplitFiles(val, files.labels, files.colour_masks),
        frames=frames,
        pattern=pattern,
    )
