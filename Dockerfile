# The voicemesh image: every part (edge, dns, transceiver, agent) from one versioned artifact.
# Build: docker build -t <repository>:<version> .   Run: docker run <image> edge --config ...
FROM python:3.11-slim-bookworm AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY edge edge
COPY core core
COPY registry registry
COPY voicemesh voicemesh
RUN pip wheel --no-cache-dir --wheel-dir /wheels .

FROM python:3.11-slim-bookworm
COPY --from=build /wheels /wheels
# libopus0: the transceiver's PCM16 codec (opuslib-next loads the system libopus).
RUN apt-get update && apt-get install -y --no-install-recommends libopus0 && rm -rf /var/lib/apt/lists/* \
    && pip install --no-cache-dir /wheels/*.whl && rm -rf /wheels \
    && useradd --system --uid 10001 --no-create-home voicemesh
USER 10001
ENTRYPOINT ["voicemesh"]
CMD ["--help"]
