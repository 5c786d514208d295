# codex-ingestor: the daemon alone (no Node, no Codex). Build: docker build -t codex-ingestor .
# Runs as a sidecar listening on a Unix socket and delivering to Convex; see docs/sidecar.md.
FROM python:3.11-slim AS build
# gcc: setup.py compiles the per-line hot path with mypyc (the image's Python has its headers).
RUN apt-get update && apt-get install -y --no-install-recommends gcc libc6-dev \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY pyproject.toml setup.py README.md ./
COPY ingestor ./ingestor
RUN pip install --no-cache-dir --prefix=/install .

FROM python:3.11-slim
# A fixed numeric uid, so Kubernetes' runAsNonRoot can verify it without a passwd lookup.
RUN useradd --system --uid 10001 --user-group --home-dir /var/lib/ingestor --shell /usr/sbin/nologin ingestor \
    && mkdir -p /var/lib/ingestor /run/ingestor \
    && chown ingestor:ingestor /var/lib/ingestor /run/ingestor
COPY --from=build /install /usr/local
USER 10001:10001
ENV PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1
# The spool and the dead-letter file: keep them across restarts, or undelivered ops are lost.
VOLUME ["/var/lib/ingestor"]
EXPOSE 9464
# /healthz is served by --metrics (on in the default command below; keep it if you override CMD).
HEALTHCHECK --interval=15s --timeout=3s --start-period=10s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:9464/healthz', timeout=2)"]
ENTRYPOINT ["ingestor"]
CMD ["run", "--sink", "convex", "--unix", "/run/ingestor/ingest.sock", "--state-dir", "/var/lib/ingestor", "--metrics", "0.0.0.0:9464"]
