# JRE_IMAGE on a machine with no public registry: Debian's OpenJDK 17 runtime (the watcher's class-
# data-sharing archive is recorded in the final image by this very JVM, as with eclipse-temurin).
ARG BASE
FROM ${BASE}
RUN apt-get update \
 && apt-get install -y --no-install-recommends openjdk-17-jre-headless \
 && rm -rf /var/lib/apt/lists/*
