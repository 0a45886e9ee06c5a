#!/usr/bin/env bash
# Runs a Nix build in a CI job with an oranc cache on both sides:
#   1. `oranc server` on 127.0.0.1 serves the cache, and the build uses it as a substituter;
#   2. `oranc watch-store` pushes every path the build makes, signed;
#   3. after the build, watch-store is stopped with SIGTERM, which drains its queue.
#
# Usage: ci-build-with-cache.sh BUILD-COMMAND...   e.g.  ci-build-with-cache.sh nix build .#app
#
# Environment (put the secrets in your CI's secret store):
#   ORANC_REGISTRY, ORANC_REPOSITORY   where the cache lives (e.g. ghcr.io, me/cache)   required
#   ORANC_SIGNING_KEY                  the secret key, as `nix key generate-secret` prints it   required
#   ORANC_PUBLIC_KEY                   its public half (`nix key convert-secret-to-public`)   required
#   ORANC_USERNAME, ORANC_PASSWORD     registry credentials (for ghcr.io: the actor and GITHUB_TOKEN)
#   ORANC                              the oranc binary [oranc]
#   ORANC_PORT                         the local server's port [8080]
#   ORANC_NO_SSL=1                     plain HTTP to the registry (a registry on localhost)
#
# The exit status is the build's when it failed, else watch-store's (non-zero when a path
# could not be pushed). The substituter is passed through NIX_CONFIG as extra-substituters,
# which Nix honours for root and for trusted-users only (the GitHub runner is one with the
# usual install actions).
set -euo pipefail

: "${ORANC_REGISTRY:?set ORANC_REGISTRY}" "${ORANC_REPOSITORY:?set ORANC_REPOSITORY}"
: "${ORANC_SIGNING_KEY:?set ORANC_SIGNING_KEY}" "${ORANC_PUBLIC_KEY:?set ORANC_PUBLIC_KEY}"
[ $# -gt 0 ] || { echo "usage: $0 BUILD-COMMAND..." >&2; exit 2; }
oranc=${ORANC:-oranc}
port=${ORANC_PORT:-8080}
export ORANC_REGISTRY ORANC_REPOSITORY ORANC_SIGNING_KEY

work=$(mktemp -d)
server_pid= watch_pid=
cleanup() {
    [ -z "$watch_pid" ] || kill -KILL "$watch_pid" 2>/dev/null || true
    [ -z "$server_pid" ] || kill -TERM "$server_pid" 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT

# 1. The cache as a substituter: a named cache, so the credentials stay in the server.
{
    echo "listen = \"127.0.0.1:$port\""
    echo "[registries.\"$ORANC_REGISTRY\"]"
    if [ -n "${ORANC_NO_SSL:-}" ]; then echo "plain_http = true"; fi
    echo "[caches.ci]"
    echo "registry = \"$ORANC_REGISTRY\""
    echo "repository = \"$ORANC_REPOSITORY\""
    if [ -n "${ORANC_USERNAME:-}" ]; then
        echo "username = \"$ORANC_USERNAME\""
        echo "password_env = \"ORANC_PASSWORD\""
    fi
} > "$work/oranc.toml"
"$oranc" server --config "$work/oranc.toml" 2> "$work/server.log" &
server_pid=$!
for _ in $(seq 300); do
    curl -sf "http://127.0.0.1:$port/readyz" > /dev/null && break
    kill -0 "$server_pid" 2>/dev/null || { cat "$work/server.log" >&2; exit 1; }
    sleep 0.1
done

# 2. Push what the build makes, from the moment watch-store has looked at the store.
"$oranc" watch-store ${ORANC_NO_SSL:+--no-ssl} 2> >(tee "$work/watch.log" >&2) &
watch_pid=$!
until grep -q '^watching' "$work/watch.log" 2>/dev/null; do
    kill -0 "$watch_pid" 2>/dev/null || { wait "$watch_pid"; exit 1; }
    sleep 0.1
done

# 3. Build with the cache as a substituter.
build_status=0
NIX_CONFIG="${NIX_CONFIG:-}
extra-substituters = http://127.0.0.1:$port/ci
extra-trusted-public-keys = $ORANC_PUBLIC_KEY" "$@" || build_status=$?

# 4. Drain: SIGTERM makes watch-store push what is left and exit.
push_status=0
kill -TERM "$watch_pid"
wait "$watch_pid" || push_status=$?
watch_pid=
[ "$build_status" -eq 0 ] || exit "$build_status"
exit "$push_status"
