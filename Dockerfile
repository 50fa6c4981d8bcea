# bidsreg, the BIDS-App, in a container; the Singularity recipe builds from this image.
#
#   docker build -t bidsreg:0.1.0 .
#   docker run --rm -v /data/bids:/data:ro -v /data/out:/out bidsreg:0.1.0 /data /out participant --fixed sub-01
#
# Build arguments:
#   BASE_IMAGE       a Debian bookworm image (bookworm-slim is enough)
#   TORCH            the torch requirement, or the path of a wheel put into docker/extra/
#                    (seen in the build as /tmp/extra/<file>)
#   TORCH_INDEX_URL  where pip finds that torch: PyTorch's CPU wheels by default; "" for PyPI
#                    alone (a wheel file, or PyPI's x86_64 torch: a CUDA build of several GB)
#   PIP_CERT         a CA bundle put into docker/extra/ (/tmp/extra/<file>) for pip behind a
#                    TLS-intercepting proxy; "" for the image's own
#   BIDSREG_TAG      the image's tag, written into the outputs' GeneratedBy.Container (default:
#                    bidsreg's version, as in the commands above and the Singularity recipe)
ARG BASE_IMAGE=debian:bookworm-slim

FROM ${BASE_IMAGE} AS build
ARG TORCH="torch==2.13.0"
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu
ARG PIP_CERT=""
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
SHELL ["/bin/bash", "-o", "pipefail", "-c"]
# Debian's packages are not pinned (DL3008): a stable release's security updates are wanted.
# hadolint ignore=DL3008
RUN apt-get update \
    && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends python3 python3-venv ca-certificates \
    && rm -rf /var/lib/apt/lists/*
COPY docker/extra/ /tmp/extra/
RUN python3 -m venv /opt/venv \
    && /opt/venv/bin/pip install ${PIP_CERT:+--cert "$PIP_CERT"} \
       ${TORCH_INDEX_URL:+--index-url "$TORCH_INDEX_URL" --extra-index-url https://pypi.org/simple} "$TORCH"
COPY setup.cfg pyproject.toml README.md /src/
COPY bidsreg /src/bidsreg
RUN /opt/venv/bin/pip install ${PIP_CERT:+--cert "$PIP_CERT"} /src \
    && /opt/venv/bin/python -c "import bidsreg.data, torch; print('bidsreg', bidsreg.__version__, 'torch', torch.__version__)"

FROM ${BASE_IMAGE}
ARG BIDSREG_TAG=0.1.0
LABEL org.opencontainers.image.title="bidsreg" \
      org.opencontainers.image.description="Two-stage unsupervised CNN registration of 3D brain MRI, benchmarked against ANTs (BIDS-App)" \
      org.opencontainers.image.licenses="Apache-2.0"
# python3: the venv's interpreter; elastix: the bspline method.
# hadolint ignore=DL3008
RUN apt-get update \
    && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends python3 elastix \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --create-home --uid 1000 --shell /bin/bash bidsreg \
    && chmod a+rwx /home/bidsreg
COPY --from=build /opt/venv /opt/venv
COPY workflows /opt/bidsreg/workflows
# BIDSREG_CONTAINER fills GeneratedBy.Container of the derivatives. HOME is writable for any
# user (docker run --user); matplotlib's cache goes to /tmp, wherever HOME is.
ENV PATH=/opt/venv/bin:$PATH \
    BIDSREG_CONTAINER=bidsreg:${BIDSREG_TAG} \
    HOME=/home/bidsreg \
    MPLCONFIGDIR=/tmp/matplotlib \
    PYTHONDONTWRITEBYTECODE=1
USER 1000:1000
WORKDIR /home/bidsreg
ENTRYPOINT ["bidsreg"]
