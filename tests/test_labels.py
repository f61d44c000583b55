import json

import numpy as np
import pytest

from semseg.labels import CAMVID, IGNORE_INDEX, LabelError, LabelSet

RED, GREEN, BLUE, GREY = (255, 0, 0), (0, 255, 0), (0, 0, 255), (50, 50, 50)


@pytest.fixture
def sparse() -> LabelSet:
    """Three classes stored as raw 10, 20, 30; raw 0 is void, drawn grey."""
    return LabelSet(
        names=("road", "car", "sky"),
        colours=(RED, GREEN, BLUE),
        raw_to_train={10: 0, 20: 1, 30: 2, 0: IGNORE_INDEX},
        void_colour=GREY,
    )


def test_ignore_index_is_255():
    assert IGNORE_INDEX == 255


def test_encode_remaps_raw_values_and_void(sparse):
    raw = np.array([[10, 20, 30], [0, 30, 10]], dtype=np.uint8)
    train = sparse.encode(raw)
    assert train.dtype == np.uint8
    np.testing.assert_array_equal(train, [[0, 1, 2], [255, 2, 0]])


def test_default_mapping_is_identity():
    labels = LabelSet(names=("a", "b"), colours=(RED, GREEN))
    assert dict(labels.raw_to_train) == {0: 0, 1: 1}
    np.testing.assert_array_equal(labels.encode(np.array([[1, 0, 1]], np.uint8)), [[1, 0, 1]])
    with pytest.raises(LabelError, match=r"\[2\]"):
        labels.encode(np.array([[2]], np.uint8))


def test_camvid_maps_unlabelled_to_ignore():
    assert CAMVID.num_classes == 11
    raw = np.arange(12, dtype=np.uint8)[None]
    np.testing.assert_array_equal(CAMVID.encode(raw)[0], [*range(11), 255])


def test_undefined_raw_value_names_file_and_value(sparse):
    raw = np.array([[10, 7], [7, 99]], dtype=np.uint8)
    with pytest.raises(LabelError) as error:
        sparse.encode(raw, source="masks/frame_0001.png")
    message = str(error.value)
    assert "masks/frame_0001.png" in message
    assert "[7, 99]" in message
    assert "0, 10, 20, 30" in message  # the valid raw values
    assert isinstance(error.value, ValueError)


def test_camvid_error_summarises_valid_range():
    with pytest.raises(LabelError, match=r"\[12\].*0-11"):
        CAMVID.encode(np.array([[3, 12]], np.uint8), source="a.png")


def test_encode_rejects_non_uint8(sparse):
    with pytest.raises(LabelError, match=r"a\.png.*int32"):
        sparse.encode(np.array([[10]], dtype=np.int32), source="a.png")


def test_encode_colour_maps_palette_and_void(sparse):
    rgb = np.array([[RED, GREEN, BLUE], [GREY, BLUE, RED]], dtype=np.uint8)
    train = sparse.encode_colour(rgb)
    assert train.dtype == np.uint8
    np.testing.assert_array_equal(train, [[0, 1, 2], [255, 2, 0]])


def test_encode_colour_unknown_colour_names_file_and_colour(sparse):
    rgb = np.array([[RED, (1, 2, 3)]], dtype=np.uint8)
    with pytest.raises(LabelError) as error:
        sparse.encode_colour(rgb, source="colour/frame.png")
    assert "colour/frame.png" in str(error.value)
    assert "(1, 2, 3)" in str(error.value)


def test_encode_colour_rejects_single_channel(sparse):
    with pytest.raises(LabelError, match=r"x\.png.*\(2, 3\)"):
        sparse.encode_colour(np.zeros((2, 3), np.uint8), source="x.png")


def test_palette(sparse):
    palette = sparse.palette()
    assert palette.shape == (256, 3)
    assert palette.dtype == np.uint8
    np.testing.assert_array_equal(palette[:3], [RED, GREEN, BLUE])
    np.testing.assert_array_equal(palette[3:], np.tile(GREY, (253, 1)))


def test_camvid_palette_matches_segnet_colours():
    # SegNet camvid12 palette (CamVid README): Sky, Road, Pavement, Bicyclist; void black.
    palette = CAMVID.palette()
    assert palette[0].tolist() == [128, 128, 128]
    assert palette[3].tolist() == [128, 64, 128]
    assert palette[4].tolist() == [60, 40, 222]
    assert palette[10].tolist() == [0, 128, 192]
    assert palette[IGNORE_INDEX].tolist() == [0, 0, 0]


@pytest.mark.parametrize("labels", [CAMVID, "sparse"])
def test_dict_round_trip(labels, sparse):
    labels = sparse if labels == "sparse" else labels
    data = labels.to_dict()
    assert LabelSet.from_dict(data) == labels
    # JSON turns the integer keys of raw_to_train into strings
    through_json = LabelSet.from_dict(json.loads(json.dumps(data)))
    assert through_json == labels
    raw = np.array(sorted(labels.raw_to_train), dtype=np.uint8)[None]
    np.testing.assert_array_equal(through_json.encode(raw), labels.encode(raw))


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"names": (), "colours": ()}, "no classes"),
        ({"names": ("a", "b"), "colours": (RED,)}, "2 names but 1 colours"),
        ({"raw_to_train": {256: 0}}, "256"),
        ({"raw_to_train": {-1: 0}}, "-1"),
        ({"raw_to_train": {0: 1}}, "maps to 1"),
        ({"raw_to_train": {0: -1}}, "maps to -1"),
        ({"colours": ((300, 0, 0),)}, r"'a'.*\(300, 0, 0\)"),
        ({"colours": ((1, 2),)}, r"'a'.*\(1, 2\)"),
        ({"void_colour": (0, 0, -5)}, r"'void'.*-5"),
    ],
)
def test_invalid_construction(kwargs, message):
    args = {"names": ("a",), "colours": (RED,), **kwargs}
    with pytest.raises(ValueError, match=message):
        LabelSet(**args)


def test_subset_keeps_names_and_colours_in_the_order_given():
    from semseg.data.synthetic import SYNTHETIC_LABELS

    subset = CAMVID.subset(["Road", "Sky"])
    assert subset.names == ("Road", "Sky")
    assert subset.colours == ((128, 64, 128), (128, 128, 128))
    assert subset.raw_to_train == {0: 0, 1: 1}
    assert SYNTHETIC_LABELS.colours[-2:] == ((64, 0, 128), (64, 64, 0))  # Car, Pedestrian
    with pytest.raises(ValueError, match=r"\['Lawn'\] are not in this label set"):
        CAMVID.subset(["Road", "Lawn"])
