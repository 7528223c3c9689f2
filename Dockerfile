# FastAgent: a slim image running `fastagent serve` as a non-root user.
#   docker build -t fastagent .
#   docker run -p 8080:8080 -e FASTAGENT_VAIC_TOKEN=... -e OPENAI_API_KEY=... \
#     -e FASTAGENT_STORE=postgresql://... fastagent
# See docs/deployment.md.
FROM python:3.12-slim AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
COPY pyproject.toml README.md ./
COPY fastagent ./fastagent
COPY projections ./projections
# Wheels for the project and its dependencies (the otel extra: traces are opt-in
# at run time with FASTAGENT_TRACES, and the exporter must already be there).
RUN pip wheel --wheel-dir /wheels ".[otel]"

FROM python:3.12-slim
ENV PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1 PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    FASTAGENT_HOST=0.0.0.0 FASTAGENT_PORT=8080 \
    FASTAGENT_LOG_FORMAT=json \
    FASTAGENT_DATA_DIR=/var/lib/fastagent/data \
    FASTAGENT_STORE=/var/lib/fastagent/fastagent.db
COPY --from=build /wheels /wheels
RUN pip install --no-index --find-links /wheels "fastagent[otel]" && rm -rf /wheels \
    && useradd --system --uid 10001 --home-dir /var/lib/fastagent --create-home fastagent
USER 10001
WORKDIR /var/lib/fastagent
EXPOSE 8080
# Liveness; readiness is /readyz (store reachable, not draining) for the orchestrator.
HEALTHCHECK --interval=10s --timeout=3s --start-period=20s \
  CMD ["python", "-c", "import urllib.request,sys; urllib.request.urlopen('http://127.0.0.1:8080/healthz', timeout=2); sys.exit(0)"]
# SIGTERM drains (FASTAGENT_DRAIN_S, default 25 s): give the container more than that to stop.
STOPSIGNAL SIGTERM
ENTRYPOINT ["fastagent"]
CMD ["serve"]
