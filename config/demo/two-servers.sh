#!/usr/bin/env bash
# Two federated Confab homeservers on loopback, without Docker: "alpha" and "beta", each with its
# own embedded Postgres under $DEMO_DIR, talking to each other over plain HTTP on 127.0.0.1 (which
# `federation.allow_insecure_http` and `allow_private_addresses` permit, for demos only).
#
#   config/demo/two-servers.sh           start both, prove they federate, print their URLs, and
#                                        run until Ctrl-C / SIGTERM, which stops both cleanly
#   config/demo/two-servers.sh --check   the same, then stop both and exit (0 = they federate)
#
# Environment: CONFAB_BIN (default target/release/confab; `make demo` builds it), DEMO_DIR
# (default data/demo; keeps each server's config, data directory and log), ALPHA_PORT (8018),
# BETA_PORT (8028), ALPHA_ADMIN_PORT (9018) and BETA_ADMIN_PORT (9028) for their admin
# listeners (admin API and metrics, on loopback), WEB_CLIENT_DIR (default web-client/dist).
set -euo pipefail

mode=run
case "${1:-}" in
  "") ;;
  --check) mode=check ;;
  *) echo "usage: $0 [--check]" >&2; exit 2 ;;
esac

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
bin=${CONFAB_BIN:-$repo/target/release/confab}
demo=${DEMO_DIR:-$repo/data/demo}
web=${WEB_CLIENT_DIR:-$repo/web-client/dist}
declare -A port=([alpha]=${ALPHA_PORT:-8018} [beta]=${BETA_PORT:-8028})
declare -A admin_port=([alpha]=${ALPHA_ADMIN_PORT:-9018} [beta]=${BETA_ADMIN_PORT:-9028})
declare -A pid=()

[ -x "$bin" ] || { echo "no confab binary at $bin (cargo build --release -p confab, or set CONFAB_BIN)" >&2; exit 1; }
command -v curl >/dev/null || { echo "curl is needed to check /health" >&2; exit 1; }

stop_all() {
  local name
  for name in "${!pid[@]}"; do kill -TERM "${pid[$name]}" 2>/dev/null || true; done
  # The servers stop their embedded Postgres on SIGTERM; wait so nothing is left behind.
  for name in "${!pid[@]}"; do wait "${pid[$name]}" 2>/dev/null || true; done
  pid=()
}
trap stop_all EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

mkdir -p "$demo"
# Started as root, each server runs its Postgres as an unprivileged user, who must reach the folder.
[ "$(id -u)" != 0 ] || chmod 0711 "$demo"

for name in alpha beta; do
  p=${port[$name]}
  mkdir -p "$demo/$name"
  [ "$(id -u)" != 0 ] || chmod 0711 "$demo/$name"
  # A config file per server, so `confab federation … --config` can act as that server too.
  cat >"$demo/$name.toml" <<TOML
# Written by config/demo/two-servers.sh: a loopback demo server, not for production.
[server]
name = "127.0.0.1:$p"
listen = "127.0.0.1:$p"
public_url = "http://127.0.0.1:$p"
data_dir = "$demo/$name"
web_client_dir = "$web"

[admin]
# Admin API and metrics; \`confab admin --config $demo/$name.toml …\` talks to it.
listen = "127.0.0.1:${admin_port[$name]}"

[federation]
allow_insecure_http = true
allow_private_addresses = true
TOML
  "$bin" serve --config "$demo/$name.toml" >"$demo/$name.log" 2>&1 &
  pid[$name]=$!
done

for name in alpha beta; do
  url="http://127.0.0.1:${port[$name]}"
  # Bounded poll: a first start runs initdb, which takes a few seconds.
  for _ in $(seq 1 600); do
    curl -fsS -o /dev/null "$url/health" 2>/dev/null && continue 2
    if ! kill -0 "${pid[$name]}" 2>/dev/null; then
      echo "$name exited; its log ($demo/$name.log):" >&2
      tail -n 20 "$demo/$name.log" >&2
      exit 1
    fi
    sleep 0.1
  done
  echo "$name did not answer $url/health within 60 s; see $demo/$name.log" >&2
  exit 1
done

# Each signs a request to the other with its own key; the other verifies it (fetching the key)
# and answers with the origin's name.
for pair in "alpha beta" "beta alpha"; do
  read -r from to <<<"$pair"
  if ! answer=$("$bin" federation request --config "$demo/$from.toml" --to "127.0.0.1:${port[$to]}" \
      --method GET --path /_confab/federation/v1/ping 2>&1); then
    echo "$from -> $to federation ping failed:" >&2
    echo "$answer" >&2
    exit 1
  fi
  echo "$from -> $to: federation ping answered"
done

echo "alpha: http://127.0.0.1:${port[alpha]}  (server name 127.0.0.1:${port[alpha]}; admin and metrics on 127.0.0.1:${admin_port[alpha]})"
echo "beta:  http://127.0.0.1:${port[beta]}  (server name 127.0.0.1:${port[beta]}; admin and metrics on 127.0.0.1:${admin_port[beta]})"
echo "configs, data and logs: $demo"

if [ "$mode" = check ]; then
  echo "the two servers federate; stopping them"
  exit 0
fi
echo "press Ctrl-C to stop both"
# Returns when either server exits (or a signal arrives, which the traps turn into a clean stop).
wait -n "${pid[alpha]}" "${pid[beta]}"
echo "a server exited on its own; stopping the other" >&2
exit 1
