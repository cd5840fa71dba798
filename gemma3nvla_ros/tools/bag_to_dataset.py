"""``gemma3nvla-ros bag-to-dataset BAG... -o DIR``: rosbag2 recordings -> a LeRobotDataset (v3.0).

For bags recorded with this stack (``so101_teleop``: leader -> bridge, cameras) or any bag with the mapped
topics (mcap or sqlite3, read with rosbags; no ROS needed):

* ``observation.state`` from ``/joint_states`` and ``action`` from ``/joint_commands`` (what the teleop
  leader, or any commander, sent), both ROS radians -> the dataset units of ``config/so101_contract.yaml``
  (or ``--units``: degrees or range_m100_100 for joints 1-5, 0..100 for the gripper) through
  ``Contract.dataset_units`` with the follower's calibration. Feature names ``<joint>.pos`` as LeRobot's
  SO-101 datasets.
* One image feature per contract camera (``observation.images.<name>`` <- its topic; a bag holding only
  ``<topic>/compressed`` is read from that), as video (LeRobot's encoder, ``--vcodec``) or, with
  ``--no-video``, as PNG image features.
* Resampled to the contract's fps (or ``--fps``) and split into episodes by ``control.resample``: frames
  take the latest sample at or before them (state, images: nearest previous; action: zero-order hold);
  an episode ends where any required stream pauses longer than ``--episode-gap``; ``--episode-duration``
  cuts long ones; every bag starts new episodes.
* The task: ``--task``, else the recorded ``std_msgs/String`` topics named ``.../task`` (``/so101_leader/task``
  from the teleop graph, ``/gemma3nvla_policy/task``), the latest one at or before each frame.

Stamps: ``header.stamp`` of each message (sensor time: the bridge stamps at servo read, the cameras at
capture, the leader at its read), or the bag's reception time where the stamp is zero or with
``--time-source receive`` (for recordings whose machines' clocks disagree).

The bag is read in two passes so that memory stays small whatever its length: first every stamp (image
stamps are read from the serialized header without decoding the image) and every joint message, then the
images again, decoding only those a frame uses.
"""
from __future__ import annotations

import argparse
import shutil
import struct
import sys
import time
from collections import defaultdict
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from gemma3nvla_ros.control import resample

IMAGE_TYPES = ("sensor_msgs/msg/Image", "sensor_msgs/msg/CompressedImage")
STRING_TYPE = "std_msgs/msg/String"
JOINT_STATE_TYPE = "sensor_msgs/msg/JointState"
DEFAULT_ROBOT_TYPE = "so101_follower"


class ConversionError(RuntimeError):
    """The bags or options cannot give a dataset; the message says why and what to do. Exit status 2."""


@dataclass(frozen=True)
class Spec:
    """What to take from a bag, and how to resample it."""

    joints: tuple[str, ...]
    state_topic: str
    action_topic: str
    cameras: Mapping[str, str]  # dataset key -> topic
    fps: float
    episode_gap_s: float = 1.0
    episode_duration_s: float = 0.0
    min_episode_s: float = 1.0
    time_source: str = "header"  # or "receive"
    task: str = ""
    task_topics: tuple[str, ...] = ()  # empty: every std_msgs/String topic named .../task


@dataclass
class Frame:
    state: np.ndarray  # (J,) ROS radians
    action: np.ndarray  # (J,) ROS radians
    images: dict[str, np.ndarray]  # key -> HxWx3 uint8 RGB
    task: str


@dataclass
class Plan:
    """Everything pass 1 decided for one bag."""

    bag: Path
    windows: list[resample.Window]
    times: list[np.ndarray]  # per episode, frame times (ns)
    state: list[np.ndarray]  # per episode (N, J) radians
    action: list[np.ndarray]
    tasks: list[list[str]]
    image_ordinals: dict[str, list[np.ndarray]]  # camera key -> per episode (N,) message ordinal on its topic
    camera_topics: dict[str, str]  # key -> topic actually read (maybe .../compressed)
    image_shapes: dict[str, tuple[int, int, int]]
    dropped: list[tuple[float, float]] = field(default_factory=list)  # windows too short (start, length) s

    @property
    def n_frames(self) -> int:
        return sum(len(t) for t in self.times)


# --- reading ----------------------------------------------------------------------------------------------

_MALLOC_TUNED = False


