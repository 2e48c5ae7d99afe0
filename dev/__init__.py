"""The local control plane for development and tests (not part of the distribution).

`dev.plane` builds and runs the real components on loopback, `dev.devcluster` is the
small API that tests and the demo use, `dev.node` is the node (containerd, runc, the
kubelet, kube-proxy) and builds the project's images.
"""
