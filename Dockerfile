# codex-ingestor: the daemon alone (no Node, no Codex). Build: docker build -t codex-ingestor .
# Runs as a sidecar listening on a Unix socket and delivering to Convex; see docs/sidecar.md.
# PYTHON_IMAGE: any image with CPython 3.11 as `python3`, its headers and venv (scripts/test-image
# builds on a stand-in made from Debian's packages, since no base image can be pulled there).
ARG PYTHON_IMAGE=python:3.11-slim

FROM ${PYTHON_IMAGE} AS build
# gcc: setup.py compiles the per-line hot path with mypyc (the image's Python has its headers).
RUN apt-get update && apt-get install -y --no-install-recommends gcc libc6-dev \
    && rm -rf /var/lib/apt/lists/*
# A virtual environment, copied whole into the final stage: the same layout on every base (pip's
# --prefix layout differs between Debian's Python and the official image's).
RUN python3 -m venv /opt/ingestor
WORKDIR /src
COPY pyproject.toml setup.py README.md ./
COPY ingestor ./ingestor
# Optional build secrets, for a network that needs them (a proxy's CA, another index), never stored in
# a layer: `--secret id=pip.conf,src=FILE` (pip's config) and `--secret id=pip-ca.crt,src=BUNDLE`
# (mounted at /run/secrets/pip-ca.crt, for its `cert`). pip and setuptools are not needed to run the
# daemon: removed, so the image carries only what runs.
RUN --mount=type=secret,id=pip.conf,target=/etc/pip.conf \
    --mount=type=secret,id=pip-ca.crt,target=/run/secrets/pip-ca.crt \
    /opt/ingestor/bin/pip install --no-cache-dir --disable-pip-version-check . \
    && /opt/ingestor/bin/pip uninstall --yes --quiet pip setuptools

FROM ${PYTHON_IMAGE}
# A fixed numeric uid and gid, so Kubernetes' runAsNonRoot can verify it without a passwd lookup. The
# group is made first: `useradd --system --user-group` would give it a system gid, not 10001.
RUN groupadd --system --gid 10001 ingestor \
    && useradd --system --uid 10001 --gid 10001 --home-dir /var/lib/ingestor --shell /usr/sbin/nologin ingestor \
    && mkdir -p /var/lib/ingestor /run/ingestor \
    && chown ingestor:ingestor /var/lib/ingestor /run/ingestor
COPY --from=build /opt/ingestor /opt/ingestor
ENV PATH=/opt/ingestor/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1
USER 10001:10001
# The spool and the dead-letter file: keep them across restarts, or undelivered ops are lost.
VOLUME ["/var/lib/ingestor"]
EXPOSE 9464
# /healthz is served by --metrics (on in the default command below; keep it if you override CMD).
HEALTHCHECK --interval=15s --timeout=3s --start-period=10s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:9464/healthz', timeout=2)"]
ENTRYPOINT ["ingestor"]
CMD ["run", "--sink", "convex", "--unix", "/run/ingestor/ingest.sock", "--state-dir", "/var/lib/ingestor", "--metrics", "0.0.0.0:9464"]