def tune_malloc_for_large_messages() -> None:
    """Keep megabyte-sized message buffers on the heap (glibc only; once per process).

    rosbags copies every message of a chunk into a fresh bytes object. With glibc's default, each
    allocation above its (dynamic) mmap threshold is a fresh mmap, page-faulted in and unmapped again, which
    made reading a bag of 640x480 images 3-7x slower than the copying itself (measured:
    ``benchmarks/bench_bag_read.py``). A fixed 16 MiB threshold and a 256 MiB trim threshold reuse the
    memory instead; the process keeps at most that much freed memory. Harmless elsewhere.
    """
    global _MALLOC_TUNED
    if _MALLOC_TUNED:
        return
    _MALLOC_TUNED = True
    try:
        import ctypes
        import ctypes.util

        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        m_trim_threshold, m_mmap_threshold = -1, -3
        libc.mallopt(m_mmap_threshold, 16 << 20)
        libc.mallopt(m_trim_threshold, 256 << 20)
    except (OSError, AttributeError):
        pass  # not glibc: nothing to tune


def _open(bag: Path):
    from rosbags.highlevel import AnyReader
    from rosbags.typesys import Stores, get_typestore

    if not (bag / "metadata.yaml").is_file() and not bag.is_file():
        raise ConversionError(f"{bag} is not a rosbag2 directory (no metadata.yaml)")
    tune_malloc_for_large_messages()
    return AnyReader([bag], default_typestore=get_typestore(Stores.ROS2_JAZZY))


def header_stamp_ns(raw: bytes | memoryview) -> int:
    """``header.stamp`` of a serialized message whose first field is a std_msgs/Header, without decoding
    the rest (a 640x480 image is not copied to learn its time)."""
    little = raw[1] == 1
    sec, nsec = struct.unpack_from("<iI" if little else ">iI", raw, 4)
    return sec * 1_000_000_000 + nsec


def _stamp(header_ns: int, log_ns: int, time_source: str) -> int:
    return log_ns if time_source == "receive" or header_ns <= 0 else header_ns


def _topics(reader) -> dict[str, list[Any]]:
    out: dict[str, list[Any]] = defaultdict(list)
    for c in reader.connections:
        out[c.topic].append(c)
    return out


def _resolve_cameras(spec: Spec, topics: Mapping[str, list[Any]], bag: Path) -> dict[str, str]:
    chosen = {}
    for key, topic in spec.cameras.items():
        for candidate in (topic, topic.rstrip("/") + "/compressed"):
            conns = topics.get(candidate, [])
            if conns and all(c.msgtype in IMAGE_TYPES for c in conns):
                chosen[key] = candidate
                break
        else:
            images = sorted(t for t, cs in topics.items() if cs[0].msgtype in IMAGE_TYPES)
            raise ConversionError(
                f"{bag}: no images on {topic} (camera {key}); image topics in the bag: {images or 'none'}. "
                f"Map another topic with --camera {key}=TOPIC, or leave the camera out with --skip-camera {key}.")
    return chosen


def _need_topic(topics: Mapping[str, list[Any]], topic: str, what: str, option: str, bag: Path) -> None:
    conns = topics.get(topic)
    if not conns:
        joint_topics = sorted(t for t, cs in topics.items() if cs[0].msgtype == JOINT_STATE_TYPE)
        raise ConversionError(f"{bag}: no {what} on {topic}; JointState topics in the bag: {joint_topics or 'none'} "
                              f"(choose one with {option})")
    if any(c.msgtype != JOINT_STATE_TYPE for c in conns):
        raise ConversionError(f"{bag}: {topic} is {conns[0].msgtype}, expected {JOINT_STATE_TYPE}")


