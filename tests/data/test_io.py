import gc
import re
import warnings

import numpy as np
import pytest
from PIL import Image

from semseg.data.io import (
    ImageReadError,
    ImageTooLargeError,
    image_size,
    read_image,
    read_mask,
    write_index_png,
    write_png,
)
from semseg.labels import CAMVID, IGNORE_INDEX, LabelError, LabelSet

TRIO = LabelSet(
    names=("road", "car", "sky"),
    colours=((128, 64, 128), (0, 0, 142), (70, 130, 180)),
    raw_to_train={0: 0, 1: 1, 2: 2, 255: IGNORE_INDEX},
    void_colour=(0, 0, 0),
)


@pytest.fixture
def rgb() -> np.ndarray:
    return np.random.default_rng(0).integers(0, 256, (12, 16, 3), dtype=np.uint8)


def test_read_png(tmp_path, rgb):
    Image.fromarray(rgb).save(tmp_path / "a.png")
    image = read_image(tmp_path / "a.png")
    assert image.dtype == np.uint8
    np.testing.assert_array_equal(image, rgb)
    image[0, 0] = 0  # writable: callers may draw on it


def test_an_rgb_png_is_decoded_by_opencv_and_pillow_takes_over_when_it_fails(
    tmp_path, rgb, monkeypatch
):
    import cv2

    from semseg.data import io

    Image.fromarray(rgb).save(tmp_path / "a.png")
    calls = []
    decode = cv2.imdecode
    monkeypatch.setattr(io.cv2, "imdecode", lambda *a: calls.append(1) or decode(*a))
    np.testing.assert_array_equal(read_image(tmp_path / "a.png"), rgb)
    assert calls == [1]
    monkeypatch.setattr(io.cv2, "imdecode", lambda *a: calls.append(2))  # OpenCV gives up
    np.testing.assert_array_equal(read_image(tmp_path / "a.png"), rgb)
    assert calls == [1, 2]
    Image.fromarray(rgb[..., 0]).save(tmp_path / "g.png")  # not RGB: Pillow alone
    assert read_image(tmp_path / "g.png").shape == (*rgb.shape[:2], 3)
    assert calls == [1, 2]


def test_read_jpeg_close_to_original(tmp_path):
    # flat 8x8 blocks and no chroma subsampling: JPEG loses almost nothing
    colours = np.random.default_rng(1).integers(0, 256, (2, 3, 3), dtype=np.uint8)
    rgb = np.kron(colours, np.ones((8, 8, 1), np.uint8))
    Image.fromarray(rgb).save(tmp_path / "a.jpg", quality=95, subsampling=0)
    image = read_image(str(tmp_path / "a.jpg"))
    assert image.shape == (16, 24, 3)
    assert image.dtype == np.uint8
    assert np.abs(image.astype(int) - rgb).max() <= 3


def test_read_greyscale_gives_three_equal_channels(tmp_path):
    grey = np.arange(48, dtype=np.uint8).reshape(6, 8) * 5
    Image.fromarray(grey).save(tmp_path / "g.png")
    image = read_image(tmp_path / "g.png")
    assert image.shape == (6, 8, 3)
    for channel in range(3):
        np.testing.assert_array_equal(image[..., channel], grey)


def test_read_rgba_drops_alpha(tmp_path, rgb):
    alpha = np.full((*rgb.shape[:2], 1), 17, dtype=np.uint8)
    Image.fromarray(np.concatenate([rgb, alpha], axis=2)).save(tmp_path / "a.png")
    np.testing.assert_array_equal(read_image(tmp_path / "a.png"), rgb)


@pytest.mark.parametrize("keep", [0.1, 0.5, 0.9])
def test_truncated_png_names_path(tmp_path, rgb, keep):
    path = tmp_path / "cut.png"
    Image.fromarray(rgb).save(path)
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])
    with pytest.raises(ImageReadError, match=re.escape(str(path))):
        read_image(path)
    with pytest.raises(ImageReadError, match=re.escape(str(path))):
        read_mask(path, CAMVID)


def test_failed_decode_leaves_no_file_open(tmp_path, rgb):
    path = tmp_path / "cut.png"
    Image.fromarray(rgb).save(path)
    path.write_bytes(path.read_bytes()[:200])
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with pytest.raises(ImageReadError):
            read_image(path)
        gc.collect()  # a leaked handle is closed here, with a ResourceWarning
    assert not [w for w in caught if issubclass(w.category, ResourceWarning)]


