"""``python -m trafficmirror.capture agent|pcap ...`` (the same commands as ``trafficmirror``)."""

import sys

from trafficmirror.capture.cli import main

sys.exit(main())
