"""`trafficmirror pcap get`: a streaming k-way merge by time with constant memory.

Inputs are synthetic files shaped like the agent's (several nodes overlapping in time, rotated
files, gzip, classic pcap), so sizes and mixes no capture here could produce are cheap to make.
"""

from __future__ import annotations

import contextlib
import os
import random
import signal
import stat
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from netbed import NOBODY, PYTHON, REPO, Bed, in_netns, tshark_clean
from pcapgen import NS, Spec, random_specs, write
from test_s3 import BUCKET, ENV, Moto
from tests.conftest import sigint_as_default

from trafficmirror.capture import pcapng
from trafficmirror.capture.ship import s3_key

pytestmark = pytest.mark.root

T0 = 1_790_000_000 * NS
CLI = [PYTHON, "-m", "trafficmirror.capture", "pcap", "get", "ns/s"]
RSS_LIMIT_MB = 100


def _lay_out(root: Path, specs: list[Spec]) -> None:
    d = root / "ns" / "s"
    d.mkdir(parents=True, exist_ok=True)
    for spec in specs:
        with open(d / spec.name, "wb") as f:
            write(spec, f)


def _tags(data: bytes) -> tuple[bytes, int]:
    """(input tag, packet index) from a synthetic frame's payload."""
    body = data[42:].split(b".", 2)
    tag = body[0] + b"." + body[1] + b"."
    return tag, int(data[42 + len(tag) + 1 : 42 + len(tag) + 10])


def _check_merged(path: Path, specs: list[Spec]) -> None:
    tshark_clean(path)
    cap = pcapng.read_file(str(path))
    ts = [p.ts_ns for p in cap.packets]
    assert ts == sorted(ts)
    assert len(ts) == sum(s.packets for s in specs)
    # Each input's packets are all there, in their own order, on an interface of their own.
    seen: dict[bytes, list[int]] = {}
    iface_of: dict[bytes, set[int]] = {}
    for p in cap.packets:
        tag, i = _tags(p.data)
        seen.setdefault(tag, []).append(i)
        iface_of.setdefault(tag, set()).add(p.interface_id)
    for s in specs:
        assert seen[s.tag] == list(range(s.packets)), s.name
        assert len(iface_of[s.tag]) == 1
    assert len(cap.interfaces) == len(specs)
    assert len({i for ids in iface_of.values() for i in ids}) == len(specs)
    # Every statistics block is kept, on the right (renumbered) interface.
    stats = sorted((st.if_dropped, st.os_dropped, st.comment) for st in cap.statistics)
    assert stats == sorted((s.drops[0], s.drops[1], f"drops of {s.node}") for s in specs if s.fmt == "pcapng")
    for st in cap.statistics:
        node = st.comment.removeprefix("drops of ")
        assert cap.interfaces[st.interface_id].description == f"node={node}"


@pytest.fixture
def root() -> Iterator[Path]:
    import shutil
    import tempfile

    d = Path(tempfile.mkdtemp(prefix="tm-pcapget-", dir="/tmp"))
    os.chmod(d, 0o755)
    try:
        yield d
    finally:
        shutil.rmtree(d, ignore_errors=True)


@pytest.mark.parametrize("seed", range(8))
def test_merge_keeps_every_packet_interface_and_statistics_in_time_order(root: Path, seed: int) -> None:
    specs = random_specs(random.Random(seed), T0)
    _lay_out(root / "in", specs)
    out = root / "out" / "merged.pcapng"
    out.parent.mkdir()
    r = subprocess.run([*CLI, "--dir", str(root / "in"), "-o", str(out)], capture_output=True, text=True, check=False)
    assert r.returncode == 0, r.stderr
    assert f"{sum(s.packets for s in specs)} packets from {len(specs)} file(s)" in r.stderr
    assert os.listdir(out.parent) == ["merged.pcapng"]  # no temporary file left next to it
    os.chmod(out, 0o644)
    _check_merged(out, specs)


