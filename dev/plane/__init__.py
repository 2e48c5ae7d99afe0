"""Builds and runs Rewind's local control plane: real etcd, Kubernetes, MinIO and Kafka.

Flow: `pins` names each component and its version, `build` turns a pin into binaries in
the user's cache, `pki` makes certificates and kubeconfigs, `components` says how each
process is started and how its health is checked, `procs` starts and stops process
groups, and `cli` (`dev/cluster`) ties them together.

Invariants: every process listens on 127.0.0.1 only; every piece of runtime state lives
under `dev/.state/`; binaries live under the cache, one folder per component version.
"""
