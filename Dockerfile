FROM python:3.11-slim
WORKDIR /app
COPY pyproject.toml README.md ./
COPY catalog catalog
COPY edge edge
COPY firmware-sim firmware-sim
RUN pip install --no-cache-dir . && useradd --system linli
USER linli
ENTRYPOINT ["linli"]
