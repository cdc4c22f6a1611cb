FROM python:3.11-slim
WORKDIR /app
COPY pyproject.toml README.md ./
COPY pipeline pipeline
COPY processors processors
COPY schemas schemas
COPY deploy deploy
RUN pip install --no-cache-dir -e .
ENTRYPOINT ["callcharge"]
