# imagine on a GPU host. Weights are never baked in: mount them at /models (python -m engine.models download
# --dir /models ...) and keep the database and images on /data.
FROM nvidia/cuda:12.8.1-cudnn-runtime-ubuntu24.04

ENV DEBIAN_FRONTEND=noninteractive PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 \
    IMAGINE_DATA_DIR=/data IMAGINE_MODELS_DIR=/models
RUN apt-get update \
 && apt-get install -y --no-install-recommends python3.11 python3.11-venv ca-certificates \
 && rm -rf /var/lib/apt/lists/*

RUN useradd --create-home --uid 10001 imagine && mkdir -p /data /models /app \
 && chown imagine:imagine /data /models /app
WORKDIR /app
RUN python3.11 -m venv /opt/venv && chown -R imagine:imagine /opt/venv
ENV PATH=/opt/venv/bin:$PATH

USER imagine
COPY --chown=imagine:imagine pyproject.toml README.md ./
COPY --chown=imagine:imagine engine ./engine
COPY --chown=imagine:imagine bot ./bot
COPY --chown=imagine:imagine cogs ./cogs
COPY --chown=imagine:imagine storage ./storage
COPY --chown=imagine:imagine bench ./bench
RUN pip install torch==2.14.1 torchvision==0.29.1 && pip install .

VOLUME ["/data", "/models"]
# The token and settings come from the environment (docker run --env-file .env ...).
CMD ["python", "-m", "bot"]
