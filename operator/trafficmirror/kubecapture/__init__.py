"""`trafficmirror capture`: one command from a pod, deployment, node or label selector to a pcapng."""
