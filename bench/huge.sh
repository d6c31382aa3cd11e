#!/usr/bin/env bash
# bench/huge.sh: Arbor at scale on one machine, through the CLI, with the
# server and the client as separate processes.
#
#   bash bench/huge.sh [N] [WORKDIR]      # N defaults to 100000000 (10^8)
#
# Steps, each timed: build a server store of N records by 'arbor import'
# (example records, value padded to VALUE_SIZE bytes, default 100); serve
# it; clone it into a client store; stop the server and change D records
# (default 1000) on it; serve it again and sync the client; verify the
# client. It prints the import time, the clone and sync times, the peak RSS
# of the server (VmHWM, over the clone and the sync) and of each client
# command, and the disk bytes per record of both stores. Stores are NoSync
# only where arbor's CLI makes them so (it does not: every commit is
# durable). WORKDIR (default a new temporary directory) needs about 30
# bytes of disk per record for the text input and 150 per record for the
# two stores. Not part of .ci/run: at 10^8 it runs for tens of minutes.
set -euo pipefail

N=${1:-100000000}
WORK=${2:-$(mktemp -d)}
D=${D:-1000}
VALUE_SIZE=${VALUE_SIZE:-100}
mkdir -p "$WORK"
cd "$(dirname "$0")/.."
go build -o "$WORK/arbor" ./cmd/arbor
A=$WORK/arbor
S=$WORK/server
C=$WORK/client
rm -rf "$S" "$C" "$WORK/tls"
TOKEN=tok-huge-0123456789abcdef
printf '%s huge\n' "$TOKEN" > "$WORK/tokens"
export ARBOR_TOKEN=$TOKEN

now() { date +%s.%N; }
secs() { echo "$2 - $1" | bc; }
# rss CMD...: runs CMD under /usr/bin/time and prints its peak RSS in MiB on fd 3.
rss() {
	/usr/bin/time -f '%M' -o "$WORK/rss" "$@"
	echo $(($(cat "$WORK/rss") / 1024)) >&3
}
exec 3>"$WORK/rss.log"

echo "generating $N records of $VALUE_SIZE-byte values"
"$A" example --records "$N" --value-size "$VALUE_SIZE" > "$WORK/records.tsv"

t0=$(now)
rss "$A" --db "$S" import "$WORK/records.tsv" > /dev/null
t1=$(now)
IMPORT=$(secs "$t0" "$t1")
IMPORT_RSS=$(tail -1 "$WORK/rss.log")
rm "$WORK/records.tsv"
echo "import: ${IMPORT}s, peak RSS ${IMPORT_RSS} MiB"

serve() {
	env ${SERVE_ENV:-} "$A" --db "$S" ${SERVE_FLAGS:-} serve --listen 127.0.0.1:0 --tokens "$WORK/tokens" > "$WORK/serve.log" 2>&1 &
	SERVER=$!
	for _ in $(seq 600); do
		if grep -q '^fingerprint: ' "$WORK/serve.log"; then break; fi
		sleep 0.1
	done
	ADDR=$(sed -n 's/^listening on //p' "$WORK/serve.log")
	FP=$(sed -n 's/^fingerprint: //p' "$WORK/serve.log")
}
stop() {
	SERVER_RSS=$(($(awk '/VmHWM/ {print $2}' "/proc/$SERVER/status") / 1024))
	kill -INT "$SERVER"
	wait "$SERVER" || true
}

serve
t0=$(now)
rss "$A" --db "$C" sync --server "$ADDR" --fingerprint "$FP" > /dev/null
t1=$(now)
CLONE=$(secs "$t0" "$t1")
CLONE_RSS=$(tail -1 "$WORK/rss.log")
stop
CLONE_SERVER_RSS=$SERVER_RSS
echo "clone: ${CLONE}s, client peak RSS ${CLONE_RSS} MiB, server peak RSS ${CLONE_SERVER_RSS} MiB"

# D changes scattered over the key space, made on the server's store.
"$A" example --records "$N" --value-size "$VALUE_SIZE" --seed 2 | awk -v n="$N" -v d="$D" 'NR % int(n / d) == 1' > "$WORK/changes.tsv"
"$A" --db "$S" import "$WORK/changes.tsv" > /dev/null
serve
t0=$(now)
rss "$A" --db "$C" sync --server "$ADDR" --fingerprint "$FP" --json > "$WORK/sync.json"
t1=$(now)
SYNC=$(secs "$t0" "$t1")
SYNC_RSS=$(tail -1 "$WORK/rss.log")
stop
echo "sync of $(wc -l < "$WORK/changes.tsv") changes: ${SYNC}s, client peak RSS ${SYNC_RSS} MiB, server peak RSS ${SERVER_RSS} MiB"
cat "$WORK/sync.json"

t0=$(now)
rss "$A" --db "$C" verify > /dev/null
t1=$(now)
VERIFY=$(secs "$t0" "$t1")
VERIFY_RSS=$(tail -1 "$WORK/rss.log")
echo "verify: ${VERIFY}s, peak RSS ${VERIFY_RSS} MiB"

SB=$(du -sb "$S" | cut -f1)
CB=$(du -sb "$C" | cut -f1)
echo "disk: server $(echo "scale=1; $SB / $N" | bc) B/record, client $(echo "scale=1; $CB / $N" | bc) B/record"
SR=$("$A" --db "$S" root)
CR=$("$A" --db "$C" root)
if [ "$SR" != "$CR" ]; then
	echo "client root $CR differs from the server's $SR" >&2
	exit 1
fi
echo "roots equal: $SR"
