# Multi-stage build: compile with autotools, run on a slim Debian.
FROM debian:12 AS build
RUN apt-get update && apt-get install -y --no-install-recommends \
        gcc make autoconf automake pkg-config python3 \
        libevent-dev libpq-dev libjson-c-dev libssl-dev libcmocka-dev npm \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
# Swagger UI for /docs (a no-op when the context has this version already);
# make install puts it in /usr/local/share/paymentsd/swagger-ui.
RUN scripts/swagger-ui.sh vendor/swagger-ui \
    && autoreconf -fi && ./configure --prefix=/usr/local && make -j"$(nproc)" && make install

FROM debian:12-slim
RUN apt-get update && apt-get install -y --no-install-recommends \
        libevent-2.1-7 libevent-core-2.1-7 libevent-openssl-2.1-7 libpq5 libjson-c5 libssl3 curl \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --home /var/lib/paymentsd paymentsd \
    && mkdir -p /var/lib/paymentsd/var && chown -R paymentsd /var/lib/paymentsd
COPY --from=build /usr/local/bin/ /usr/local/bin/
COPY --from=build /usr/local/share/paymentsd/ /usr/local/share/paymentsd/
COPY conf/ /etc/paymentsd/
USER paymentsd
WORKDIR /var/lib/paymentsd
EXPOSE 8000 8001
# Logs to stderr/stdout; settings come from the environment (PAYMENTSD_*).
# The conf's relative paths would be under /etc: the pid file goes here.
ENV PAYMENTSD_ERROR_LOG=stderr PAYMENTSD_ACCESS_LOG=stdout \
    PAYMENTSD_PID_FILE=/var/lib/paymentsd/var/paymentsd.pid \
    PAYMENTSD_DOCS_ROOT=/usr/local/share/paymentsd/swagger-ui
# docker stop sends SIGQUIT: paymentsd's graceful stop (in-flight requests
# finish, within worker_shutdown_timeout); provider-sim stops on it too.
# Give the container longer than that before SIGKILL (docker-compose.yml:
# stop_grace_period; docker stop -t).
STOPSIGNAL SIGQUIT
# One image for both programs: this runs paymentsd; provider-sim is
# `provider-sim -c /etc/paymentsd/provider-sim.conf`.
CMD ["paymentsd", "-c", "/etc/paymentsd/paymentsd.conf"]
