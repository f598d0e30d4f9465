# The platform on the official Ray image of the pinned Ray version (Python 3.11). CPU by default:
#   docker build -t stocktrend:0.1.0 .
# GPU (CUDA torch from PyPI's default index; pick the CUDA tag your nodes run):
#   docker build -t stocktrend:0.1.0-gpu --build-arg BASE_IMAGE=rayproject/ray:2.60.0-py311-cu128 \
#     --build-arg TORCH_INDEX=https://pypi.org/simple .
# Not built here (no container engine on the development machine): docs/deploy.md says what was checked.
ARG BASE_IMAGE=rayproject/ray:2.60.0-py311-cpu
FROM ${BASE_IMAGE}

# CPU wheels of torch unless told otherwise: a plain `pip install torch` pulls several GB of CUDA libraries.
ARG TORCH_INDEX=https://download.pytorch.org/whl/cpu
ARG TORCH_VERSION=2.13.0
RUN pip install --no-cache-dir --index-url ${TORCH_INDEX} torch==${TORCH_VERSION}

WORKDIR /home/ray/stocktrend
COPY --chown=ray:users pyproject.toml README.md ./
COPY --chown=ray:users stocktrend ./stocktrend
COPY --chown=ray:users serve_config.yaml cluster.yaml ./
# The base image's Ray is kept (the pinned version); everything else comes from pyproject.toml.
RUN pip install --no-cache-dir ".[s3]" && python -c "import stocktrend.cli, ray; assert ray.__version__ == '2.60.0', ray.__version__"

# Where the driver keeps its feature cache, Optuna study, reports and (without a tracking server) the MLflow store;
# mount a volume here (deploy/k8s/pvc.yaml). Checkpoints go to $STOCKTREND_STORAGE (S3) when set.
ENV STOCKTREND_HOME=/data/stocktrend \
    RAY_USAGE_STATS_ENABLED=0 \
    RAY_SERVE_ENABLE_HA_PROXY=1 \
    RAY_SERVE_THROUGHPUT_OPTIMIZED=1 \
    RAY_SERVE_HAPROXY_NBTHREAD=1
