FROM python:3.11-slim
WORKDIR /app
# The district's time: logs and anything local-time read as Shanghai's clocks do.
ENV TZ=Asia/Shanghai
# `linli dashboards picture` writes the screen's Chinese in Noto Sans CJK; tzdata makes TZ a zone
# rather than a silent UTC.
RUN apt-get update && apt-get install -y --no-install-recommends fonts-noto-cjk tzdata \
    && rm -rf /var/lib/apt/lists/*
COPY pyproject.toml README.md constraints.txt ./
# The one source tree: every package the distribution holds, the cloud and dashboards too.
COPY src src
# The central services and the dashboards too: one image runs every part of the stack.
RUN pip install --no-cache-dir -c constraints.txt '.[cloud,dashboards]' && useradd --system linli \
    && mkdir -p /var/lib/linli && chown linli /var/lib/linli
# The durable buffer's folder: a volume keeps it across container restarts.
VOLUME /var/lib/linli
USER linli
ENTRYPOINT ["linli"]
