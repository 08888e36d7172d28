# imagine on a GPU host. Weights are never baked in: they download into the /models volume on the first start
# (or copy them there), and the database and images live on /data. `docker compose up` uses this file.
# torch's CUDA wheels carry their own CUDA libraries; the host needs only the NVIDIA driver and container toolkit.
FROM python:3.11-slim-bookworm

ENV DEBIAN_FRONTEND=noninteractive PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 \
    IMAGINE_DATA_DIR=/data IMAGINE_MODELS_DIR=/models
# ffmpeg: the MP4 timelapse beside the animated WebP.
RUN apt-get update \
 && apt-get install -y --no-install-recommends ffmpeg ca-certificates \
 && rm -rf /var/lib/apt/lists/*

RUN useradd --create-home --uid 10001 imagine && mkdir -p /data /models /app \
 && chown imagine:imagine /data /models /app
WORKDIR /app
RUN python -m venv /opt/venv && chown -R imagine:imagine /opt/venv
ENV PATH=/opt/venv/bin:$PATH

USER imagine
RUN pip install torch==2.14.1 torchvision==0.29.1
COPY --chown=imagine:imagine pyproject.toml README.md .env.example ./
COPY --chown=imagine:imagine engine ./engine
COPY --chown=imagine:imagine bot ./bot
COPY --chown=imagine:imagine cogs ./cogs
COPY --chown=imagine:imagine storage ./storage
COPY --chown=imagine:imagine bench ./bench
RUN pip install .

VOLUME ["/data", "/models"]
# The token and settings come from the environment (env_file: .env in compose.yaml). The first start downloads
# the default models into /models; the start-up check then loads them before the bot logs in.
CMD ["sh", "-c", "python -m bot.firstrun && exec python -m bot"]
