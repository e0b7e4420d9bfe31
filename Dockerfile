# CPU image for `tailor serve` (OpenAI-compatible API). Not built in CI: there is no Docker engine there.
#
#   docker build -t tailor-serve .
#   docker run --rm -p 8000:8000 -v /path/to/model:/model:ro \
#       -v /path/to/keys.txt:/run/secrets/tailor_keys:ro tailor-serve \
#       /model --host 0.0.0.0 --port 8000 --api-keys-file /run/secrets/tailor_keys
#
# Mount adapters the same way and add `--adapter NAME=/adapters/NAME`. The model directory must hold
# safetensors weights and its tokenizer; nothing is downloaded at run time (HF_HUB_OFFLINE=1).
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 \
    HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TOKENIZERS_PARALLELISM=false

WORKDIR /app
# The CPU build of torch first (the default index would pull a multi-GB CUDA build), then tailor with the
# serve extra, pinned by constraints.txt.
RUN pip install --index-url https://download.pytorch.org/whl/cpu "torch==2.13.0"
COPY pyproject.toml constraints.txt README.md ./
COPY src ./src
RUN pip install -c constraints.txt ".[serve]"

# Run as an unprivileged user; the model is mounted read-only.
RUN useradd --create-home --uid 10001 tailor
USER tailor
EXPOSE 8000
HEALTHCHECK --interval=30s --timeout=5s --start-period=120s \
    CMD python -c "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/ready', timeout=4)"
ENTRYPOINT ["tailor", "serve"]
CMD ["/model", "--host", "0.0.0.0", "--port", "8000"]