def plan_bag(bag: Path, spec: Spec) -> Plan:
    """Pass 1: stamps, joint values and tasks; episode windows; which sample every frame takes."""
    from gemma3nvla_ros.hardware.image_msgs import image_to_rgb

    bag = Path(bag)
    with _open(bag) as reader:
        topics = _topics(reader)
        _need_topic(topics, spec.state_topic, "joint states", "--state-topic", bag)
        _need_topic(topics, spec.action_topic, "joint commands", "--action-topic", bag)
        cameras = _resolve_cameras(spec, topics, bag)
        task_topics = list(spec.task_topics) or sorted(
            t for t, cs in topics.items() if t.endswith("/task") and cs[0].msgtype == STRING_TYPE)
        joints = {spec.state_topic: ([], [], []), spec.action_topic: ([], [], [])}  # stamps, names, positions
        image_stamps: dict[str, list[int]] = {key: [] for key in cameras}
        shapes: dict[str, tuple[int, int, int]] = {}
        key_of_topic = {topic: key for key, topic in cameras.items()}
        tasks: list[tuple[int, str]] = []
        wanted = [c for t in (*joints, *key_of_topic, *task_topics) for c in topics.get(t, [])]
        for conn, log_ns, raw in reader.messages(connections=wanted):
            topic = conn.topic
            if topic in key_of_topic:
                key = key_of_topic[topic]
                image_stamps[key].append(_stamp(header_stamp_ns(raw), log_ns, spec.time_source))
                if key not in shapes:
                    shapes[key] = image_to_rgb(reader.deserialize(raw, conn.msgtype)).shape
            elif topic in joints:
                msg = reader.deserialize(raw, conn.msgtype)
                stamp = msg.header.stamp.sec * 1_000_000_000 + msg.header.stamp.nanosec
                stamps, names, positions = joints[topic]
                stamps.append(_stamp(stamp, log_ns, spec.time_source))
                names.append(list(msg.name))
                positions.append(np.asarray(msg.position, dtype=np.float64))
            else:
                tasks.append((log_ns, reader.deserialize(raw, conn.msgtype).data))
    return _plan(bag, spec, joints, image_stamps, shapes, cameras, tasks, task_topics)


def _plan(bag, spec, joints, image_stamps, shapes, cameras, tasks, task_topics) -> Plan:
    gap = int(spec.episode_gap_s * 1e9)
    streams = {spec.state_topic: np.asarray(joints[spec.state_topic][0], dtype=np.int64),
               spec.action_topic: np.asarray(joints[spec.action_topic][0], dtype=np.int64)}
    streams.update({f"camera {k}": np.asarray(v, dtype=np.int64) for k, v in image_stamps.items()})
    for name, stamps in streams.items():
        if stamps.size == 0:
            raise ConversionError(f"{bag}: {name} has no messages")
    all_windows = resample.episode_windows(streams, gap, max_len_ns=int(spec.episode_duration_s * 1e9))
    min_len = int(spec.min_episode_s * 1e9)
    windows = [w for w in all_windows if w[1] - w[0] >= min_len]
    dropped = [((w[0] - all_windows[0][0]) / 1e9, (w[1] - w[0]) / 1e9) for w in all_windows if w[1] - w[0] < min_len]

    state_stamps, state_vals = _sorted_joint_values(joints[spec.state_topic], spec.joints)
    action_stamps, action_vals = _sorted_joint_values(joints[spec.action_topic], spec.joints)
    missing = [j for j, col in zip(spec.joints, state_vals.T) if np.isnan(col).all()]
    if missing:
        raise ConversionError(f"{bag}: {spec.state_topic} never reports joints {missing} "
                              f"(it names {sorted(set(sum(joints[spec.state_topic][1], [])))})")
    task_stamps = np.asarray([t for t, _ in sorted(tasks, key=lambda x: x[0])], dtype=np.int64)
    task_texts = [s for _, s in sorted(tasks, key=lambda x: x[0])]
    if not spec.task and not task_texts:
        raise ConversionError(
            f"{bag}: no task: give --task \"...\" (the instruction demonstrated), or record a std_msgs/String "
            f"task topic (so101_leader publishes its `task` parameter on /so101_leader/task); "
            f"task topics looked at: {task_topics or 'none'}")

    image_order = {}
    for key, stamps in image_stamps.items():
        s = np.asarray(stamps, dtype=np.int64)
        order = np.argsort(s, kind="stable")
        image_order[key] = (s[order], order)

    plan = Plan(bag, windows, [], [], [], [], {k: [] for k in cameras}, dict(cameras), dict(shapes), dropped)
    for window in windows:
        times = resample.frame_times(window, spec.fps)
        state = resample.sample_held(state_stamps, state_vals, times)
        action = resample.sample_held(action_stamps, action_vals, times, fallback=state)
        plan.times.append(times)
        plan.state.append(state)
        plan.action.append(action)
        if spec.task:
            plan.tasks.append([spec.task] * len(times))
        else:
            idx = np.maximum(resample.previous_index(task_stamps, times), 0)
            plan.tasks.append([task_texts[i] for i in idx])
        for key, (sorted_stamps, order) in image_order.items():
            plan.image_ordinals[key].append(order[resample.previous_index(sorted_stamps, times)])
    return plan


