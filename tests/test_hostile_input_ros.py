"""Hostile input on a real ROS 2 graph: the node binary against an rclpy peer that sends the whole
catalogue of malformed, absurd and oversized messages (issue "Reliability, measured", part "Hostile
input"), interleaved with valid input.

For every hostile message, the node must stay up (process running, ~/status and /diagnostics keep
coming), refuse it and count it under its rejection kind (``rejected.<kind>`` on /diagnostics; the
PolicyStatus totals follow), and go on driving on the valid messages in between: every chunk it
publishes while the catalogue runs is the test bundle's exact answer to the valid input
(``wam_peer.expected``), and no command (trajectory point or hold) ever leaves the joint limits.

The catalogue runs in rounds: at most one hostile case per stream (the cameras, the joint states,
the instruction) at a time, each hostile message followed by a valid one on the same stream. Before
and after a round the test reads the rejection counts from /diagnostics, so each case is checked for
the exact kinds it was refused as (the kinds of the three streams have distinct prefixes), and a
case that must be accepted (an 8-bit image with the big-endian flag, an instruction of exactly
max_instruction_bytes) for being refused as nothing.

Needs the environment of scripts/env.sh and a built node (WAM_NODE_BIN, default
target/release/wam_policy_node); the peer and the helpers are those of test_node_ros.
"""

from __future__ import annotations

import itertools
import math
import struct
import threading
import time
import zlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Union

import pytest

rclpy = pytest.importorskip("rclpy", reason="needs rclpy: source scripts/env.sh")
pytest.importorskip("wam_policy.msg", reason="needs the package's messages: source scripts/env.sh")

from builtin_interfaces.msg import Time  # noqa: E402
from diagnostic_msgs.msg import DiagnosticArray  # noqa: E402
from rclpy.qos import QoSProfile  # noqa: E402
from sensor_msgs.msg import CompressedImage, Image, JointState  # noqa: E402
from std_msgs.msg import String  # noqa: E402
from trajectory_msgs.msg import JointTrajectory  # noqa: E402

from test_node_ros import (  # noqa: E402
    CAMERAS,
    CHUNK_TIMEOUT,
    INSTRUCTION,
    NODE_BIN,
    Q,
    TOL,
    _limits,
    ext_image,
    running,
    start_constant,
    wait_matching,
    wrist_image,
)
from wam_peer import (  # noqa: E402
    BUNDLE_JOINTS,
    Expected,
    NodeProcess,
    Peer,
    PeerTopics,
    Received,
    compressed_image,
    expected_for,
    joint_state,
    png_bytes,
    raw_image,
    stamp_seconds,
    time_of,
    trajectory_error,
    uniform_rgb,
)
from wam_peer.images import U8  # noqa: E402
from wam_policy.msg import PolicyStatus  # noqa: E402

pytestmark = pytest.mark.skipif(
    not NODE_BIN.exists(), reason=f"node binary {NODE_BIN} not built (cargo build --release)"
)

LIMIT = 2.9
MAX_VELOCITY = 10.0
LIMITS = _limits(
    **{
        "joint_limits.lower": [-LIMIT] * 7,
        "joint_limits.upper": [LIMIT] * 7,
        "joint_limits.max_velocity": [MAX_VELOCITY] * 7,
        "joint_limits.max_jump": 0.5,
    }
)
# Positions a hostile joint state carries where it could be taken for a measurement: if the node
# used one, its chunks would no longer match the expected ones.
OTHER_Q = (0.9,) * 7
GOOD_IMAGES: dict[str, U8] = {"exterior": ext_image(), "wrist": wrist_image()}

# Rates of the valid streams; a hostile stream sends twice as fast, every other message hostile.
CAMERA_HZ = 30.0
JOINT_HZ = 100.0
# A round sends hostile messages for at least this long (so that a case that must be accepted has
# been sent many times), and waits at most ROUND_TIMEOUT for every expected kind to be counted.
MIN_HOSTILE_S = 0.35
ROUND_TIMEOUT = 4.0
# After a round the valid streams run alone this long before the counts are read again.
SETTLE_S = 0.2
FUTURE_S = 3600.0
# Statuses come every 0.1 s; a gap this long means the node stalled.
MAX_STATUS_GAP_S = 1.0
# Chunks come about every 0.8 s on valid input.
MAX_CHUNK_GAP_S = 3.0
MAX_RSS_GROWTH = 150 * 1024 * 1024
MAX_FLOOD_LOG_GROWTH = 200_000
DEFAULT_MAX_INSTRUCTION_BYTES = 1024
MAX_COMPRESSED_BYTES = 200_000

PREFIX = {"cameras": "image_", "joints": "joint_state_", "instruction": "instruction_"}