def test_non_image_file_names_path(tmp_path):
    path = tmp_path / "notes.png"
    path.write_text("not an image\n")
    with pytest.raises(ImageReadError, match=re.escape(str(path))):
        read_image(path)


def test_missing_file_names_path(tmp_path):
    with pytest.raises(
        ImageReadError, match=re.escape(f"{tmp_path / 'absent.png'}: file not found")
    ):
        read_image(tmp_path / "absent.png")


def test_read_mask_mode_l_remaps(tmp_path):
    raw = np.array([[0, 5, 11], [10, 11, 3]], dtype=np.uint8)
    Image.fromarray(raw).save(tmp_path / "m.png")
    with Image.open(tmp_path / "m.png") as written:
        assert written.mode == "L"
    mask = read_mask(tmp_path / "m.png", CAMVID)
    assert mask.dtype == np.uint8
    np.testing.assert_array_equal(mask, [[0, 5, 255], [10, 255, 3]])


def test_read_mask_mode_p_uses_indices_not_colours(tmp_path):
    raw = np.array([[0, 1], [2, 255]], dtype=np.uint8)
    image = Image.fromarray(raw)
    image.putpalette(np.random.default_rng(2).integers(0, 256, 768).astype(np.uint8).tolist())
    image.save(tmp_path / "p.png")
    with Image.open(tmp_path / "p.png") as written:
        assert written.mode == "P"
    np.testing.assert_array_equal(read_mask(tmp_path / "p.png", TRIO), [[0, 1], [2, 255]])


def test_read_mask_16_bit(tmp_path):
    Image.fromarray(np.array([[0, 2], [1, 255]], dtype=np.uint16)).save(tmp_path / "w.png")
    np.testing.assert_array_equal(read_mask(tmp_path / "w.png", TRIO), [[0, 2], [1, 255]])
    Image.fromarray(np.array([[0, 300]], dtype=np.uint16)).save(tmp_path / "big.png")
    with pytest.raises(LabelError, match=rf"{re.escape(str(tmp_path / 'big.png'))}.*300"):
        read_mask(tmp_path / "big.png", TRIO)


def test_read_colour_mask(tmp_path):
    road, car, sky = TRIO.colours
    rgb = np.array([[road, car], [sky, (0, 0, 0)]], dtype=np.uint8)
    Image.fromarray(rgb).save(tmp_path / "c.png")
    np.testing.assert_array_equal(
        read_mask(tmp_path / "c.png", TRIO, colour=True), [[0, 1], [2, 255]]
    )


def test_read_colour_mask_from_palette_png(tmp_path):
    image = Image.fromarray(np.array([[2, 0], [1, 2]], dtype=np.uint8))
    image.putpalette([*TRIO.colours[0], *TRIO.colours[1], *TRIO.colours[2]])
    image.save(tmp_path / "p.png")
    np.testing.assert_array_equal(
        read_mask(tmp_path / "p.png", TRIO, colour=True), [[2, 0], [1, 2]]
    )


def test_unknown_colour_names_file(tmp_path):
    Image.fromarray(np.full((2, 2, 3), 9, np.uint8)).save(tmp_path / "c.png")
    with pytest.raises(LabelError, match=rf"{re.escape(str(tmp_path / 'c.png'))}.*\(9, 9, 9\)"):
        read_mask(tmp_path / "c.png", TRIO, colour=True)


def test_rgb_mask_read_as_index_names_file(tmp_path):
    Image.fromarray(np.zeros((2, 2, 3), np.uint8)).save(tmp_path / "rgb.png")
    with pytest.raises(ImageReadError, match=rf"{re.escape(str(tmp_path / 'rgb.png'))}.*'RGB'"):
        read_mask(tmp_path / "rgb.png", TRIO)


def test_undefined_mask_value_names_file(tmp_path):
    Image.fromarray(np.array([[0, 7]], np.uint8)).save(tmp_path / "m.png")
    with pytest.raises(LabelError, match=rf"{re.escape(str(tmp_path / 'm.png'))}.*\[7\]"):
        read_mask(tmp_path / "m.png", TRIO)


