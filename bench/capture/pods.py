"""What splitting by pod costs the agent (root: network namespaces).

The same traffic (4 VNIs, 1,400-byte frames, each VNI's inner sources cycling over three
addresses) is received by the agent as plain sessions (everything written), and as the sources
of one podSelector session whose pods hold two of the three addresses of each VNI, with
``files: perPod`` and ``perSession`` (a third of the packets filtered out). The receiver's own CPU
per packet is compared within one run, interleaved, so the machine's other load hits every mode
alike; the machine's load average is recorded.

    .venv/bin/python bench/capture/pods.py [--packets N] [--rate PPS] [--repeat R] [--modes plain,perPod,perSession]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import run  # noqa: E402
from run import ipv4_udp, vni_list, vxlan  # noqa: E402

VNIS = 4


def pod_ip(vni_index: int, k: int) -> str:
    return f"10.1.{vni_index}.{k + 1}"


def pool(tmp: Path, frame_len: int) -> Path:
    p = tmp / f"pool-pods-{frame_len}.bin"
    ids = vni_list(VNIS)
    recs = []
    for i in range(1024):
        v = i % VNIS
        src = pod_ip(v, (i // VNIS) % 3)  # the third address is no selected pod's
        payload = bytes((i + j) & 0xFF for j in range(frame_len - 42))
        d = vxlan.header(ids[v]) + ipv4_udp(src, "10.0.0.2", 1024 + i, 443, payload)
        recs.append(len(d).to_bytes(4, sys.byteorder) + d)
    p.write_bytes(b"".join(recs))
    return p


def selector_session(files: str) -> dict[str, Any]:
    sources = [
        {
            "networkInterfaceId": f"eni-{v:017x}",
            "nodeName": f"node-{i}",
            "virtualNetworkId": v,
            "pods": [{"namespace": "bench", "name": f"p{i}-{k}", "ip": pod_ip(i, k)} for k in range(2)],
        }
        for i, v in enumerate(vni_list(VNIS))
    ]
    return {
        "metadata": {"namespace": "bench", "name": "web"},
        "spec": {"source": {"podSelector": {"matchLabels": {"app": "web"}}}, "capture": {"files": files}},
        "status": {"phase": "Ready", "sources": sources},
    }


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--packets", type=int, default=1_000_000)
    ap.add_argument("--rate", type=int, default=100_000)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--modes", default="plain,perPod,perSession")
    ap.add_argument("--out-dir", default="/dev/shm/tm-bench-pods")
    ap.add_argument("--out", default="")
    a = ap.parse_args()
    modes = a.modes.split(",")
    tmp = Path(tempfile.mkdtemp(prefix="tm-bench-pods-", dir="/tmp"))
    os.chmod(tmp, 0o755)
    base = Path(a.out_dir)
    shutil.rmtree(base, ignore_errors=True)
    base.mkdir(parents=True)
    os.chmod(base, 0o777)
    vxsend, _drain = run.build(tmp)
    pf = pool(tmp, 1400)
    session_args: dict[str, list[str] | None] = {"plain": None}
    for files in ("perPod", "perSession"):
        f = tmp / f"sessions-{files}.json"
        f.write_text(json.dumps([selector_session(files)]))
        os.chmod(f, 0o644)
        session_args[files] = ["--sessions-file", str(f)]
    rmem_path = Path("/proc/sys/net/core/rmem_max")
    rmem_before = rmem_path.read_text().strip()
    rmem_path.write_text(str(64 << 20))
    results: dict[str, Any] = {"packets": a.packets, "rate_pps": a.rate, "loadavg_at_start": os.getloadavg()}
    runs: dict[str, list[dict[str, Any]]] = {m: [] for m in modes}
    bed = run.Bed().up()
    try:
        bed.ns(bed.srv, "ip link set und0 mtu 1500")
        bed.ns(bed.agt, "ip link set und1 mtu 1500")
        for rep in range(a.repeat):
            for m in modes:
                r = run.run_agent(bed, base, vxsend, pf, a.packets, a.rate, VNIS, session_args=session_args[m])
                runs[m].append(r)
                print(
                    f"run {rep + 1} {m}: us_per_pkt={r['us_per_pkt']} written={r['written']} "
                    f"unaccounted={r['unaccounted']}",
                    flush=True,
                )
    finally:
        bed.down()
        rmem_path.write_text(rmem_before)
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.rmtree(base, ignore_errors=True)
    results["loadavg_at_end"] = os.getloadavg()
    results["modes"] = {m: run.median(rs) for m, rs in runs.items()}
    plain = results["modes"].get("plain", {}).get("us_per_pkt")
    if plain:
        results["ratio_to_plain"] = {m: run.quotient(v["us_per_pkt"], plain) for m, v in results["modes"].items()}
    text = json.dumps(results, indent=1)
    print(text)
    if a.out:
        Path(a.out).write_text(text + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