CameraMsg = Union[Image, CompressedImage]
#: (index of the hostile message, stamp now) -> the hostile message, or None for a valid one.
HostileFrame = Callable[[int, Time], Union[CameraMsg, None]]
HostileJoints = Callable[[int, Time], Union[JointState, None]]


@dataclass(frozen=True)
class Case:
    """One entry of the catalogue.

    ``kinds``: exactly the rejection kinds the node must count for it (of its stream's prefix);
    empty: it must be accepted (nothing of its stream counted); None: it must be refused, as any
    kind of its stream."""

    name: str
    stream: str  # "cameras", "joints" or "instruction"
    kinds: frozenset[str] | None
    frame: Callable[[str], HostileFrame] | None = None  # camera name -> its hostile frames
    joints: HostileJoints | None = None
    texts: tuple[str, ...] = ()


def kinds(*names: str) -> frozenset[str]:
    return frozenset(names)


ACCEPTED: frozenset[str] = frozenset()


# -------------------------------------------------------------------------------------------------
# /diagnostics and process figures


class Diagnostics:
    """The node's /diagnostics values (status "wam_policy: policy"), with arrival times."""

    NAME = "wam_policy: policy"

    def __init__(self, peer: Peer) -> None:
        self.peer = peer
        self.lock = threading.Lock()
        self.items: list[Received[dict[str, str]]] = []
        peer.node.create_subscription(
            DiagnosticArray, "/diagnostics", self._on, QoSProfile(depth=100)
        )

    def _on(self, msg: DiagnosticArray) -> None:
        for status in msg.status:
            if status.name == self.NAME:
                values = {kv.key: kv.value for kv in status.values}
                with self.lock:
                    self.items.append(Received(values, time.monotonic()))

    def fresh(self, timeout: float = 3.0) -> dict[str, str]:
        """The values of the first message received from now on."""
        since = self.peer.mark()

        def find() -> dict[str, str] | None:
            with self.lock:
                hits = [r.msg for r in self.items if r.at >= since]
            return hits[0] if hits else None

        values = self.peer.wait_for(find, timeout)
        assert values is not None, f"no /diagnostics in {timeout} s"
        return values

    def latest(self) -> dict[str, str]:
        with self.lock:
            return dict(self.items[-1].msg) if self.items else {}


def rejections(values: Mapping[str, str]) -> dict[str, int]:
    """``rejected.<kind>`` values as {kind: count}."""
    out: dict[str, int] = {}
    for key, value in values.items():
        if key.startswith("rejected."):
            assert value.isdigit(), f"{key} = {value!r} is not a count"
            out[key[len("rejected.") :]] = int(value)
    return out


def deltas(before: Mapping[str, str], after: Mapping[str, str]) -> dict[str, int]:
    """Kinds whose count grew from ``before`` to ``after``, with the growth."""
    b, a = rejections(before), rejections(after)
    for kind, n in b.items():
        assert a.get(kind, 0) >= n, f"rejected.{kind} went down: {n} -> {a.get(kind)}"
    return {k: n - b.get(k, 0) for k, n in a.items() if n > b.get(k, 0)}


