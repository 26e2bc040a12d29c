# tokenmeter-proxy: a slim, non-root image. Build: docker build -t tokenmeter-proxy .
# Run:  docker run -p 8080:8080 -e TOKENMETER_ADMIN_TOKEN=... -v tokenmeter:/data tokenmeter-proxy
FROM python:3.11-slim AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY src ./src
COPY migrations ./migrations
COPY config ./config
RUN pip wheel --no-cache-dir --no-deps --wheel-dir /wheels .

FROM python:3.11-slim
# No secret here: hadolint flags the TOKENMETER_ prefix by name. Secrets come at run time.
# hadolint ignore=DL3064
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    TIKTOKEN_CACHE_DIR=/opt/tiktoken \
    TOKENMETER_HOST=0.0.0.0 \
    TOKENMETER_PORT=8080 \
    TOKENMETER_DATABASE_URL=sqlite:////data/tokenmeter.db \
    TOKENMETER_PRICING=/app/config/pricing.yaml
COPY --from=build /wheels /wheels
# The tokenizer vocabularies are put in place at build time, so the container never downloads them.
RUN pip install --no-cache-dir "$(ls /wheels/tokenmeter_proxy-*.whl)[postgres]" \
    && rm -rf /wheels \
    && python -c "from pathlib import Path; from tokenmeter_proxy.tokens import prime_offline_cache; prime_offline_cache(Path('/opt/tiktoken'))" \
    && useradd --create-home --uid 10001 tokenmeter \
    && mkdir -p /data /app/config \
    && chown tokenmeter /data
COPY config/pricing.yaml /app/config/pricing.yaml
WORKDIR /app
USER 10001
VOLUME ["/data"]
EXPOSE 8080
HEALTHCHECK --interval=10s --timeout=3s --start-period=20s \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8080/healthz', timeout=2)"]
# migrate is idempotent; exec makes the proxy PID 1, so SIGTERM reaches it and it drains gracefully.
CMD ["sh", "-c", "tokenmeter-proxy migrate && exec tokenmeter-proxy serve"]
