# The poller sidecar image: locked dependencies, non-root, exec-form entrypoint.
# Build from the repository root: docker build -f compose/poller.Dockerfile .
# HAPROXY_IMAGE: the HAProxy image your stack runs. Its own `haproxy` binary is what
# validates poller's configs (`haproxy -c`), so the keywords your version accepts are the
# ones poller accepts: docker build --build-arg HAPROXY_IMAGE=haproxy:3.0 ...
ARG HAPROXY_IMAGE=haproxy:2.6

FROM ${HAPROXY_IMAGE} AS haproxy
USER root
# The binary, every shared library it links and its own dynamic loader: it then runs in
# the python image whatever libc that has (3.0 built on Debian 13 runs over Debian 12).
RUN set -eu; bin="$(command -v haproxy)"; mkdir -p /validator/lib; \
    cp "$bin" /validator/haproxy; \
    ldd "$bin" | awk '$2 == "=>" && $3 ~ /^\// {print $3} $1 ~ /^\// {print $1}' \
      | while read -r lib; do cp -L "$lib" /validator/lib/; done; \
    loader="$(ldd "$bin" | awk '$1 ~ /^\// {print $1}')"; \
    printf '#!/bin/sh\nexec /opt/haproxy/lib/%s --library-path /opt/haproxy/lib /opt/haproxy/haproxy "$@"\n' \
      "$(basename "$loader")" > /validator/run; \
    chmod 755 /validator/run

FROM python:3.11-slim-bookworm AS build
WORKDIR /src
COPY requirements.lock pyproject.toml README.md ./
COPY poller ./poller
RUN python -m venv /opt/poller \
 && /opt/poller/bin/pip install --no-cache-dir -r requirements.lock \
 && /opt/poller/bin/pip install --no-cache-dir --no-deps .

FROM python:3.11-slim-bookworm
# setcap: the ARP pre-sweep needs CAP_NET_RAW, and a non-root user only gets it from a
# file capability (Docker grants no ambient capabilities); compose keeps NET_RAW alone in
# the bounding set (cap_drop: ALL, cap_add: NET_RAW), and without it poller falls back to
# the connect sweep.
RUN apt-get update \
 && apt-get install -y --no-install-recommends libcap2-bin \
 && setcap cap_net_raw+ep "$(readlink -f /usr/local/bin/python3)" \
 && apt-get purge -y libcap2-bin && apt-get autoremove -y \
 && rm -rf /var/lib/apt/lists/* \
 && groupadd --non-unique --gid 99 lbshare \
 && useradd --uid 10001 --gid lbshare --no-create-home --shell /usr/sbin/nologin poller \
 && install -d -o poller -g lbshare -m 2775 /usr/local/etc/haproxy /var/run/haproxy \
    /usr/local/etc/poller-backends \
 && install -d -o poller -g lbshare -m 0750 /var/lib/poller \
 && groupadd --system haproxy && useradd --system --gid haproxy --no-create-home \
    --shell /usr/sbin/nologin haproxy
# The stack's HAProxy, for `haproxy -c` only (a `user haproxy` line needs the user above).
COPY --from=haproxy /validator /opt/haproxy
RUN ln -s /opt/haproxy/run /usr/local/bin/haproxy && haproxy -v
COPY --from=build /opt/poller /opt/poller
COPY config/poller.yaml /etc/poller/poller.yaml
USER poller
ENV PATH=/opt/poller/bin:$PATH
EXPOSE 9345
HEALTHCHECK --interval=10s --timeout=3s --start-period=10s --retries=3 \
  CMD ["/opt/poller/bin/python", "-c", "import sys, urllib.request; sys.exit(0 if urllib.request.urlopen('http://127.0.0.1:9345/healthz', timeout=2).status == 200 else 1)"]
ENTRYPOINT ["/opt/poller/bin/poller"]
CMD ["run", "--config", "/etc/poller/poller.yaml"]