def _sorted_joint_values(data, joint_names) -> tuple[np.ndarray, np.ndarray]:
    stamps, names, positions = data
    s = np.asarray(stamps, dtype=np.int64)
    order = np.argsort(s, kind="stable")
    values = resample.joint_matrix([names[i] for i in order], [positions[i] for i in order], joint_names)
    return s[order], values


def iter_frames(plan: Plan) -> Iterator[tuple[int, Frame]]:
    """Pass 2: (episode index within the bag, frame) in time order; decodes only the images frames use,
    and each of those once, however many frames repeat it."""
    from gemma3nvla_ros.hardware.image_msgs import image_to_rgb

    flat: list[tuple[int, int]] = [(e, i) for e, t in enumerate(plan.times) for i in range(len(t))]
    if not flat:
        return
    keys = list(plan.camera_topics)
    ordinals = {k: np.concatenate(plan.image_ordinals[k]) for k in keys}
    remaining = {k: defaultdict(int) for k in keys}  # ordinal -> frames still to emit with it
    for k in keys:
        for o in ordinals[k]:
            remaining[k][int(o)] += 1
    decoded: dict[str, dict[int, np.ndarray]] = {k: {} for k in keys}
    key_of_topic = {t: k for k, t in plan.camera_topics.items()}
    counters = {k: 0 for k in keys}
    nxt = 0

    def ready(n: int) -> bool:
        return all(int(ordinals[k][n]) in decoded[k] for k in keys)

    def emit(n: int) -> Frame:
        e, i = flat[n]
        images = {}
        for k in keys:
            o = int(ordinals[k][n])
            images[k] = decoded[k][o]
            remaining[k][o] -= 1
            if remaining[k][o] == 0:
                del decoded[k][o]
        return Frame(plan.state[e][i], plan.action[e][i], images, plan.tasks[e][i])

    if not keys:
        for n, (e, _) in enumerate(flat):
            yield e, emit(n)
        return
    with _open(plan.bag) as reader:
        conns = [c for c in reader.connections if c.topic in key_of_topic]
        for conn, _log_ns, raw in reader.messages(connections=conns):
            k = key_of_topic[conn.topic]
            ordinal = counters[k]
            counters[k] += 1
            if remaining[k].get(ordinal, 0) <= 0:
                continue
            rgb = image_to_rgb(reader.deserialize(raw, conn.msgtype))
            if rgb.shape != plan.image_shapes[k]:
                raise ConversionError(f"{plan.bag}: camera {k} changed size from {plan.image_shapes[k]} to "
                                      f"{rgb.shape} during the recording; convert the parts separately")
            decoded[k][ordinal] = rgb
            while nxt < len(flat) and ready(nxt):
                yield flat[nxt][0], emit(nxt)
                nxt += 1
    if nxt < len(flat):
        raise ConversionError(f"{plan.bag}: {len(flat) - nxt} frames lack an image (bag changed while reading?)")


# --- writing ----------------------------------------------------------------------------------------------

def dataset_features(joints: Sequence[str], image_shapes: Mapping[str, tuple[int, int, int]], video: bool) -> dict:
    names = [f"{j}.pos" for j in joints]
    feats = {
        "observation.state": {"dtype": "float32", "shape": (len(joints),), "names": names},
        "action": {"dtype": "float32", "shape": (len(joints),), "names": names},
    }
    for key, shape in image_shapes.items():
        feats[key] = {"dtype": "video" if video else "image", "shape": tuple(shape),
                      "names": ["height", "width", "channels"]}
    return feats


@dataclass
class Result:
    root: Path
    episodes: int
    frames: int
    seconds: float
    read_seconds: float


