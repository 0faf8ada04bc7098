"""The test bed: a real kube-apiserver + etcd, and the AWS emulator (moto with traffic mirroring)."""