def _piped(get: list[str], reader: list[str]) -> tuple[int, str, str]:
    """``get | reader``, the reader as nobody (tshark as root warns on stderr)."""
    env = {"PATH": os.environ["PATH"], "HOME": "/tmp"}
    producer = subprocess.Popen(get, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    consumer = subprocess.Popen(
        ["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups", *reader],
        stdin=producer.stdout,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    assert producer.stdout is not None and producer.stderr is not None
    producer.stdout.close()
    out, err = consumer.communicate(timeout=120)
    assert producer.wait(60) == 0, producer.stderr.read()
    return consumer.returncode, out, err


def test_stdout_stream_is_read_by_tshark_from_a_pipe(root: Path) -> None:
    """`pcap get … -o - | wireshark -k -i -`: the stream is read from a pipe, live by dumpcap
    (what Wireshark's -i - does) and as a file from stdin."""
    specs = random_specs(random.Random(42), T0)
    _lay_out(root / "in", specs)
    total = sum(s.packets for s in specs)
    get = [*CLI, "--dir", str(root / "in"), "-o", "-"]
    rc, out, err = _piped(get, ["tshark", "-r", "-", "-T", "fields", "-e", "frame.number"])
    assert rc == 0 and out.split() == [str(i) for i in range(1, total + 1)], err
    live = root / "live"
    live.mkdir()
    os.chown(live, NOBODY, NOBODY)
    rc, out, err = _piped(get, ["tshark", "-i", "-", "-w", str(live / "x.pcapng")])
    assert rc == 0, err
    assert len(pcapng.read_file(str(live / "x.pcapng")).packets) == total


def _fifo_inputs(root: Path, specs: list[Spec], hold: bool = False) -> list[subprocess.Popen[bytes]]:
    """Named pipes in the directory source, each fed by its own generator process."""
    d = root / "in" / "ns" / "s"
    d.mkdir(parents=True)
    procs = []
    for spec in specs:
        path = d / spec.name
        os.mkfifo(path)
        code = (
            "import sys; sys.path[:0] = sys.argv[1:3]; import pcapgen, time\n"
            f"spec = pcapgen.Spec({spec.node!r}, {spec.start_ns}, {spec.packets}, {spec.step_ns}, "
            f"frame_len={spec.frame_len}, tag={spec.tag!r})\n"
            "with open(sys.argv[3], 'wb') as f:\n"
            "    pcapgen.stream(spec, f)\n" + ("    f.flush(); time.sleep(600)\n" if hold else "")
        )
        here = str(Path(__file__).parent)
        procs.append(subprocess.Popen([PYTHON, "-c", code, here, str(REPO / "operator"), str(path)]))
    return procs


def test_memory_stays_constant_for_gigabytes_of_input(root: Path) -> None:
    """Three nodes' files, 2.1 GB in all, streamed through named pipes (nothing on disk): the
    merge's peak RSS stays under the limit, and it writes every packet."""
    per_node = 700 << 20
    frame_len = 1400
    block = pcapng.EPB_OVERHEAD + ((frame_len + 3) & ~3)
    specs = [
        Spec(f"node-{n}", T0 + n * 1000, per_node // block, 3_000, frame_len=frame_len, tag=f"{n}.1.".encode())
        for n in range(3)
    ]
    feeders = _fifo_inputs(root, specs)
    proc = subprocess.Popen(
        [*CLI, "--dir", str(root / "in"), "-o", "-"], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    assert proc.stderr is not None
    # The peak is read from the merge's own address space (VmHWM), not from wait4's ru_maxrss: that
    # one also holds the RSS of the forked copy of this test process before its exec, which after a
    # long test session is hundreds of MB that the merge never used.
    stderr = proc.stderr
    chunks: list[bytes] = []
    reader = threading.Thread(target=lambda: chunks.append(stderr.read()))
    reader.start()
    peak_kb = 0
    while proc.poll() is None:
        with contextlib.suppress(OSError, ValueError):
            for line in Path(f"/proc/{proc.pid}/status").read_text().splitlines():
                if line.startswith("VmHWM:"):
                    peak_kb = max(peak_kb, int(line.split()[1]))
        time.sleep(0.02)
    reader.join()
    err = b"".join(chunks).decode()
    for f in feeders:
        assert f.wait(60) == 0
    assert proc.returncode == 0, err
    total = sum(s.packets for s in specs)
    assert total * block > 2 << 30
    assert f"{total} packets from 3 file(s)" in err
    assert peak_kb > 0
    peak_mb = peak_kb / 1024
    print(f"pcap get: {total * block / 2**30:.2f} GiB in, peak RSS {peak_mb:.1f} MB", file=sys.stderr)
    assert peak_mb <= RSS_LIMIT_MB


def test_ctrl_c_and_a_failed_input_leave_nothing_behind(root: Path) -> None:
    out_dir = root / "out"
    out_dir.mkdir()
    spec = Spec("node-0", T0, 200_000, 1_000, frame_len=200, tag=b"0.1.")
    feeders = _fifo_inputs(root, [spec], hold=True)  # all packets, then the input stalls
    proc = subprocess.Popen(
        [*CLI, "--dir", str(root / "in"), "-o", str(out_dir / "x.pcapng")],
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=sigint_as_default,
    )
    try:
        end = time.monotonic() + 60
        while time.monotonic() < end:  # the merge is under way: its temporary file has grown
            sizes = [p.stat().st_size for p in out_dir.iterdir()]
            if sizes and max(sizes) > 1 << 20:
                break
            time.sleep(0.1)
        else:
            raise AssertionError("the merge never started")
        proc.send_signal(signal.SIGINT)
        _out, err = proc.communicate(timeout=30)
        assert proc.returncode == 130, err
        assert "interrupted" in err
        assert list(out_dir.iterdir()) == []
    finally:
        for f in feeders:
            f.kill()
            f.wait()

    # An input that turns out corrupt mid-way: an error naming the problem, and no output.
    bad = root / "bad"
    specs = [Spec("node-0", T0, 50, 1_000, tag=b"0.1."), Spec("node-1", T0 + 10, 50, 1_000, tag=b"1.1.")]
    _lay_out(bad, specs)
    victim = bad / "ns" / "s" / specs[1].name
    with open(victim, "rb") as f:
        offsets = [off for off, *_ in pcapng.iter_blocks(f)]
    data = bytearray(victim.read_bytes())
    at = offsets[len(offsets) // 2] + 4
    data[at : at + 4] = (0xFFFFFFF0 - 3).to_bytes(4, "little")  # a block length no file can have
    victim.write_bytes(bytes(data))
    r = subprocess.run(
        [*CLI, "--dir", str(bad), "-o", str(out_dir / "y.pcapng")], capture_output=True, text=True, check=False
    )
    assert r.returncode == 1 and "block length" in r.stderr, r.stderr
    assert list(out_dir.iterdir()) == []


def test_s3_source_merges_exactly_what_the_directory_does(bed: Bed, root: Path) -> None:
    """The same files in the emulator's S3 (key layout as the agent ships them) and in a
    directory: byte-identical merges, read by ranged GETs without a temporary directory."""
    specs = random_specs(random.Random(7), T0)
    _lay_out(root / "in", specs)
    dir_out = root / "from-dir.pcapng"
    subprocess.run([*CLI, "--dir", str(root / "in"), "-o", str(dir_out)], check=True, capture_output=True)

    moto = Moto(bed)
    moto.start()
    try:
        for spec in specs:
            body = (root / "in" / "ns" / "s" / spec.name).read_bytes()
            key = s3_key(
                "pcap",
                {"cluster": "prod", "namespace": "ns", "session": "s", "start": spec.start_ns, "file": spec.name},
            )
            moto.call(lambda s3, k=key, b=body: s3.put_object(Bucket=BUCKET, Key=k, Body=b))
        tmp = root / "tmpdir"
        tmp.mkdir()
        s3_out = root / "from-s3.pcapng"

        def run() -> subprocess.CompletedProcess[str]:
            env = {**os.environ, **ENV, "TMPDIR": str(tmp)}
            cmd = [*CLI, "--s3-bucket", BUCKET, "--cluster", "prod", "-o", str(s3_out)]
            return subprocess.run(cmd, capture_output=True, text=True, env=env, check=False)

        r = in_netns(bed.agt, run)
        assert r.returncode == 0, r.stderr
        assert s3_out.read_bytes() == dir_out.read_bytes()
        assert list(tmp.iterdir()) == []
        assert stat.S_ISREG(s3_out.stat().st_mode)
    finally:
        moto.stop()
