"""`make demo`: the test bed, the example manifests applied, and what Kubernetes shows of them."""

from __future__ import annotations

import signal
import sys
import tempfile
from pathlib import Path

from trafficmirror_testbed.kube import REPO_ROOT, running_control_plane


def main() -> int:
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    with (
        tempfile.TemporaryDirectory(prefix="trafficmirror-demo-") as tmp,
        running_control_plane(Path(tmp) / "kube") as plane,
    ):
        print(f"control plane up at {plane.url}")
        plane.kubectl("apply", "--server-side", "-f", str(REPO_ROOT / "crds"))
        for crd in ("mirrortargets", "mirrorfilters", "mirrorsessions"):
            plane.kubectl("wait", "--for=condition=Established", "--timeout=60s", f"crd/{crd}.trafficmirror.io")
        applied = plane.kubectl("apply", "--server-side", "-f", str(REPO_ROOT / "examples"))
        print(applied.stdout, end="")
        shown = plane.kubectl("get", "mirrortargets,mirrorfilters,mirrorsessions", "-o", "wide")
        print(shown.stdout, end="")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
