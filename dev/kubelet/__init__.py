"""The process kubelet: runs the pods bound to one Node as local processes.

No container runtime exists on the development machines, so this package plays the
kubelet's part against a real kube-apiserver: it registers the Node ``rewind-dev-node``
and keeps it Ready (status heartbeats and a Lease), turns each container of each pod
bound to the node into a process (the image map ``dev/images.yaml`` says which folder and
which entrypoint an image means), and reports what those processes do as pod status.

Modules, each with one job:

- ``images``: the image map (reference -> folder, entrypoint, cmd, env); pure.
- ``expansion``: Kubernetes ``$(VAR)`` expansion; pure.
- ``quantity``: Kubernetes resource quantities; pure.
- ``envbuild``: a container's environment from env/envFrom/downward API; pure.
- ``ipam``: one loopback pod IP per pod; pure.
- ``probes``: probe thresholds (pure) and the probe handlers that touch the network.
- ``podstatus``: pod phase, conditions and container statuses; pure.
- ``volumes``: volumes as folders (emptyDir, configMap, secret, projected, ...).
- ``runtime``: starts, signals and adopts container processes through ``shim.py``.
- ``shim``: a stand-alone script that becomes one container (mount namespace, exit file).
- ``api``: the one module that talks to the Kubernetes API.
- ``node``: Node registration, status heartbeats and the node Lease.
- ``podworker``: one thread per pod; its containers' life cycle.
- ``logserver``: the kubelet's ``/containerLogs`` endpoint for ``kubectl logs``.
- ``kubelet``: watches the pods bound to the node and hands them to pod workers.

Run it as ``python -m dev.kubelet --kubeconfig PATH --state-dir dev/.state``.
"""