def convert(
    bags: Sequence[Path], output: Path, spec: Spec, units, *, repo_id: str | None = None, video: bool = True,
    vcodec: str = "libsvtav1", robot_type: str = DEFAULT_ROBOT_TYPE, image_writer_threads: int = 4,
    log=print,
) -> Result:
    """Every bag -> episodes of one new LeRobotDataset at ``output`` (removed again if conversion fails).
    ``units`` is the ``DatasetUnits`` for ``spec.joints`` (``Contract.dataset_units``)."""
    output = Path(output)
    if output.exists():
        raise ConversionError(f"{output} exists already; choose a new -o directory")
    t0 = time.perf_counter()
    plans = []
    for bag in bags:
        plan = plan_bag(Path(bag), spec)
        log(f"[bag-to-dataset] {bag}: {len(plan.windows)} episode(s), {plan.n_frames} frames at {spec.fps:g} fps"
            + "".join(f"\n    episode of {len(t) / spec.fps:.1f} s" for t in plan.times)
            + "".join(f"\n    skipped {d:.2f} s at +{s:.1f} s (shorter than --min-episode {spec.min_episode_s:g} s)"
                      for s, d in plan.dropped))
        plans.append(plan)
    if not any(p.n_frames for p in plans):
        raise ConversionError("no episode found: every stream must run together for at least --min-episode "
                              f"{spec.min_episode_s:g} s without a pause longer than --episode-gap {spec.episode_gap_s:g} s")
    shapes = plans[0].image_shapes
    for p in plans[1:]:
        if p.image_shapes != shapes:
            raise ConversionError(f"image sizes differ between bags: {plans[0].bag} {shapes}, {p.bag} {p.image_shapes}")

    import datasets
    from lerobot.datasets.lerobot_dataset import LeRobotDataset

    from gemma3nvla_ros.compat import dataset_video_kwargs

    datasets.disable_progress_bars()  # one "Map" bar per episode says nothing here
    ds = LeRobotDataset.create(
        repo_id=repo_id or f"local/{output.name}", fps=int(round(spec.fps)), root=output, robot_type=robot_type,
        features=dataset_features(spec.joints, shapes, video), use_videos=video, **dataset_video_kwargs(vcodec),
        image_writer_threads=image_writer_threads if shapes else 0,
    )
    read_s = 0.0
    episodes = frames = 0
    try:
        for plan in plans:
            current = None
            it = iter_frames(plan)
            while True:
                t_read = time.perf_counter()
                item = next(it, None)
                read_s += time.perf_counter() - t_read
                if item is None:
                    break
                e, frame = item
                if current is not None and e != current:
                    ds.save_episode()
                    episodes += 1
                current = e
                ds.add_frame(_dataset_frame(frame, units))
                frames += 1
            if current is not None:
                ds.save_episode()
                episodes += 1
        ds.finalize()
    except BaseException:
        shutil.rmtree(output, ignore_errors=True)
        raise
    return Result(output, episodes, frames, time.perf_counter() - t0, read_s)


def _dataset_frame(frame: Frame, units) -> dict:
    out = {
        "observation.state": units.ros_to_dataset(frame.state).astype(np.float32),
        "action": units.ros_to_dataset(frame.action).astype(np.float32),
        "task": frame.task,
    }
    out.update(frame.images)
    return out


# --- command line -----------------------------------------------------------------------------------------

def build_parser(prog: str = "gemma3nvla-ros bag-to-dataset") -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=prog, description="Convert rosbag2 recordings into a LeRobotDataset (v3.0).")
    p.add_argument("bags", nargs="+", type=Path, help="bag directories (each starts new episodes)")
    p.add_argument("-o", "--output", type=Path, required=True, help="dataset root to create (must not exist)")
    p.add_argument("--repo-id", help="dataset repo id (default local/<output dir name>)")
    p.add_argument("--task", default="", help="the instruction for every frame (default: the recorded .../task topic)")
    p.add_argument("--task-topic", action="append", default=[], help="std_msgs/String task topic(s) to read "
                   "(default: every String topic whose name ends in /task)")
    p.add_argument("--robot-id", default="", help="the follower's LeRobot calibration id (robots/so_follower/<id>.json)")
    p.add_argument("--calibration-file", default="", help="the follower's calibration JSON (overrides --robot-id)")
    p.add_argument("--contract", type=Path, help="contract YAML (default: config/so101_contract.yaml)")
    p.add_argument("--units", choices=("degrees", "range_m100_100"), help="dataset units of joints 1-5 "
                   "(default: the contract's); the gripper is always 0..100")
    p.add_argument("--fps", type=float, help="dataset rate (default: the contract's fps)")
    p.add_argument("--state-topic", help="JointState topic of observation.state (default: the contract's /joint_states)")
    p.add_argument("--action-topic", default="/joint_commands", help="JointState topic of action (default /joint_commands)")
    p.add_argument("--camera", action="append", default=[], metavar="KEY=TOPIC",
                   help="image topic of a camera (KEY: observation.images.<name> or <name>); default: the contract's")
    p.add_argument("--skip-camera", action="append", default=[], metavar="KEY", help="leave a contract camera out")
    p.add_argument("--episode-gap", type=float, default=1.0,
                   help="s: a pause of any stream longer than this ends an episode (default 1.0)")
    p.add_argument("--episode-duration", type=float, default=0.0, help="s: cut episodes longer than this (0: never)")
    p.add_argument("--min-episode", type=float, default=1.0, help="s: drop episodes shorter than this (default 1.0)")
    p.add_argument("--time-source", choices=("header", "receive"), default="header",
                   help="header: message stamps (default); receive: the bag's reception times")
    p.add_argument("--no-video", action="store_true", help="store images as PNG image features instead of video")
    p.add_argument("--vcodec", default="libsvtav1", choices=("libsvtav1", "h264", "hevc"),
                   help="video codec (LeRobot's default libsvtav1)")
    p.add_argument("--image-writer-threads", type=int, default=4, help="threads writing frames to disk (default 4)")
    p.add_argument("--robot-type", default=DEFAULT_ROBOT_TYPE, help=f"robot_type in the metadata (default {DEFAULT_ROBOT_TYPE})")
    return p


