"""Test bed for trafficmirror: the AWS emulator, its seeded world, and the local Kubernetes control plane."""
