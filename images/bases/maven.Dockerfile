# MAVEN_IMAGE on a machine with no public registry: Debian's OpenJDK 17 JDK and Maven, on the
# JRE_IMAGE base (BASE), so both stages share the JVM's layers.
ARG BASE
FROM ${BASE}
RUN apt-get update \
 && apt-get install -y --no-install-recommends openjdk-17-jdk-headless maven \
 && rm -rf /var/lib/apt/lists/*
