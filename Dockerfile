# One image for every process of the stack (web, capture, workers, beat, flower).
FROM node:20-bookworm-slim AS assets
WORKDIR /src
COPY package.json package-lock.json ./
RUN npm ci --no-audit --no-fund --loglevel=error

FROM python:3.11-slim-bookworm
# TARGET=cpu (default): OpenVINO and ONNX Runtime on the CPU. TARGET=gpu adds TensorRT and ONNX
# Runtime's CUDA provider (requirements-gpu.txt); torch from requirements.txt already has CUDA.
ARG TARGET=cpu
ENV PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 TRAFFIC_MODEL_CACHE=/app/var/models
RUN apt-get update \
 && apt-get install -y --no-install-recommends libgl1 libglib2.0-0 ffmpeg \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /app
COPY requirements.txt requirements-nodeps.txt requirements-gpu.txt ./
RUN pip install -r requirements.txt && pip install --no-deps -r requirements-nodeps.txt \
 && if [ "$TARGET" = gpu ]; then pip uninstall -y onnxruntime && pip install -r requirements-gpu.txt; fi
COPY --from=assets /src/node_modules ./node_modules
COPY . .
RUN pip install --no-deps -e . && useradd --create-home --uid 10001 traffic \
 && mkdir -p /app/var/models /app/var/evidence && chown -R traffic /app/var
USER traffic
EXPOSE 5000
CMD ["gunicorn", "-w", "1", "--threads", "100", "-b", "0.0.0.0:5000", "web.wsgi:app"]
