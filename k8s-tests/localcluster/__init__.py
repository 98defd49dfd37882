"""A single-node Kubernetes run as host processes on this machine (`make cluster-up`, docs/cluster.md).

Every binary is built from its Go module and every image made locally (mmdebstrap + docker build,
imported into containerd), so no registry and no kind are needed.
"""
