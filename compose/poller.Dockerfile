# The poller sidecar image: locked dependencies, non-root, exec-form entrypoint.
# Build from the repository root: docker build -f compose/poller.Dockerfile .

FROM python:3.11-slim-bookworm AS build
WORKDIR /src
COPY requirements.lock pyproject.toml README.md ./
COPY poller ./poller
RUN python -m venv /opt/poller \
 && /opt/poller/bin/pip install --no-cache-dir -r requirements.lock \
 && /opt/poller/bin/pip install --no-cache-dir --no-deps .

FROM python:3.11-slim-bookworm
# haproxy: only its binary, for `haproxy -c` before anything is installed. Bookworm ships
# 2.6, the same major version as the haproxy:2.6 service it validates for.
# setcap: the ARP pre-sweep needs CAP_NET_RAW, and a non-root user only gets it from a
# file capability (Docker grants no ambient capabilities); compose keeps NET_RAW alone in
# the bounding set (cap_drop: ALL, cap_add: NET_RAW), and without it poller falls back to
# the connect sweep.
RUN apt-get update \
 && apt-get install -y --no-install-recommends haproxy libcap2-bin \
 && setcap cap_net_raw+ep "$(readlink -f /usr/local/bin/python3)" \
 && apt-get purge -y libcap2-bin && apt-get autoremove -y \
 && rm -rf /var/lib/apt/lists/* \
 && groupadd --non-unique --gid 99 lbshare \
 && useradd --uid 10001 --gid lbshare --no-create-home --shell /usr/sbin/nologin poller \
 && install -d -o poller -g lbshare -m 2775 /usr/local/etc/haproxy /var/run/haproxy \
    /usr/local/etc/poller-backends \
 && install -d -o poller -g lbshare -m 0750 /var/lib/poller
COPY --from=build /opt/poller /opt/poller
COPY config/poller.yaml /etc/poller/poller.yaml
USER poller
ENV PATH=/opt/poller/bin:$PATH
EXPOSE 9345
HEALTHCHECK --interval=10s --timeout=3s --start-period=10s --retries=3 \
  CMD ["/opt/poller/bin/python", "-c", "import sys, urllib.request; sys.exit(0 if urllib.request.urlopen('http://127.0.0.1:9345/healthz', timeout=2).status == 200 else 1)"]
ENTRYPOINT ["/opt/poller/bin/poller"]
CMD ["run", "--config", "/etc/poller/poller.yaml"]
