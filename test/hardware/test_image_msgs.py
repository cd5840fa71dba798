"""image_to_rgb against OpenCV's own conversions, for every supported encoding, padded rows included."""
from __future__ import annotations

import array
import types

import cv2
import numpy as np
import pytest

from gemma3nvla_ros.hardware.image_msgs import fill_compressed, fill_image, image_to_rgb

H, W = 37, 53  # odd sizes: a row of 3 * 53 = 159 bytes is not aligned to anything


def bgr_frame(seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (H, W, 3), dtype=np.uint8)


def raw_msg(pixels: np.ndarray, encoding: str, pad: int = 0, data_type=bytes):
    """A sensor_msgs/Image look-alike with ``pad`` junk bytes at the end of each row."""
    rows = pixels.reshape(pixels.shape[0], -1)
    junk = np.full((rows.shape[0], pad), 0xAB, dtype=np.uint8)
    data = np.concatenate([rows, junk], axis=1).tobytes()
    if data_type is array.array:
        data = array.array("B", data)
    elif data_type is list:
        data = list(data)
    return types.SimpleNamespace(height=pixels.shape[0], width=pixels.shape[1], encoding=encoding, is_bigendian=0,
                                 step=rows.shape[1] + pad, data=data)


def compressed_msg(data: bytes, fmt: str):
    return types.SimpleNamespace(format=fmt, data=array.array("B", data))


@pytest.mark.parametrize("pad", [0, 1, 13])
@pytest.mark.parametrize("data_type", [bytes, array.array, list])
def test_raw_encodings_equal_opencv(pad, data_type):
    bgr = bgr_frame()
    expected = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
    for encoding, pixels in (("bgr8", bgr), ("rgb8", expected)):
        got = image_to_rgb(raw_msg(pixels, encoding, pad, data_type))
        assert got.dtype == np.uint8 and got.shape == (H, W, 3) and got.flags["C_CONTIGUOUS"] and got.flags["WRITEABLE"]
        np.testing.assert_array_equal(got, expected, err_msg=encoding)
    gray = cv2.cvtColor(bgr, cv2.COLOR_BGR2GRAY)
    got = image_to_rgb(raw_msg(gray, "mono8", pad, data_type))
    np.testing.assert_array_equal(got, cv2.cvtColor(gray, cv2.COLOR_GRAY2RGB))


def test_frame_does_not_alias_the_message_buffer():
    rgb = cv2.cvtColor(bgr_frame(), cv2.COLOR_BGR2RGB)
    msg = raw_msg(rgb, "rgb8", data_type=array.array)
    got = image_to_rgb(msg)
    msg.data[0] ^= 0xFF
    assert got[0, 0, 0] == rgb[0, 0, 0]


def test_roundtrip_with_fill_image():
    bgr = bgr_frame(3)
    for encoding, frame in (("rgb8", cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)), ("bgr8", bgr)):
        msg = types.SimpleNamespace(header=types.SimpleNamespace(stamp=None, frame_id=""))
        fill_image(msg, frame, encoding, stamp=None, frame_id="cam")
        np.testing.assert_array_equal(image_to_rgb(msg), cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))


@pytest.mark.parametrize("ext, fmt", [(".jpg", "rgb8; jpeg compressed bgr8"), (".png", "png"), (".jpg", "jpeg")])
def test_compressed_equals_opencv_decode(ext, fmt):
    bgr = bgr_frame(1)
    ok, buf = cv2.imencode(ext, bgr)
    assert ok
    got = image_to_rgb(compressed_msg(buf.tobytes(), fmt))
    expected = cv2.cvtColor(cv2.imdecode(buf, cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)
    np.testing.assert_array_equal(got, expected)
    if ext == ".png":  # lossless: exactly the frame
        np.testing.assert_array_equal(got, cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))


def test_compressed_gray_becomes_three_channels():
    gray = cv2.cvtColor(bgr_frame(2), cv2.COLOR_BGR2GRAY)
    ok, buf = cv2.imencode(".png", gray)
    got = image_to_rgb(compressed_msg(buf.tobytes(), "mono8; png compressed mono8"))
    np.testing.assert_array_equal(got, cv2.cvtColor(gray, cv2.COLOR_GRAY2RGB))


def test_fill_compressed_roundtrip():
    bgr = bgr_frame(4)
    ok, buf = cv2.imencode(".png", bgr)
    msg = types.SimpleNamespace(header=types.SimpleNamespace(stamp=None, frame_id=""))
    fill_compressed(msg, buf.tobytes(), "bgr8", stamp=None, frame_id="cam")
    np.testing.assert_array_equal(image_to_rgb(msg), cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))


@pytest.mark.parametrize("encoding", ["rgba8", "16UC1", "bayer_rggb8", "yuv422"])
def test_other_encodings_are_refused(encoding):
    msg = raw_msg(bgr_frame(), "bgr8")
    msg.encoding = encoding
    with pytest.raises(ValueError, match=rf"encoding '{encoding}' is not supported; publish one of \['rgb8', 'bgr8', 'mono8'\]"):
        image_to_rgb(msg)


def test_inconsistent_sizes_are_refused():
    msg = raw_msg(bgr_frame(), "bgr8", pad=2)
    msg.data = msg.data[:-1]
    with pytest.raises(ValueError, match=rf"bgr8 image {W}x{H} with step {3 * W + 2} needs {(3 * W + 2) * H} bytes, message has"):
        image_to_rgb(msg)
    msg = raw_msg(bgr_frame(), "rgb8")
    msg.step = 3 * W - 1
    with pytest.raises(ValueError, match="step .* is less than width"):
        image_to_rgb(msg)
    msg = raw_msg(bgr_frame(), "mono8")  # 3 bytes per pixel of data declared as 1: size mismatch
    msg.step = W
    with pytest.raises(ValueError, match="needs"):
        image_to_rgb(msg)


def test_bad_compressed_data_is_refused():
    with pytest.raises(ValueError, match="could not be decoded"):
        image_to_rgb(compressed_msg(b"not a jpeg at all", "jpeg"))
    with pytest.raises(ValueError, match="has no data"):
        image_to_rgb(compressed_msg(b"", "jpeg"))
    with pytest.raises(ValueError, match="depth image"):
        image_to_rgb(compressed_msg(b"\x00" * 16, "16UC1; compressedDepth png"))