def test_write_index_png_round_trip(tmp_path):
    labels = np.arange(256, dtype=np.uint8).reshape(16, 16)
    write_index_png(tmp_path / "plain.png", labels)
    with Image.open(tmp_path / "plain.png") as image:
        assert image.mode == "L"
        np.testing.assert_array_equal(np.asarray(image), labels)


def test_write_index_png_with_palette_round_trip(tmp_path):
    labels = np.arange(256, dtype=np.uint8).reshape(16, 16)
    palette = np.random.default_rng(3).integers(0, 256, (256, 3), dtype=np.uint8)
    write_index_png(tmp_path / "pal.png", labels, palette=palette)
    with Image.open(tmp_path / "pal.png") as image:
        assert image.mode == "P"
        np.testing.assert_array_equal(np.asarray(image), labels)
        np.testing.assert_array_equal(np.reshape(image.getpalette()[:768], (256, 3)), palette)
        np.testing.assert_array_equal(np.asarray(image.convert("RGB")), palette[labels])


def _zlib_level_class(path) -> int:
    """FLEVEL of the PNG's zlib stream (RFC 1950): 0 fastest (levels 0-1), 2 default (6)."""
    data = path.read_bytes()
    idat = data.index(b"IDAT") + 4
    assert data[idat] & 0x0F == 8  # deflate
    return data[idat + 1] >> 6


@pytest.mark.parametrize("shape", [(20, 30), (20, 30, 3)])
def test_write_png_round_trips_at_the_fastest_zlib_level(tmp_path, shape):
    picture = np.random.default_rng(0).integers(0, 256, shape, dtype=np.uint8)
    write_png(tmp_path / "out.png", picture)
    with Image.open(tmp_path / "out.png") as image:
        np.testing.assert_array_equal(np.asarray(image), picture)
    assert _zlib_level_class(tmp_path / "out.png") == 0
    Image.fromarray(picture).save(tmp_path / "default.png")  # the oracle can tell levels apart
    assert _zlib_level_class(tmp_path / "default.png") == 2


def test_written_mask_reads_back_as_train_ids(tmp_path):
    train = np.array([[0, 1, 2], [255, 2, 0]], dtype=np.uint8)
    write_index_png(tmp_path / "m.png", train, palette=TRIO.palette())
    np.testing.assert_array_equal(read_mask(tmp_path / "m.png", TRIO), train)
    np.testing.assert_array_equal(read_mask(tmp_path / "m.png", TRIO, colour=True), train)


def test_decompression_bomb_header_is_refused_naming_the_file(tmp_path, png_claiming):
    bomb = png_claiming(tmp_path / "bomb.png", 60000, 60000)
    assert bomb.stat().st_size < 100
    for read in (read_image, image_size, lambda path: read_mask(path, CAMVID)):
        with pytest.raises(ImageTooLargeError, match=re.escape(f"{bomb}: refused before decoding")):
            read(bomb)
    with pytest.raises(ImageReadError, match="limit is 134,217,728 pixels"):
        read_image(bomb)


@pytest.mark.filterwarnings("ignore::PIL.Image.DecompressionBombWarning")
def test_a_header_over_semsegs_limit_but_under_pillows_is_refused(tmp_path, png_claiming):
    # 144 million pixels: over the default 2**27, under Pillow's ceiling of 178,956,970.
    big = png_claiming(tmp_path / "big.png", 12000, 12000)
    message = f"{big}: 12000x12000 image (144,000,000 pixels) is over the limit of 134,217,728"
    with pytest.raises(ImageTooLargeError, match=re.escape(message)):
        read_image(big)


def test_max_pixels_is_checked_before_decoding(tmp_path, rgb):
    path = tmp_path / "a.png"
    Image.fromarray(rgb).save(path)  # 12 rows of 16
    assert image_size(path, max_pixels=192) == (12, 16)
    np.testing.assert_array_equal(read_image(path, max_pixels=192), rgb)
    with pytest.raises(ImageTooLargeError, match=re.escape(f"{path}: 16x12 image (192 pixels)")):
        read_image(path, max_pixels=191)
    Image.fromarray(np.zeros((12, 16), np.uint8)).save(tmp_path / "m.png")
    with pytest.raises(ImageTooLargeError, match="over the limit of 191 pixels"):
        read_mask(tmp_path / "m.png", CAMVID, max_pixels=191)