def proc_status_bytes(pid: int, field_name: str) -> int:
    """A kB figure of /proc/<pid>/status (VmRSS, VmHWM), in bytes."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(field_name + ":"):
                return int(line.split()[1]) * 1024
    raise AssertionError(f"no {field_name} in /proc/{pid}/status")


def reset_peak_rss(pid: int) -> bool:
    """Resets VmHWM to the current RSS (Linux clear_refs 5); False where that is not allowed."""
    try:
        with open(f"/proc/{pid}/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def max_gap(times: Sequence[float], start: float, end: float) -> float:
    """The longest time without an event in [start, end]."""
    points = [start] + sorted(t for t in times if start <= t <= end) + [end]
    return max(b - a for a, b in zip(points, points[1:]))


def commands_outside_limits(trajectories: Sequence[JointTrajectory]) -> list[tuple[int, float]]:
    """(index, position) of every commanded position outside [-LIMIT, LIMIT] (expected: none)."""
    out: list[tuple[int, float]] = []
    for i, t in enumerate(trajectories):
        for p in t.points:
            out += [
                (i, x) for x in p.positions if not (-LIMIT - 1e-12 <= x <= LIMIT + 1e-12)
            ]
    return out


# -------------------------------------------------------------------------------------------------
# The streams: valid messages, hostile ones interleaved


def valid_frames(topics: PeerTopics) -> dict[str, Callable[[Time], CameraMsg]]:
    """Per camera: its valid frame (the images the expected chunks are computed from), stamped."""
    out: dict[str, Callable[[Time], CameraMsg]] = {}
    for cam in CAMERAS:
        msg: CameraMsg
        if topics.compressed:
            msg = compressed_image(GOOD_IMAGES[cam], frame_id=cam)
        else:
            msg = raw_image(GOOD_IMAGES[cam], "rgb8", frame_id=cam)

        def make(now: Time, m: CameraMsg = msg) -> CameraMsg:
            m.header.stamp = now
            return m

        out[cam] = make
    return out


def valid_joints(now: Time) -> JointState:
    return joint_state(BUNDLE_JOINTS, Q, now)


T = Any


def interleaved(
    valid: Callable[[Time], T], hostile: Callable[[int, Time], T | None]
) -> Callable[[int, Time], T]:
    """A factory that alternates a valid message and a hostile one (None from ``hostile``: a valid
    one instead), with counters of its own."""
    calls = itertools.count()
    hostile_calls = itertools.count()

    def make(_index: int, now: Time) -> T:
        if next(calls) % 2 == 0:
            return valid(now)
        msg = hostile(next(hostile_calls), now)
        return valid(now) if msg is None else msg

    return make


@dataclass
class Graph:
    """The running node, its peer, and what the rounds found."""

    node: NodeProcess
    peer: Peer
    diagnostics: Diagnostics
    frames: dict[str, Callable[[Time], CameraMsg]]
    instruction_pub: Any
    counted: list[tuple[str, dict[str, int]]] = field(default_factory=list)

    def restore(self) -> None:
        """Valid input only, on every stream."""
        for cam, valid in self.frames.items():
            self.peer.set_camera(cam, lambda _i, now, v=valid: v(now), CAMERA_HZ)
        self.peer.set_joints(lambda _i, now: valid_joints(now), JOINT_HZ)

    def install(self, case: Case) -> None:
        if case.stream == "cameras":
            assert case.frame is not None
            for cam, valid in self.frames.items():
                self.peer.set_camera(cam, interleaved(valid, case.frame(cam)), 2 * CAMERA_HZ)
        elif case.stream == "joints":
            assert case.joints is not None
            self.peer.set_joints(interleaved(valid_joints, case.joints), 2 * JOINT_HZ)
        else:
            for text in case.texts:
                self.instruction_pub.publish(String(data=text))

    def run_round(self, cases: Sequence[Case]) -> None:
        """Sends ``cases`` (at most one per stream) interleaved with valid input and checks what
        the node counted for each."""
        assert len({c.stream for c in cases}) == len(cases)
        names = "; ".join(f"{c.stream}: {c.name}" for c in cases)
        before = self.diagnostics.fresh()
        t0 = self.peer.mark()
        for case in cases:
            self.install(case)

        def satisfied(case: Case, d: Mapping[str, int]) -> bool:
            got = {k for k in d if k.startswith(PREFIX[case.stream])}
            if case.kinds is None:
                return bool(got)
            return set(case.kinds) <= got

        def done() -> bool:
            if self.peer.mark() - t0 < MIN_HOSTILE_S:
                return False
            d = deltas(before, self.diagnostics.latest())
            return all(satisfied(c, d) for c in cases)

        self.peer.wait_for(done, ROUND_TIMEOUT)
        self.restore()
        time.sleep(SETTLE_S)
        assert self.node.running(), f"the node exited during [{names}]"
        after = self.diagnostics.fresh()
        d = deltas(before, after)
        self.counted.append((names, d))
        for case in cases:
            got = {k: n for k, n in d.items() if k.startswith(PREFIX[case.stream])}
            if case.kinds is None:
                assert got, f"{case.stream}: {case.name}: not refused (counted {d})"
            elif not case.kinds:
                assert not got, f"{case.stream}: {case.name}: must be accepted, refused as {got}"
            else:
                assert set(got) == set(case.kinds), (
                    f"{case.stream}: {case.name}: expected rejections {sorted(case.kinds)}, "
                    f"counted {got}"
                )
        explained = tuple(PREFIX[c.stream] for c in cases)
        stray = {k: n for k, n in d.items() if not k.startswith(explained)}
        assert not stray, f"rejections no case of [{names}] explains: {stray}"

    def run_catalogue(self, *streams: Sequence[Case]) -> None:
        """The cases of each stream in order, one of each stream per round."""
        for round_cases in itertools.zip_longest(*streams):
            self.run_round([c for c in round_cases if c is not None])


@dataclass
class Window:
    """What the node published between two marks."""

    start: float
    end: float


def check_window(peer: Peer, w: Window, exp: Expected, what: str) -> None:
    """In ``w``: every chunk is the expected one, chunks kept coming, and so did ~/status."""
    with peer.lock:
        chunk_times = [r.at for r in peer.chunks if w.start <= r.at <= w.end]
        status_times = [r.at for r in peer.statuses if w.start <= r.at <= w.end]
        chunks = [r.msg for r in peer.chunks if w.start <= r.at <= w.end]
    wrong = [
        (c.chunk_id, round(trajectory_error(c.trajectory, exp), 6))
        for c in chunks
        if trajectory_error(c.trajectory, exp) >= TOL
    ]
    assert not wrong, f"{what}: chunks that are not the expected answer: {wrong}"
    duration = w.end - w.start
    assert len(chunks) >= max(3, int(duration / 0.8 * 0.4)), (
        f"{what}: only {len(chunks)} chunks in {duration:.1f} s"
    )
    chunk_gap = max_gap(chunk_times, w.start, w.end)
    assert chunk_gap < MAX_CHUNK_GAP_S, f"{what}: {chunk_gap:.2f} s without a chunk"
    status_gap = max_gap(status_times, w.start, w.end)
    assert status_gap < MAX_STATUS_GAP_S, f"{what}: {status_gap:.2f} s without a status"


def check_totals(peer: Peer, diagnostics: Diagnostics) -> dict[str, int]:
    """On valid input only (counts steady): PolicyStatus's totals are the sums of the kinds on
    /diagnostics, per source. Returns the counts."""
    time.sleep(SETTLE_S)
    values = diagnostics.fresh()
    status = peer.wait_for_status(lambda _s: True, 2.0)
    again = diagnostics.fresh()
    assert status is not None, "no status"
    counts = rejections(values)
    assert rejections(again) == counts, "counts still moving on valid input"

    def total(prefix: str) -> int:
        return sum(n for k, n in counts.items() if k.startswith(prefix))

    assert status.bad_images == total("image_"), (status.bad_images, counts)
    assert status.bad_joint_states == total("joint_state_"), (status.bad_joint_states, counts)
    assert status.bad_instructions == total("instruction_"), (status.bad_instructions, counts)
    return counts


# -------------------------------------------------------------------------------------------------
# Raw images


def raw(
    width: int,
    height: int,
    encoding: str = "rgb8",
    step: int | None = None,
    data: bytes | None = None,
) -> Image:
    """An Image message as given, white pixels unless ``data`` is given (stamp left at zero)."""
    m = Image()
    m.width, m.height, m.encoding = width, height, encoding
    m.step = width * 3 if step is None else step
    m.is_bigendian = 0
    m.data = b"\xff" * (m.step * height) if data is None else data
    return m


def now_stamp(now: Time) -> Time:
    return now


def frames_of(template: CameraMsg, stamp: Callable[[Time], Time] = now_stamp) -> HostileFrame:
    def make(_k: int, now: Time) -> CameraMsg:
        template.header.stamp = stamp(now)
        return template

    return make


def same_for_all(template: CameraMsg, stamp: Callable[[Time], Time] = now_stamp) -> Any:
    """A camera -> hostile frames function that sends ``template`` on every camera."""
    return lambda _cam: frames_of(template, stamp)


def zero_stamp(_now: Time) -> Time:
    return Time()


def negative_stamp(_now: Time) -> Time:
    return Time(sec=-5, nanosec=0)


def future_stamp(now: Time) -> Time:
    return time_of(stamp_seconds(now) + FUTURE_S)


def behind_stamp(now: Time) -> Time:
    # A second before now: older than the valid frame (or joint state) sent just before.
    return time_of(stamp_seconds(now) - 1.0)


def big_endian_frames(cam: str) -> HostileFrame:
    m = raw_image(GOOD_IMAGES[cam], "rgb8", frame_id=cam)
    m.is_bigendian = 1
    return frames_of(m)


def raw_camera_cases() -> list[Case]:
    white = raw(32, 32)

    def case(name: str, k: frozenset[str] | None, frame: Callable[[str], HostileFrame]) -> Case:
        return Case(name, "cameras", k, frame=frame)

    encoding = kinds("image_encoding")
    return [
        case("encoding yuv422", encoding, same_for_all(raw(32, 32, "yuv422", 64))),
        case("encoding mono16", encoding, same_for_all(raw(32, 32, "mono16", 64))),
        case("encoding rgb16", encoding, same_for_all(raw(32, 32, "rgb16", 192))),
        case("encoding 16UC1", encoding, same_for_all(raw(32, 32, "16UC1", 64))),
        case("encoding empty", encoding, same_for_all(raw(32, 32, ""))),
        case("encoding garbage", encoding, same_for_all(raw(32, 32, "garbage"))),
        case("width 0", kinds("image_zero_size"), same_for_all(raw(0, 32, step=0, data=b""))),
        case("height 0", kinds("image_zero_size"), same_for_all(raw(32, 0, data=b""))),
        case("step below width x 3", kinds("image_step"), same_for_all(raw(32, 32, step=50))),
        case(
            "data a byte short",
            kinds("image_data_short"),
            same_for_all(raw(32, 32, data=b"\xff" * (96 * 32 - 1))),
        ),
        case("data empty", kinds("image_data_short"), same_for_all(raw(32, 32, data=b""))),
        case(
            "step 2^32-1 on 16x16",
            kinds("image_data_short"),
            same_for_all(raw(16, 16, step=0xFFFFFFFF, data=b"\xff" * 768)),
        ),
        case(
            "100000x100000 with 100 bytes",
            kinds("image_too_large"),
            same_for_all(raw(100_000, 100_000, data=b"\xff" * 100)),
        ),
        case(
            "4097x4096 (just over max_image_pixels) with 100 bytes",
            kinds("image_too_large"),
            same_for_all(raw(4097, 4096, data=b"\xff" * 100)),
        ),
        case(
            "4096x4096 (max_image_pixels exactly) with 100 bytes",
            kinds("image_data_short"),
            same_for_all(raw(4096, 4096, data=b"\xff" * 100)),
        ),
        case("stamp zero", kinds("image_no_stamp"), same_for_all(white, zero_stamp)),
        case("stamp sec=-5", kinds("image_no_stamp"), same_for_all(white, negative_stamp)),
        case("stamp an hour ahead", kinds("image_stamp_future"), same_for_all(white, future_stamp)),
        case(
            "stamp a second behind",
            kinds("image_stamp_backwards"),
            same_for_all(white, behind_stamp),
        ),
        case(
            "40x30 between 32x32 frames",
            kinds("image_size_changed"),
            same_for_all(raw_image(uniform_rgb(40, 30, (255, 255, 255)), "rgb8")),
        ),
        case("rgb8 with is_bigendian set", ACCEPTED, big_endian_frames),
    ]


# -------------------------------------------------------------------------------------------------
# Joint states


def joint_cases() -> list[Case]:
    def case(name: str, k: frozenset[str] | None, joints: HostileJoints) -> Case:
        return Case(name, "joints", k, joints=joints)

    def with_value(j: int, value: float) -> HostileJoints:
        q = list(OTHER_Q)
        q[j] = value
        return lambda _k, now: joint_state(BUNDLE_JOINTS, q, now)

    def stamped(stamp: Callable[[Time], Time]) -> HostileJoints:
        return lambda _k, now: joint_state(BUNDLE_JOINTS, OTHER_Q, stamp(now))

    def raw_state(names: Sequence[str], positions: Sequence[float]) -> HostileJoints:
        return lambda _k, now: joint_state(names, positions, now)

    # 100000 names (none of them the robot's), built once and sent a few times only: each is
    # about 2 MB on the wire.
    many = joint_state([f"joint_{i}" for i in range(100_000)], [0.5] * 100_000, Time())

    def many_names(k: int, now: Time) -> JointState | None:
        if k >= 4:
            return None
        many.header.stamp = now
        return many

    nan = kinds("joint_state_nan")
    return [
        case("NaN", nan, with_value(2, math.nan)),
        case("+Inf", nan, with_value(0, math.inf)),
        case("-Inf", nan, with_value(6, -math.inf)),
        case(
            "gripper missing",
            kinds("joint_state_missing_joint"),
            raw_state(BUNDLE_JOINTS[:-1], OTHER_Q[:-1]),
        ),
        case(
            "7 names, 6 positions",
            kinds("joint_state_length"),
            raw_state(BUNDLE_JOINTS, OTHER_Q[:-1]),
        ),
        case(
            "7 names, 8 positions",
            kinds("joint_state_length"),
            raw_state(BUNDLE_JOINTS, OTHER_Q + (0.9,)),
        ),
        case(
            "joint1 twice",
            kinds("joint_state_duplicate_name"),
            raw_state(BUNDLE_JOINTS + ("joint1",), OTHER_Q + (0.8,)),
        ),
        case("1e300", kinds("joint_state_out_of_limits"), with_value(0, 1e300)),
        case("-1e300", kinds("joint_state_out_of_limits"), with_value(3, -1e300)),
        case("empty message", None, raw_state((), ())),
        case("stamp zero", kinds("joint_state_no_stamp"), stamped(zero_stamp)),
        case("stamp sec=-5", kinds("joint_state_no_stamp"), stamped(negative_stamp)),
        case("stamp an hour ahead", kinds("joint_state_stamp_future"), stamped(future_stamp)),
        case(
            "stamp a second behind",
            kinds("joint_state_stamp_backwards"),
            stamped(behind_stamp),
        ),
        case("100000 names", None, many_names),
    ]


# -------------------------------------------------------------------------------------------------
# Instructions


def instruction_cases() -> list[Case]:
    too_long = kinds("instruction_too_long")
    limit = DEFAULT_MAX_INSTRUCTION_BYTES
    megabyte = ("push the blue object " * 50_000)[:1_000_000]
    over = "push the blue object".ljust(limit + 1)
    # Fewer characters than the bound, more bytes: the bound is in bytes.
    wide = "touch the green cube " + "é" * 540
    # The current instruction's words, padded with spaces to the bound exactly: accepted, and the
    # same tokens (the chunks do not change).
    exactly = INSTRUCTION.ljust(limit)
    assert len(over.encode()) == limit + 1 and len(exactly.encode()) == limit
    assert len(wide) < limit < len(wide.encode())
    return [
        Case("1 MB", "instruction", too_long, texts=(megabyte, megabyte)),
        Case(f"{limit + 1} bytes", "instruction", too_long, texts=(over, over)),
        Case(
            f"{len(wide.encode())} bytes in {len(wide)} characters",
            "instruction",
            too_long,
            texts=(wide, wide),
        ),
        Case(f"{limit} bytes, the same words", "instruction", ACCEPTED, texts=(exactly,)),
    ]


# -------------------------------------------------------------------------------------------------
# Compressed images


def png_chunk(kind: bytes, body: bytes) -> bytes:
    crc = zlib.crc32(kind + body) & 0xFFFFFFFF
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", crc)


PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def png_claiming(width: int, height: int, idat: bytes) -> bytes:
    """A 1-bit grayscale PNG of ``width`` x ``height`` whose image data is ``idat`` (zlib)."""
    header = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    return (
        PNG_SIGNATURE
        + png_chunk(b"IHDR", header)
        + png_chunk(b"IDAT", idat)
        + png_chunk(b"IEND", b"")
    )


def png_bomb(side: int) -> bytes:
    """A real, complete 1-bit ``side`` x ``side`` black PNG: a few kB that decode to side^2
    pixels (432 MB as RGB for 12000)."""
    row = b"\x00" * (1 + (side + 7) // 8)  # filter byte, then the packed pixels
    return png_claiming(side, side, zlib.compress(row * side, 9))


def png_with_private_chunk(rgb: U8, size: int) -> bytes:
    """``rgb`` as PNG with a private ancillary chunk of ``size`` bytes after IHDR (decoders skip
    it: the image is the same)."""
    png = png_bytes(rgb)
    cut = len(PNG_SIGNATURE) + 8 + 13 + 4  # signature and the IHDR chunk
    return png[:cut] + png_chunk(b"prVt", b"\x00" * size) + png[cut:]


# An 8x8 gray baseline JPEG (Pillow, quality 50), whose frame header (SOF0) is patched below.
TINY_JPEG = bytes.fromhex(
    "ffd8ffe000104a46494600010100000100010000ffdb004300100b0c0e0c0a100e0d0e1211101318281a18161618"
    "3123251d283a333d3c3933383740485c4e404457453738506d51575f626768673e4d71797064785c656763ffc000"
    "0b080008000801011100ffc40014000100000000000000000000000000000000ffc4001410010000000000000000"
    "0000000000000000ffda0008010100003f003fffd9"
)


def jpeg_claiming(width: int, height: int) -> bytes:
    i = TINY_JPEG.index(b"\xff\xc0")
    return TINY_JPEG[: i + 5] + struct.pack(">HH", height, width) + TINY_JPEG[i + 9 :]


def compressed(data: bytes, fmt: str = "rgb8; png compressed rgb8") -> CompressedImage:
    m = CompressedImage()
    m.format = fmt
    m.data = data
    return m


def compressed_camera_cases() -> list[Case]:
    def case(name: str, k: frozenset[str] | None, frame: Callable[[str], HostileFrame]) -> Case:
        return Case(name, "cameras", k, frame=frame)

    def padded(size: int) -> Callable[[str], HostileFrame]:
        def per_camera(cam: str) -> HostileFrame:
            return frames_of(compressed(png_with_private_chunk(GOOD_IMAGES[cam], size)))

        return per_camera

    assert len(png_with_private_chunk(GOOD_IMAGES["exterior"], 300_000)) > MAX_COMPRESSED_BYTES
    assert len(png_with_private_chunk(GOOD_IMAGES["exterior"], 150_000)) < MAX_COMPRESSED_BYTES
    bomb = png_bomb(12_000)
    assert len(bomb) < 50_000, len(bomb)
    tiny_idat = zlib.compress(b"\x00" * 64)
    decode = kinds("image_decode")
    return [
        case(
            "PNG signature, then garbage",
            decode,
            same_for_all(compressed(PNG_SIGNATURE + b"not really a png" * 8)),
        ),
        case("bytes that are no image", decode, same_for_all(compressed(bytes(range(256)) * 4))),
        case("empty data", None, same_for_all(compressed(b""))),
        case(
            f"PNG bomb: 12000x12000 in {len(bomb)} bytes",
            kinds("image_too_large"),
            same_for_all(compressed(bomb)),
        ),
        case(
            "PNG header claiming 4097x4096, tiny data",
            kinds("image_too_large"),
            same_for_all(compressed(png_claiming(4097, 4096, tiny_idat))),
        ),
        case(
            "PNG header claiming 4096x4096 (max_image_pixels exactly), tiny data",
            decode,
            same_for_all(compressed(png_claiming(4096, 4096, tiny_idat))),
        ),
        case(
            "JPEG header claiming 12000x12000",
            kinds("image_too_large"),
            same_for_all(compressed(jpeg_claiming(12_000, 12_000), "rgb8; jpeg compressed bgr8")),
        ),
        case(
            "300 kB: the valid PNG with a 300 kB private chunk",
            kinds("image_compressed_too_large"),
            padded(300_000),
        ),
        case("150 kB: the valid PNG with a 150 kB private chunk", ACCEPTED, padded(150_000)),
    ]


# -------------------------------------------------------------------------------------------------


def start_graph(node: NodeProcess, peer: Peer, exp: Expected) -> Graph:
    diagnostics = Diagnostics(peer)
    instruction_pub = peer.node.create_publisher(String, peer.topics.instruction, 10)
    start_constant(peer, node)
    wait_matching(peer, exp, 0.0, timeout=2 * CHUNK_TIMEOUT)
    graph = Graph(node, peer, diagnostics, valid_frames(peer.topics), instruction_pub)
    graph.restore()
    assert peer.wait_for(lambda: instruction_pub.get_subscription_count() > 0, 5.0)
    return graph


def check_memory(node: NodeProcess, rss_before: int, peak_reset: bool, what: str) -> None:
    assert node.pid is not None
    rss_after = proc_status_bytes(node.pid, "VmRSS")
    growth = rss_after - rss_before
    assert growth < MAX_RSS_GROWTH, f"{what}: RSS grew by {growth / 2**20:.0f} MB"
    if peak_reset:
        peak = proc_status_bytes(node.pid, "VmHWM")
        assert peak - rss_before < MAX_RSS_GROWTH, (
            f"{what}: peak RSS {peak / 2**20:.0f} MB, {(peak - rss_before) / 2**20:.0f} MB above "
            "the RSS before"
        )


def test_hostile_raw_images_joint_states_and_instructions_are_refused_and_counted() -> None:
    """The raw-image catalogue on both cameras, the joint-state catalogue and the oversized
    instructions, a case of each stream at a time, each hostile message between valid ones."""
    exp = expected_for(Q, [ext_image(), wrist_image()], INSTRUCTION)
    params = {"instruction": INSTRUCTION, "enabled_at_start": True, **LIMITS}
    with running(params) as (node, peer):
        graph = start_graph(node, peer, exp)
        assert node.pid is not None
        peak_reset = reset_peak_rss(node.pid)
        rss_before = proc_status_bytes(node.pid, "VmRSS")
        t0 = peer.mark()
        graph.run_catalogue(raw_camera_cases(), joint_cases(), instruction_cases())
        window = Window(t0, peer.mark())
        check_memory(node, rss_before, peak_reset, "raw catalogue")
        check_window(peer, window, exp, "raw catalogue")

        # Only big-endian-flagged rgb8 frames: 8-bit pixels have no byte order, so the cameras
        # do not go stale and the node drives on them (a chunk whose observation stamp is after
        # the switch, from those frames alone).
        before = graph.diagnostics.fresh()
        t1, t1_ros = peer.mark(), peer.now_s()
        for cam in CAMERAS:
            peer.set_camera(cam, big_endian_frames(cam), CAMERA_HZ)

        def from_big_endian() -> bool:
            return any(
                stamp_seconds(c.header.stamp) >= t1_ros
                and trajectory_error(c.trajectory, exp) < TOL
                for c in peer.chunks_since(t1)
            )

        assert peer.wait_for(from_big_endian, CHUNK_TIMEOUT), "no chunk from big-endian frames"
        assert not any(s.state == PolicyStatus.STATE_STALE for s in peer.statuses_since(t1))
        graph.restore()
        assert deltas(before, graph.diagnostics.fresh()) == {}

        counts = check_totals(peer, graph.diagnostics)
        for cases in (raw_camera_cases(), joint_cases(), instruction_cases()):
            for case in cases:
                for kind in case.kinds or ():
                    assert counts.get(kind, 0) > 0, (kind, counts)
        with peer.lock:
            trajectories = [r.msg for r in peer.trajectories]
        assert trajectories, "no command at all"
        assert commands_outside_limits(trajectories) == [], "a command outside the joint limits"
        assert node.running()


def test_hostile_compressed_images_are_refused_before_decoding() -> None:
    """The compressed transport's catalogue on both cameras: undecodable bytes, empty data, a
    decompression bomb and headers that claim more than max_image_pixels (refused from the header,
    without the memory to decode them), data over max_compressed_bytes."""
    exp = expected_for(Q, [ext_image(), wrist_image()], INSTRUCTION)
    params = {
        "instruction": INSTRUCTION,
        "enabled_at_start": True,
        "max_compressed_bytes": MAX_COMPRESSED_BYTES,
        **LIMITS,
    }
    with running(params, PeerTopics(compressed=True)) as (node, peer):
        graph = start_graph(node, peer, exp)
        assert node.pid is not None
        peak_reset = reset_peak_rss(node.pid)
        rss_before = proc_status_bytes(node.pid, "VmRSS")
        t0 = peer.mark()
        graph.run_catalogue(compressed_camera_cases())
        window = Window(t0, peer.mark())
        check_memory(node, rss_before, peak_reset, "compressed catalogue")
        check_window(peer, window, exp, "compressed catalogue")
        counts = check_totals(peer, graph.diagnostics)
        for kind in ("image_decode", "image_too_large", "image_compressed_too_large"):
            assert counts.get(kind, 0) > 0, (kind, counts)
        with peer.lock:
            trajectories = [r.msg for r in peer.trajectories]
        assert commands_outside_limits(trajectories) == [], "a command outside the joint limits"
        assert node.running()


def cdr_string(data: bytes, length: int | None = None) -> bytes:
    """A serialized std_msgs/String (CDR little endian) holding ``data``; ``length`` overrides
    the length field."""
    body = data + b"\x00"
    n = len(body) if length is None else length
    return b"\x00\x01\x00\x00" + struct.pack("<I", n) + body


ODD_TEXTS = (
    "",
    " \t\n ",
    "🤖 reach the red cube 🟥",
    "\u202ereach the red cube",
    "r\u0301each the re\u0301d cube",
    "\u200b" * 300,
    "\x07\x1b[31mreach\x1b[0m the red cube",
)
ODD_SERIALIZED = (
    cdr_string(b"\xff\xfe\xfd"),
    cdr_string(b"reach \xc3\x28 the red cube"),
    cdr_string(b"\xed\xa0\x80 reach"),
    cdr_string(b"reach\x00the blue object"),
    # A length field that claims 2 GB in front of 20 bytes.
    cdr_string(b"reach the red cube", 0x7FFFFFFF),
)


def flood_texts(n: int) -> list[str]:
    """``n`` instructions of the test vocabulary, each with its own tokens."""
    words = ["reach", "touch", "push", "the", "red", "green", "blue", "object", "cube", "to",
             "zone", "marked", "a"]  # fmt: skip
    out = []
    for i in range(n):
        a, b, c = i % 13, (i // 13) % 13, (i // 169) % 13
        out.append(f"{words[a]} the {words[b]} {words[c]} to a marked zone")
    assert len(set(out)) == n
    return out


def test_instruction_flood_and_odd_text_leave_the_node_driving() -> None:
    """Odd instruction text (empty, control characters, invalid UTF-8, a lying length field) and
    a flood of 2000 different instructions in a second: the node lives, keeps its status coming,
    does not write the flood into its log, and drives on the good instruction once it is back."""
    exp = expected_for(Q, [ext_image(), wrist_image()], INSTRUCTION)
    params = {"instruction": INSTRUCTION, "enabled_at_start": True, **LIMITS}
    texts = flood_texts(2000)
    with running(params) as (node, peer):
        graph = start_graph(node, peer, exp)
        pub = graph.instruction_pub
        # The good instruction comes back every 0.5 s (as a latched or repeating sender would).
        peer.set_instruction(INSTRUCTION)

        t_odd = peer.mark()
        for text in ODD_TEXTS:
            pub.publish(String(data=text))
            time.sleep(0.02)
        for data in ODD_SERIALIZED:
            pub.publish(data)
            time.sleep(0.02)
        time.sleep(0.3)
        assert node.running(), "the node exited on odd instruction text"
        t_back = peer.mark()
        wait_matching(peer, exp, t_back)

        log_before = node.stderr_path.stat().st_size
        t_flood = peer.mark()
        for i, text in enumerate(texts):
            pub.publish(String(data=text))
            if i % 50 == 49:
                delay = t_flood + (i + 1) / len(texts) - peer.mark()
                if delay > 0:
                    time.sleep(delay)
        flood_s = peer.mark() - t_flood
        assert flood_s < 2.0, f"the flood took {flood_s:.2f} s"
        time.sleep(1.0)
        assert node.running(), "the node exited during the instruction flood"
        growth = node.stderr_path.stat().st_size - log_before
        assert growth < MAX_FLOOD_LOG_GROWTH, (
            f"the log grew by {growth} bytes during the flood of {len(texts)} instructions"
        )
        t_after = peer.mark()
        wait_matching(peer, exp, t_after, timeout=2 * CHUNK_TIMEOUT)

        with peer.lock:
            status_times = [r.at for r in peer.statuses]
            trajectories = [r.msg for r in peer.trajectories]
        gap = max_gap(status_times, t_odd, peer.mark())
        assert gap < MAX_STATUS_GAP_S, f"{gap:.2f} s without a status"
        assert commands_outside_limits(trajectories) == [], "a command outside the joint limits"
        assert node.running()
