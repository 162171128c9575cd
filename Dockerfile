# syntax=docker/dockerfile:1
# People's Response line: the Python application (FastAGI IVR, dispatcher, worker, panel,
# prompts), one image with the `peoples-response` command as entrypoint.
FROM python:3.11-slim

ARG DEBIAN_FRONTEND=noninteractive
# espeak-ng + sox: `peoples-response prompts render` turns the prompt catalog into audio.
RUN apt-get update \
 && apt-get install -y --no-install-recommends espeak-ng sox \
 && rm -rf /var/lib/apt/lists/*

# The source is copied whole (see .dockerignore), then installed as a package.
WORKDIR /usr/src/peoples-response
COPY . .
RUN pip install --no-cache-dir . \
 && rm -rf /usr/src/peoples-response

# Not root. The data directory exists in the image, owned by that user, so a named
# volume mounted on it (the rendered prompts) starts with the right owner.
RUN useradd --system --uid 10001 --user-group --home-dir /var/lib/peoples-response \
      --create-home --shell /usr/sbin/nologin peoples-response \
 && mkdir -p /var/lib/peoples-response/prompts /var/lib/peoples-response/recordings \
 && chown -R peoples-response:peoples-response /var/lib/peoples-response
ENV PR_VAR_DIR=/var/lib/peoples-response \
    PR_PROMPTS_DIR=/var/lib/peoples-response/prompts \
    PYTHONUNBUFFERED=1

USER peoples-response
WORKDIR /var/lib/peoples-response
EXPOSE 4573/tcp
ENTRYPOINT ["peoples-response"]
CMD ["--help"]
