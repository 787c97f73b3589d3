# RUST_IMAGE on a machine with no public registry: Debian's rustc is too old for kube-rs (edition
# 2024 needs Rust 1.85+), so this machine's own rustup toolchain (the context's rust/: bin, lib,
# libexec, etc; no docs) is copied in, with gcc as the linker and for C in build scripts (ring).
ARG BASE
FROM ${BASE}
RUN apt-get update \
 && apt-get install -y --no-install-recommends gcc libc6-dev \
 && rm -rf /var/lib/apt/lists/*
COPY rust /usr/local/rust
ENV CARGO_HOME=/usr/local/cargo \
    PATH=/usr/local/cargo/bin:/usr/local/rust/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
