# Syncwarden's image: the wheel and the locked dependencies, run as an unprivileged user.
# Build from a checkout: docker build -t syncwarden .
# The Python minor version matches the one requirements.lock was compiled with.

FROM python:3.11-slim AS build
WORKDIR /src
COPY . .
RUN python -m pip install --no-cache-dir --quiet build \
    && python -m build --wheel --outdir /dist .

FROM python:3.11-slim
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PATH=/opt/syncwarden/bin:$PATH \
    SYNCWARDEN_MODE=production \
    SYNCWARDEN_HTTP__HOST=0.0.0.0 \
    SYNCWARDEN_LOG__FORMAT=json
RUN useradd --system --uid 10001 --home-dir /var/lib/syncwarden --create-home syncwarden
COPY --from=build /dist/ /tmp/dist/
COPY requirements.lock /tmp/requirements.lock
# The same install command as the wheel smoke test (tests/packaging/test_wheel.py).
RUN python -m venv /opt/syncwarden \
    && /opt/syncwarden/bin/python -m pip install --quiet --constraint /tmp/requirements.lock /tmp/dist/syncwarden-*.whl \
    && rm -rf /tmp/dist /tmp/requirements.lock /root/.cache
USER syncwarden
WORKDIR /var/lib/syncwarden
EXPOSE 3978
HEALTHCHECK --interval=30s --timeout=5s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import os, sys, urllib.request; port = os.environ.get('SYNCWARDEN_HTTP__PORT', '3978'); sys.exit(urllib.request.urlopen(f'http://127.0.0.1:{port}/healthz', timeout=4).status != 200)"]
ENTRYPOINT ["syncwarden"]
CMD ["serve"]
