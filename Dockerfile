# One image for the whole lab: every binary of the workspace in /usr/local/bin, each
# Deployment runs its own (`command: [/usr/local/bin/<service>]`); health-probe is the
# chart's exec probe on clusters older than Kubernetes 1.24.
#   make images            # docker build -t frlab:dev .
# Without Docker, k8s/local/image.py assembles the same image from the release binaries
# (`make image-archive`); a test checks that both ship the same binaries.
#
# Build stage: the workspace in release mode. No system protoc is needed (protox compiles
# the .proto files); SQLite is compiled from source (libsqlite3-sys, bundled); TLS for the
# Kubernetes client is rustls + ring. So gcc and libc headers are all the build needs, and
# the binaries need only glibc and libgcc at run time.
ARG RUST_VERSION=1.95
FROM docker.io/library/rust:${RUST_VERSION}-slim-bookworm AS build
WORKDIR /src
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked --workspace --bins \
    && mkdir -p /out \
    && for bin in gateway orders payments inventory notifications chaos-controller frlab health-probe; do \
         cp "target/release/$bin" /out/; \
       done

# Run stage: distroless (glibc, libgcc, CA certificates, no shell, no package manager),
# as the non-root user 65532 that the chart's securityContext also names.
FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /out/ /usr/local/bin/
USER 65532:65532
# The chart always gives `command`; without one the image is the frlab CLI.
ENTRYPOINT ["/usr/local/bin/frlab"]
CMD ["--help"]
