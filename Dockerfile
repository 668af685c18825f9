# One image for every gateway process; docker-compose.yml picks the process with `command`.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /app

# Dependencies first, from pyproject alone, so a code change rebuilds only the layers below.
COPY pyproject.toml ./
RUN python -c "import tomllib; print('\n'.join(tomllib.load(open('pyproject.toml', 'rb'))['project']['dependencies']))" \
        > /tmp/requirements.txt \
    && pip install -r /tmp/requirements.txt \
    && rm /tmp/requirements.txt

COPY . .
RUN pip install --no-deps . \
    && rm -rf build ./*.egg-info \
    && useradd --system --uid 10001 --no-create-home --shell /usr/sbin/nologin gateway \
    && mkdir -p /app/.gateway /certs /var/lib/gateway/spool /keys \
    && chown gateway:gateway /app/.gateway /certs /var/lib/gateway/spool /keys

# The code stays root-owned and read-only to the service; only .gateway (embedded-default files
# such as the demo key and SQLite databases) is writable, /certs, which compose's one-shot certs
# service fills, and /var/lib/gateway/spool, the routers' usage spools (a fresh named volume takes
# the owner of the image's mount point).
USER gateway

EXPOSE 8080 50051 50052 50053 50054 50055
CMD ["python", "-m", "edge"]
