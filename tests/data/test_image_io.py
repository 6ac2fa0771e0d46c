"""load_image: real files, every PIL mode we convert, EXIF, size limits, bad files, arrays."""
from __future__ import annotations

import struct
import warnings
import zlib
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from samkit.data.image_io import DEFAULT_MAX_PIXELS, MAX_PIXELS_ENV, load_image
from samkit.errors import ImageError


@pytest.fixture(scope="module")
def grabcut_jpg(data_dir: Path) -> Path:
    return sorted((data_dir / "GrabCut" / "data_GT").glob("*.jpg"))[0]


def _assert_rgb(image: np.ndarray, height: int, width: int) -> None:
    assert image.shape == (height, width, 3)
    assert image.dtype == np.uint8
    assert image.flags["C_CONTIGUOUS"]


def _png_with_header_size(path: Path, width: int, height: int) -> Path:
    """A tiny PNG whose IHDR claims ``width`` x ``height`` 8-bit grey pixels (data is truncated)."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    idat = zlib.compress(b"\x00" * 64)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b""))
    return path


# --- real data ---------------------------------------------------------------------------


def test_real_jpeg_loads_as_rgb(grabcut_jpg: Path) -> None:
    with Image.open(grabcut_jpg) as im:
        width, height = im.size
        expected = np.asarray(im.convert("RGB"))
    image = load_image(grabcut_jpg)
    _assert_rgb(image, height, width)
    np.testing.assert_array_equal(image, expected)
    np.testing.assert_array_equal(load_image(str(grabcut_jpg)), image)


def test_berkeley_images_load(data_dir: Path) -> None:
    paths = sorted((data_dir / "Berkeley" / "images").glob("*.jpg"))[:3]
    assert paths
    for path in paths:
        with Image.open(path) as im:
            width, height = im.size
        _assert_rgb(load_image(path), height, width)


# --- mode conversion (files written to tmp_path) ------------------------------------------


def test_grayscale_png(tmp_path: Path) -> None:
    grey = np.arange(12, dtype=np.uint8).reshape(3, 4) * 20
    Image.fromarray(grey).save(tmp_path / "g.png")
    image = load_image(tmp_path / "g.png")
    _assert_rgb(image, 3, 4)
    np.testing.assert_array_equal(image, np.repeat(grey[:, :, None], 3, axis=2))


def test_grayscale_alpha_png(tmp_path: Path) -> None:
    Image.new("LA", (5, 2), (90, 0)).save(tmp_path / "la.png")
    np.testing.assert_array_equal(load_image(tmp_path / "la.png"), np.full((2, 5, 3), 90, np.uint8))


def test_rgba_png_drops_alpha(tmp_path: Path) -> None:
    rgba = np.zeros((2, 3, 4), np.uint8)
    rgba[..., 0], rgba[..., 1], rgba[..., 2] = 10, 20, 30
    rgba[0, 0, 3] = 255  # one opaque pixel, the rest fully transparent
    Image.fromarray(rgba).save(tmp_path / "rgba.png")
    image = load_image(tmp_path / "rgba.png")
    np.testing.assert_array_equal(image, rgba[..., :3])


def test_sixteen_bit_png(tmp_path: Path) -> None:
    values = np.array([[0, 257, 257 * 100], [65535, 65534, 128]], dtype=np.uint16)
    Image.fromarray(values).save(tmp_path / "i16.png")
    with Image.open(tmp_path / "i16.png") as im:
        assert im.mode.startswith("I")
    image = load_image(tmp_path / "i16.png")
    expected = np.array([[0, 1, 100], [255, 255, 0]], dtype=np.uint8)
    np.testing.assert_array_equal(image, np.repeat(expected[:, :, None], 3, axis=2))


def _palette_image() -> Image.Image:
    im = Image.new("P", (3, 1))
    im.putpalette([255, 0, 0, 0, 128, 255, 7, 8, 9] + [0, 0, 0] * 253)
    im.putdata([0, 1, 2])
    return im


def test_palette_png(tmp_path: Path) -> None:
    _palette_image().save(tmp_path / "p.png")
    image = load_image(tmp_path / "p.png")
    np.testing.assert_array_equal(image[0], [[255, 0, 0], [0, 128, 255], [7, 8, 9]])


def test_palette_png_with_transparency(tmp_path: Path) -> None:
    _palette_image().save(tmp_path / "pt.png", transparency=0)
    with Image.open(tmp_path / "pt.png") as im:
        assert im.mode == "P" and "transparency" in im.info
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        image = load_image(tmp_path / "pt.png")
    # the transparent index keeps its palette colour (alpha is dropped, not composited)
    np.testing.assert_array_equal(image[0], [[255, 0, 0], [0, 128, 255], [7, 8, 9]])


def test_cmyk_jpeg(tmp_path: Path) -> None:
    Image.new("CMYK", (16, 16), (255, 0, 0, 0)).save(tmp_path / "cmyk.jpg", quality=95)
    with Image.open(tmp_path / "cmyk.jpg") as im:
        assert im.mode == "CMYK"
    image = load_image(tmp_path / "cmyk.jpg")
    _assert_rgb(image, 16, 16)
    assert np.abs(image.astype(int) - [0, 255, 255]).max() <= 3  # pure cyan


def test_one_bit_png(tmp_path: Path) -> None:
    bits = np.array([[True, False], [False, True]])
    Image.fromarray(bits).save(tmp_path / "b.png")
    with Image.open(tmp_path / "b.png") as im:
        assert im.mode == "1"
    image = load_image(tmp_path / "b.png")
    np.testing.assert_array_equal(image[..., 0], bits.astype(np.uint8) * 255)
    np.testing.assert_array_equal(image[..., 0], image[..., 2])


def test_exif_orientation_is_applied(tmp_path: Path) -> None:
    pixels = np.zeros((20, 40, 3), np.uint8)
    pixels[:, :20] = (255, 0, 0)  # left half red
    pixels[:, 20:] = (0, 0, 255)  # right half blue
    im = Image.fromarray(pixels)
    exif = im.getexif()
    exif[0x0112] = 6  # "rotate 90 CW to display"
    im.save(tmp_path / "rot.jpg", exif=exif, quality=95)
    image = load_image(tmp_path / "rot.jpg")
    _assert_rgb(image, 40, 20)
    # after a clockwise turn the left (red) half is on top and the right (blue) half below
    assert np.abs(image[5:15, 5:15].astype(int) - [255, 0, 0]).max() < 20
    assert np.abs(image[25:35, 5:15].astype(int) - [0, 0, 255]).max() < 20


# --- PIL image inputs ---------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["I;16", "I;16B"])
def test_pil_sixteen_bit_modes(mode: str) -> None:
    values = np.array([[0, 65535, 257 * 7]], dtype=np.uint16)
    im = Image.fromarray(values.astype(">u2" if mode == "I;16B" else "<u2"))
    assert im.mode == mode
    np.testing.assert_array_equal(load_image(im)[..., 1], [[0, 255, 7]])


def test_pil_int32_mode_is_clipped() -> None:
    im = Image.fromarray(np.array([[-5, 257 * 3, 100_000]], dtype=np.int32))
    assert im.mode == "I"
    np.testing.assert_array_equal(load_image(im)[..., 0], [[0, 3, 255]])


def test_pil_float_modes() -> None:
    unit = Image.fromarray(np.array([[0.0, 0.5, 1.0]], dtype=np.float32))
    wide = Image.fromarray(np.array([[-3.0, 100.0, 300.0]], dtype=np.float32))
    assert unit.mode == wide.mode == "F"
    np.testing.assert_array_equal(load_image(unit)[..., 0], [[0, 128, 255]])
    np.testing.assert_array_equal(load_image(wide)[..., 0], [[0, 100, 255]])


def test_pil_input_is_not_modified() -> None:
    im = Image.new("RGBA", (4, 3), (1, 2, 3, 4))
    image = load_image(im)
    assert im.mode == "RGBA"
    np.testing.assert_array_equal(image, np.broadcast_to([1, 2, 3], (3, 4, 3)))


# --- pixel limit --------------------------------------------------------------------------


def test_pixel_limit_from_argument(tmp_path: Path) -> None:
    path = _png_with_header_size(tmp_path / "bomb.png", 20000, 20000)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # PIL's DecompressionBombWarning must not fire
        with pytest.raises(ImageError) as info:
            load_image(path, max_pixels=1_000_000)
    message = str(info.value)
    assert str(path) in message and "20000 x 20000" in message
    assert "1,000,000" in message and "--max-pixels" in message and MAX_PIXELS_ENV in message


def test_default_limit_rejects_huge_header(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(MAX_PIXELS_ENV, raising=False)
    path = _png_with_header_size(tmp_path / "bomb.png", 20000, 20000)
    with pytest.raises(ImageError, match=f"{DEFAULT_MAX_PIXELS:,}"):
        load_image(path)


def test_env_var_limit(grabcut_jpg: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(MAX_PIXELS_ENV, "1000")
    with pytest.raises(ImageError, match="above the limit of 1,000;"):
        load_image(grabcut_jpg)
    assert load_image(grabcut_jpg, max_pixels=10**9).ndim == 3  # the argument wins
    monkeypatch.setenv(MAX_PIXELS_ENV, "abc")
    with pytest.raises(ImageError, match=MAX_PIXELS_ENV):
        load_image(grabcut_jpg)


def test_env_var_raises_limit_and_pil_check_stays_quiet(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """15000 x 14000 is above our default and PIL's hard limit; the env var lets it through
    to decoding (which fails on the truncated data) without any PIL bomb warning or error."""
    saved = Image.MAX_IMAGE_PIXELS
    width, height = 15000, 14000
    assert width * height > max(DEFAULT_MAX_PIXELS, 2 * saved)
    path = _png_with_header_size(tmp_path / "big.png", width, height)
    monkeypatch.setenv(MAX_PIXELS_ENV, str(250_000_000))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(ImageError, match="cannot read image") as info:
            load_image(path)
    assert str(path) in str(info.value)
    assert saved == Image.MAX_IMAGE_PIXELS


# --- unreadable files ---------------------------------------------------------------------


def test_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "nope.jpg"
    with pytest.raises(ImageError, match="image not found") as info:
        load_image(path)
    assert str(path) in str(info.value)


def test_directory(tmp_path: Path) -> None:
    with pytest.raises(ImageError, match="directory") as info:
        load_image(tmp_path)
    assert str(tmp_path) in str(info.value)


@pytest.mark.parametrize("content", [b"", b"hello, this is not an image\n"], ids=["empty", "text"])
def test_non_image_files(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "fake.jpg"
    path.write_bytes(content)
    with pytest.raises(ImageError, match="cannot read image") as info:
        load_image(path)
    assert str(path) in str(info.value)


def test_truncated_jpeg(tmp_path: Path, grabcut_jpg: Path) -> None:
    data = grabcut_jpg.read_bytes()
    path = tmp_path / "half.jpg"
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(ImageError, match="cannot read image") as info:
        load_image(path)
    assert str(path) in str(info.value)


# --- arrays -------------------------------------------------------------------------------


def test_array_uint8_shapes() -> None:
    rgb = np.random.default_rng(0).integers(0, 256, (4, 5, 3), dtype=np.uint8)
    np.testing.assert_array_equal(load_image(rgb), rgb)
    rgba = np.concatenate([rgb, np.zeros((4, 5, 1), np.uint8)], axis=2)
    np.testing.assert_array_equal(load_image(rgba), rgb)
    grey = rgb[..., 0]
    np.testing.assert_array_equal(load_image(grey), np.repeat(grey[:, :, None], 3, axis=2))
    np.testing.assert_array_equal(load_image(grey[:, :, None]), load_image(grey))


def test_array_is_contiguous_copy_of_view() -> None:
    rgb = np.zeros((6, 8, 3), np.uint8)
    view = rgb[::2, ::2]
    _assert_rgb(load_image(view), 3, 4)
    _assert_rgb(load_image(np.zeros((4, 5, 4), np.uint8)), 4, 5)


def test_array_dtypes() -> None:
    np.testing.assert_array_equal(load_image(np.array([[0, 65535, 514]], np.uint16))[..., 0], [[0, 255, 2]])
    np.testing.assert_array_equal(load_image(np.array([[False, True]]))[..., 0], [[0, 255]])
    floats = np.array([[-0.5, 0.0, 0.5, 1.0, 2.0]], np.float32)
    np.testing.assert_array_equal(load_image(floats)[..., 0], [[0, 0, 128, 255, 255]])


@pytest.mark.parametrize(
    ("array", "fragment"),
    [
        (np.zeros((4,), np.uint8), "shape 4"),
        (np.zeros((2, 3, 4, 5), np.uint8), "shape 2x3x4x5"),
        (np.zeros((4, 5, 2), np.uint8), "shape 4x5x2"),
        (np.zeros((0, 5, 3), np.uint8), "empty"),
        (np.zeros((4, 5), np.complex64), "dtype complex64"),
        (np.zeros((4, 5), np.int64), "dtype int64"),
        (np.full((4, 5), np.nan, np.float32), "NaN"),
    ],
)
def test_bad_arrays(array: np.ndarray, fragment: str) -> None:
    with pytest.raises(ImageError, match=fragment) as info:
        load_image(array)
    assert "\n" not in str(info.value)


def test_unsupported_source_type() -> None:
    with pytest.raises(ImageError, match="unsupported image source"):
        load_image(42)  # type: ignore[arg-type]


def test_concurrent_loads_restore_pil_limit(grabcut_jpg: Path) -> None:
    saved = Image.MAX_IMAGE_PIXELS
    with ThreadPoolExecutor(max_workers=8) as pool:
        shapes = set(pool.map(lambda _: load_image(grabcut_jpg).shape, range(32)))
    assert len(shapes) == 1
    assert saved == Image.MAX_IMAGE_PIXELS