def spec_and_units(args: argparse.Namespace):
    """(Spec, DatasetUnits) from the command line and the contract; ConversionError says what is missing."""
    from gemma3nvla_ros.contract import IMAGE_PREFIX, Contract, ContractError, default_contract_path
    from gemma3nvla_ros.hardware.calibration import (
        CalibrationError,
        load_calibration,
        resolve_calibration_path,
    )

    try:
        contract = Contract.load(args.contract or default_contract_path())
        if args.units:
            contract = Contract.from_dict({**contract.to_dict(), "units": args.units}, source=contract.source)
    except ContractError as exc:
        raise ConversionError(str(exc)) from None
    cameras = dict(contract.cameras)
    for item in args.camera:
        key, sep, topic = item.partition("=")
        if not sep or not topic:
            raise ConversionError(f"--camera {item!r}: expected KEY=TOPIC")
        cameras[key if key.startswith(IMAGE_PREFIX) else IMAGE_PREFIX + key] = topic
    for key in args.skip_camera:
        cameras.pop(key if key.startswith(IMAGE_PREFIX) else IMAGE_PREFIX + key, None)
    if not (args.robot_id or args.calibration_file):
        raise ConversionError(
            "the follower's calibration is needed to convert radians into dataset units: give --robot-id (the "
            "follower's LeRobot id) or --calibration-file (for the simulated arm: "
            "config/calibration/so101_follower_example.json)")
    try:
        calibration = load_calibration(resolve_calibration_path(args.robot_id, args.calibration_file))
        units = contract.dataset_units(calibration)
    except (CalibrationError, ContractError) as exc:
        raise ConversionError(str(exc)) from None
    spec = Spec(
        joints=tuple(contract.joints), state_topic=args.state_topic or contract.joint_states_topic,
        action_topic=args.action_topic, cameras=cameras, fps=float(args.fps or contract.fps),
        episode_gap_s=args.episode_gap, episode_duration_s=args.episode_duration, min_episode_s=args.min_episode,
        time_source=args.time_source, task=args.task, task_topics=tuple(args.task_topic),
    )
    if spec.fps <= 0 or spec.fps != round(spec.fps):
        raise ConversionError(f"--fps must be a positive whole number (LeRobot datasets), not {spec.fps:g}")
    return spec, units


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        spec, units = spec_and_units(args)
        result = convert(
            args.bags, args.output, spec, units, repo_id=args.repo_id, video=not args.no_video, vcodec=args.vcodec,
            robot_type=args.robot_type, image_writer_threads=args.image_writer_threads,
            log=lambda line: print(line, file=sys.stderr, flush=True))
    except ConversionError as exc:
        print(f"gemma3nvla-ros bag-to-dataset: {exc}", file=sys.stderr)
        return 2
    print(f"[bag-to-dataset] wrote {result.root}: {result.episodes} episode(s), {result.frames} frames at "
          f"{spec.fps:g} fps, {units.mode.value} (gripper 0..100), "
          f"{'video' if not args.no_video else 'image'} features {list(spec.cameras)}; {result.seconds:.1f} s "
          f"({result.frames / max(result.seconds, 1e-9):.0f} frames/s, reading {result.read_seconds:.1f} s)",
          file=sys.stderr)
    print(f"  load it:   LeRobotDataset('{args.repo_id or 'local/' + args.output.name}', root='{result.root}')\n"
          f"  train:     lerobot-train --policy.type=gemma3nvla --dataset.repo_id="
          f"{args.repo_id or 'local/' + args.output.name} --dataset.root={result.root} ...", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
