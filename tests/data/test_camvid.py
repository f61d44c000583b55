"""The real CamVid copy beside the project (skipped where it is absent)."""

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from semseg.config import DataConfig
from semseg.data.dataset import FileDataset
from semseg.data.formats import detect_format, list_split
from semseg.engine.build import build_datasets
from semseg.labels import IGNORE_INDEX

CAMVID = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "camvid"
pytestmark = pytest.mark.skipif(not CAMVID.is_dir(), reason=f"{CAMVID} not present")


@pytest.mark.parametrize(("split", "count"), [("train", 367), ("val", 101)])
def test_splits_pair_every_image_with_its_mask(split, count):
    files = list_split(CAMVID, split)
    assert detect_format(CAMVID) == "camvid"
    assert len(files.samples) == count
    listed = {line.split()[0].rsplit("/", 1)[-1] for line in (CAMVID / f"{split}.txt").open()}
    assert {s.image.name for s in files.samples} == listed
    assert all(s.image.name == s.mask.name for s in files.samples)


def test_first_sample_reads_as_360x480_with_void_ignored():
    dataset = FileDataset(list_split(CAMVID, "val"))
    image, mask = dataset.read(0)
    assert image.shape == (360, 480, 3) and image.dtype == np.uint8
    assert mask.shape == (360, 480)
    values = set(np.unique(mask).tolist())
    assert values <= set(range(11)) | {IGNORE_INDEX}
    raw = np.asarray(Image.open(dataset.files.samples[0].mask))
    assert np.array_equal(mask == IGNORE_INDEX, raw == 11)


def test_the_drives_held_out_in_turn_cover_train_and_val():
    # val is all 0016E5, which also gives 204 of the 367 train frames
    assert {s.image.stem.split("_")[0] for s in list_split(CAMVID, "val").samples} == {"0016E5"}
    pooled = {"0001TP": 62, "0006R0": 101, "0016E5": 204 + 101}
    for drive, count in pooled.items():
        sets = build_datasets(
            DataConfig(format="camvid", root=str(CAMVID), holdout_groups=(drive,))
        )
        assert sets.groups.frames == {
            g: (0, n) if g == drive else (n, 0) for g, n in pooled.items()
        }
        assert (len(sets.train), len(sets.val)) == (367 + 101 - count, count)
