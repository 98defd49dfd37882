# Images of one static binary for the local cluster, which can pull nothing: FROM scratch + the files
# k8s-tests/localcluster/images.py lays out under rootfs/ of the build context (the binary at the path
# its upstream image and manifests use; for the Go binaries also the CA bundle, /etc/passwd with the
# nonroot user and /tmp, as gcr.io/distroless/static:nonroot). One stage (--target) per image.

# ghcr.io/astral-sh/uv: docker/Dockerfile copies /uv from it.
FROM scratch AS uv
COPY rootfs/ /
ENTRYPOINT ["/uv"]

# registry.k8s.io/pause (Kubernetes' build/pause/Dockerfile): the sandbox image.
FROM scratch AS pause
COPY rootfs/ /
USER 65535:65535
ENTRYPOINT ["/pause"]

FROM scratch AS coredns
COPY rootfs/ /
USER 65532:65532
ENTRYPOINT ["/coredns"]

FROM scratch AS metrics-server
COPY rootfs/ /
USER 65532:65532
ENTRYPOINT ["/metrics-server"]

# KEDA's manifests run /keda, /keda-adapter and /keda-admission-webhooks.
FROM scratch AS keda-operator
COPY rootfs/ /
USER 65532:65532
ENTRYPOINT ["/keda"]

FROM scratch AS keda-adapter
COPY rootfs/ /
USER 65532:65532
ENTRYPOINT ["/keda-adapter"]

FROM scratch AS keda-admission-webhooks
COPY rootfs/ /
USER 65532:65532
ENTRYPOINT ["/keda-admission-webhooks"]

# Its manifest runs `local-path-provisioner` from PATH (upstream: /usr/bin in an alpine image).
FROM scratch AS local-path-provisioner
COPY rootfs/ /
ENV PATH=/usr/bin
USER 65532:65532
ENTRYPOINT ["/usr/bin/local-path-provisioner"]
