# syntax=docker/dockerfile:1
#
# One image for every Perimeter service; the command picks the service:
#
#   docker build -t perimeter .
#   docker run perimeter python -m services.ingress
#   docker run perimeter python -m services.reputation
#   docker run perimeter python -m services.content
#   docker run perimeter python -m services.admin
#
# Configuration comes from the PERIMETER_* environment (SPEC §7). The
# process runs as uid 10001 and writes nothing outside /tmp, so the root
# filesystem can be mounted read-only.

FROM python:3.11-slim AS build

WORKDIR /src
COPY pyproject.toml ./
COPY shared ./shared
COPY services ./services
# Wheels for the package and its dependencies (no dev extras).
RUN pip wheel --no-cache-dir --wheel-dir /wheels .


FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

RUN groupadd --system --gid 10001 perimeter \
    && useradd --system --uid 10001 --gid 10001 --no-create-home \
       --home-dir /nonexistent --shell /usr/sbin/nologin perimeter

RUN --mount=type=bind,from=build,source=/wheels,target=/wheels \
    pip install --no-cache-dir --no-index --find-links=/wheels perimeter

USER 10001:10001

# SMTP, admin API, health and metrics.
EXPOSE 2525 8080 9100

# No default service: say how to pick one, instead of the base image's
# Python prompt.
CMD ["python", "-c", "raise SystemExit('choose a service: python -m services.ingress | services.reputation | services.content | services.admin')"]
