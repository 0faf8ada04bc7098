"""trafficmirror: declarative AWS VPC Traffic Mirroring for Kubernetes, and a capture agent."""

__version__ = "0.1.0"
