# PYTHON_IMAGE on a machine with no public registry: Debian bookworm's python3 (3.11, the minor
# version of python:3.11-slim) with venv; `python` is python3 (python-is-python3), as in the
# public image, so the timer server's ENTRYPOINT runs unchanged.
ARG BASE
FROM ${BASE}
RUN apt-get update \
 && apt-get install -y --no-install-recommends python3 python3-venv python-is-python3 \
 && rm -rf /var/lib/apt/lists/*
