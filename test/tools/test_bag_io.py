"""tools/bag_io: bags written with rosbags in both storages and metadata versions 8 and 9 (Jazzy) and 5 (Humble's
layout), read back message for message; every kind of bad bag is a BagError that says what the bag holds."""
from __future__ import annotations

import sqlite3

import numpy as np
import pytest

from gemma3nvla_ros.hardware.image_msgs import image_to_rgb
from gemma3nvla_ros.tools.bag_io import Bag, BagError, stamp_ns
from helpers_bags import T0_NS, BagBuilder, frame, ramp, synthetic_bag

KINDS = [("mcap", 9, "jazzy"), ("mcap", 8, "jazzy"), ("sqlite3", 9, "jazzy"), ("sqlite3", 8, "jazzy"),
         ("sqlite3", 8, "humble"), ("mcap", 8, "humble")]
PERIOD = int(1e9 / 30)


@pytest.mark.parametrize("storage,version,distro", KINDS)
def test_reads_back_what_was_written(tmp_path, storage, version, distro):
    compressed = storage == "sqlite3" and version == 8
    path = synthetic_bag(tmp_path / "bag", storage=storage, version=version, distro=distro, duration=0.5,
                         compressed=compressed, task="pick it")
    with Bag(path) as bag:
        assert bag.storage == storage
        assert bag.version == (5 if distro == "humble" else version)
        assert bag.ros_distro == (None if distro == "humble" else distro)
        suffix = "/compressed" if compressed else ""
        camera = f"/cameras/top/image_raw{suffix}"
        assert bag.topics[camera].count == 16 and bag.topics["/joint_states"].count == 16
        assert bag.topics[camera].msgtype.endswith("CompressedImage" if compressed else "/Image")
        assert bag.start_ns == T0_NS and bag.end_ns == T0_NS + 15 * PERIOD
        assert bag.topics[camera].qos[0].reliability.name == "BEST_EFFORT"  # as recorded
        text = bag.describe()
        for topic in bag.topics:
            assert topic in text
        times, states = [], []
        for m in bag.messages(["/joint_states", camera, "/gemma3nvla_policy/task"]):
            times.append(m.time_ns)
            if m.topic == "/joint_states":
                assert stamp_ns(m.msg) == m.time_ns
                states.append(m.msg.position.copy())
            elif m.topic == camera:
                i = (m.time_ns - T0_NS) // PERIOD
                rgb = image_to_rgb(m.msg)
                assert rgb.shape == (24, 32, 3)
                if not compressed:
                    np.testing.assert_array_equal(rgb, frame(i, (24, 32)))
                else:  # JPEG: close, not equal
                    assert np.abs(rgb.astype(int) - frame(i, (24, 32))).mean() < 4
            else:
                assert m.msg.data == "pick it"
        assert times == sorted(times)
        np.testing.assert_allclose(states[3], ramp(3 * PERIOD / 1e9))


def test_time_window_and_single_storage_files(tmp_path):
    path = synthetic_bag(tmp_path / "bag", storage="sqlite3", duration=1.0)
    with Bag(path) as bag:
        got = [m.time_ns for m in bag.messages(["/joint_states"], start_ns=T0_NS + 10 * PERIOD,
                                               stop_ns=T0_NS + 20 * PERIOD)]
    assert got == [T0_NS + i * PERIOD for i in range(10, 20)]
    db3 = next(path.glob("*.db3"))
    with Bag(db3) as bag:  # a bare storage file
        assert bag.topics["/joint_states"].count == 31
    (path / "metadata.yaml").unlink()  # a recording killed before it wrote its metadata
    with Bag(path) as bag:
        assert "no metadata.yaml" in bag.describe() and bag.topics["/joint_states"].count == 31


def test_missing_topic_and_wrong_type_list_the_bag(tmp_path):
    path = synthetic_bag(tmp_path / "bag", duration=0.2)
    with Bag(path) as bag:
        with pytest.raises(BagError) as exc:
            bag.require("/nope", ("sensor_msgs/msg/Image",), "camera")
        assert "/nope is not in the bag" in str(exc.value)
        assert "/joint_states  " in str(exc.value) and "sensor_msgs/msg/JointState" in str(exc.value)
        with pytest.raises(BagError, match="has type sensor_msgs/msg/JointState, expected sensor_msgs/msg/Image"):
            bag.require("/joint_states", ("sensor_msgs/msg/Image",), "camera")
        with pytest.raises(BagError, match=r"\['/nope'\] are not in the bag"):
            list(bag.messages(["/nope"]))


