# Shiplog: one image, both binaries (shiplog-api, shiplog-worker) in /usr/local/bin.
#
#   docker build -t shiplog:local .
#       compiles in RUST_IMAGE (the default, last stage: `runtime`)
#   docker build --target runtime-prebuilt -t shiplog:local .
#       packages binaries built on the host instead (no Rust image needed):
#       first `cargo build --release --bins` on a host whose glibc is not newer than the
#       runtime image's (2.36 in bookworm): a Debian bookworm host, for instance.
#
# Both variants give the same runtime image: RUNTIME_IMAGE + ca-certificates, git and the
# ssh client (git catalog sources) + a non-root
# user (uid/gid 10001).  The health check lives in docker-compose.yml.  See docs/compose.md.
#
# The stage order matters for the legacy builder (DOCKER_BUILDKIT=0, docker-compose v1,
# a docker CLI without buildx), which runs every stage above the one it builds, used or
# not: `runtime-prebuilt` comes before the Rust stage so that it never needs RUST_IMAGE,
# and it tolerates missing host binaries so that the default build passes through it.
# BuildKit only runs the stages the target needs.

ARG RUST_IMAGE=rust:1.95-bookworm
ARG RUNTIME_IMAGE=debian:bookworm-slim

# --- runtime-base: what both variants share --------------------------------------------
FROM ${RUNTIME_IMAGE} AS runtime-base
# openssh-client: the worker's ssh:// environments (docs/environments.md).
RUN set -eux; \
    export DEBIAN_FRONTEND=noninteractive; \
    apt-get update; \
    # git (+ ssh client) reads git catalog sources.
    apt-get install -y --no-install-recommends ca-certificates git openssh-client; \
    apt-get clean; \
    rm -rf /var/lib/apt/lists/* /var/cache/apt/* /var/log/apt /var/log/dpkg.log; \
    groupadd --system --gid 10001 shiplog; \
    useradd --system --uid 10001 --gid shiplog --home-dir /nonexistent --no-create-home \
        --shell /usr/sbin/nologin shiplog
# Numeric, so that "must run as non-root" checks can verify it without /etc/passwd.
USER 10001:10001
ENV SHIPLOG_LISTEN=0.0.0.0:8080
EXPOSE 8080
CMD ["shiplog-api"]

# --- runtime-prebuilt: host-built binaries (docker build --target runtime-prebuilt) -----
FROM runtime-base AS runtime-prebuilt
# The [i]/[r] patterns and the extra Cargo.lock let this COPY succeed when the binaries are
# missing (a glob that matches nothing is skipped; a plain path is an error): the legacy
# builder runs this stage for the default target too.  .dockerignore lets exactly these two
# files of target/ into the build context.
COPY Cargo.lock target/release/shiplog-ap[i] target/release/shiplog-worke[r] /usr/local/bin/
USER root
RUN rm /usr/local/bin/Cargo.lock; \
    for b in shiplog-api shiplog-worker; do \
        [ -x "/usr/local/bin/$b" ] || echo "note: no target/release/$b in the build context (--target runtime-prebuilt needs it: cargo build --release --bins)" >&2; \
    done
USER 10001:10001

# --- build: compile in the Rust image ---------------------------------------------------
FROM ${RUST_IMAGE} AS build
WORKDIR /src
# apalis-postgres checks its queries at compile time against DATABASE_URL unless offline;
# it ships its query data (see docs/compose.md).
ENV SQLX_OFFLINE=true \
    CARGO_TERM_COLOR=never \
    CARGO_PROFILE_RELEASE_STRIP=symbols
COPY . .
RUN cargo build --release --locked --bins \
    && install -D -m 755 target/release/shiplog-api target/release/shiplog-worker -t /out/ \
    && rm -rf target

# --- runtime (default): the compiled binaries on the runtime base ----------------------
FROM runtime-base AS runtime
COPY --from=build /out/ /usr/local/bin/
