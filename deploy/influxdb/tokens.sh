#!/bin/sh
# Scoped InfluxDB tokens for linli's services, made once with the admin token, each written to
# a volume only its own service mounts: the edge writes the bucket, Grafana reads it, the waste
# service and its rollups read and write it. The admin token stays with the admin.
set -eu
if [ -s /tokens/edge/influx.env ] && [ -s /tokens/grafana/token ] && [ -s /tokens/waste/influx.env ]; then
    echo "linli tokens: already made"
    exit 0
fi
bucket=$(influx bucket list --name "${LINLI_BUCKET:-linli}" --hide-headers | cut -f1)
[ -n "$bucket" ] || { echo "linli tokens: no bucket ${LINLI_BUCKET:-linli}" >&2; exit 1; }

token() {  # description, then the permissions
    description=$1
    shift
    influx auth create --description "$description" "$@" --json |
        sed -n 's/^[[:space:]]*"token":[[:space:]]*"\([^"]*\)".*/\1/p'
}

umask 022  # each file is readable by its service's user; each volume is mounted by one service
mkdir -p /tokens/edge /tokens/grafana /tokens/waste
edge=$(token "linli edge: write ${LINLI_BUCKET:-linli}" --write-bucket "$bucket")
grafana=$(token "grafana: read ${LINLI_BUCKET:-linli}" --read-bucket "$bucket")
waste=$(token "linli waste: read and write ${LINLI_BUCKET:-linli}" --read-bucket "$bucket" --write-bucket "$bucket")
for t in "$edge" "$grafana" "$waste"; do
    [ -n "$t" ] || { echo "linli tokens: influx auth create gave no token" >&2; exit 1; }
done
printf 'LINLI_INFLUX_TOKEN=%s\n' "$edge" > /tokens/edge/influx.env
printf '%s' "$grafana" > /tokens/grafana/token
printf 'LINLI_INFLUX_TOKEN=%s\n' "$waste" > /tokens/waste/influx.env
echo "linli tokens: made (edge write-only, grafana read-only, waste read-write)"