@pytest.mark.parametrize("what", ["nothing", "empty dir", "not a bag file", "bad yaml", "missing storage"])
def test_not_a_bag(tmp_path, what):
    path = tmp_path / "bag"
    if what == "empty dir":
        path.mkdir()
    elif what == "not a bag file":
        path = tmp_path / "notes.txt"
        path.write_text("hello")
    elif what in ("bad yaml", "missing storage"):
        synthetic_bag(path, duration=0.2)
        if what == "bad yaml":
            (path / "metadata.yaml").write_text("rosbag2_bagfile_information: [unclosed\n")
        else:
            next(path.glob("*.mcap")).unlink()
    with pytest.raises(BagError) as exc:
        Bag(path)
    assert str(path) in str(exc.value)


@pytest.mark.parametrize("storage", ["mcap", "sqlite3"])
def test_truncated_bag(tmp_path, storage):
    path = synthetic_bag(tmp_path / "bag", storage=storage, duration=1.0)
    data = next(p for p in path.iterdir() if p.suffix in (".mcap", ".db3"))
    blob = data.read_bytes()
    data.write_bytes(blob[: len(blob) // 2])
    with pytest.raises(BagError) as exc:
        with Bag(path) as bag:
            for m in bag.messages():
                _ = m.msg
    assert str(path) in str(exc.value)
    assert "truncated" in str(exc.value) or "cannot be read" in str(exc.value)
    assert "/joint_states" in str(exc.value) and "/cameras/top/image_raw" in str(exc.value)  # what it holds


def test_corrupted_mcap_message(tmp_path):
    """A joint name whose CDR length prefix is garbage: found mid-way through the messages."""
    path = synthetic_bag(tmp_path / "bag", storage="mcap", duration=1.0)
    data = next(path.glob("*.mcap"))
    blob = bytearray(data.read_bytes())
    at = -1
    for _ in range(5):
        at = blob.index(b"shoulder_pan\x00", at + 1)
    blob[at - 4:at] = b"\xff\xff\xff\x7f"
    data.write_bytes(bytes(blob))
    with pytest.raises(BagError) as exc:
        with Bag(path) as bag:
            for m in bag.messages():
                _ = m.msg
    assert str(path) in str(exc.value) and "/joint_states" in str(exc.value)


def test_corrupted_sqlite_rows_and_messages(tmp_path):
    path = synthetic_bag(tmp_path / "bag", storage="sqlite3", duration=0.5)
    db3 = next(path.glob("*.db3"))
    with sqlite3.connect(db3) as db:  # a message cut short: it no longer deserializes
        db.execute("UPDATE messages SET data = substr(data, 1, 12) WHERE id = 5")
    with Bag(path) as bag:
        with pytest.raises(BagError) as exc:
            for m in bag.messages():
                _ = m.msg
    assert "is corrupted" in str(exc.value) and "/joint_states" in str(exc.value)


def test_custom_message_types_come_from_the_bag(tmp_path):
    """A type the typestore does not know is registered from the definition the bag carries (mcap)."""
    from rosbags.rosbag2 import StoragePlugin, Writer
    from rosbags.typesys import Stores, get_types_from_msg, get_typestore

    store = get_typestore(Stores.ROS2_JAZZY)
    store.register(get_types_from_msg("float64 grip\nstring note", "my_msgs/msg/Grip"))
    path = tmp_path / "bag"
    with Writer(path, version=9, storage_plugin=StoragePlugin.MCAP) as writer:
        conn = writer.add_connection("/grip", "my_msgs/msg/Grip", typestore=store)
        writer.write(conn, T0_NS, store.serialize_cdr(store.types["my_msgs/msg/Grip"](grip=0.5, note="x"),
                                                      "my_msgs/msg/Grip"))
    with Bag(path) as bag:
        (m,) = list(bag.messages())
        assert m.msg.grip == 0.5 and m.msg.note == "x"


def test_builder_keeps_header_stamps_apart_from_log_time(tmp_path):
    b = BagBuilder()
    b.joint_state("/joint_states", T0_NS + 5, [0.0] * 6, stamp_ns=T0_NS - 1_000)
    with Bag(b.write(tmp_path / "bag")) as bag:
        (m,) = list(bag.messages())
        assert m.time_ns == T0_NS + 5 and stamp_ns(m.msg) == T0_NS - 1_000
