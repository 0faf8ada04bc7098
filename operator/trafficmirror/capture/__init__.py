"""The capture agent: receive mirrored VXLAN, decapsulate, write per-session pcapng, ship.

Its own pipeline: nothing here imports kopf or the operator's handlers/reconcilers.
"""
