# The Spot image: one image, three commands (spot api | spot worker --shards N | spot batcher).
# Build: docker build -t spot . ; deploy by digest (see infra/terraform/README.md).

FROM python:3.11-slim AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
RUN python -m venv /opt/spot
# The build context is the repo minus what .dockerignore leaves out (tests, infra, caches).
COPY . .
# The lock pins the whole dependency tree, so every build resolves the same versions.
RUN /opt/spot/bin/pip install -c requirements.lock ".[mysql]"

FROM python:3.11-slim
# No .pyc writes: the pods run with a read-only root filesystem.
ENV PATH=/opt/spot/bin:$PATH PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1
COPY --from=build /opt/spot /opt/spot
# Migrations are not part of the package: store.db.alembic_ini() finds them here.
COPY --from=build /src/alembic.ini /opt/spot/share/spot/alembic.ini
COPY --from=build /src/alembic /opt/spot/share/spot/alembic
# The same non-root uid as runAsUser in infra/terraform/workloads.tf.
RUN useradd --uid 10001 --no-create-home --shell /usr/sbin/nologin spot
USER 10001
ENTRYPOINT ["spot"]
CMD ["api"]
