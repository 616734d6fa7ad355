#!/usr/bin/env bash
# Measures errand dev start-up (exec → /healthz 200) and RSS.
set -u
BIN=${BIN:-/tmp/errand}; PORT=${PORT:-18090}; DIR=$(mktemp -d)
for i in 1 2 3 4 5; do
  rm -f $DIR/dev.db*
  start=$(date +%s%N)
  $BIN dev --listen 127.0.0.1:$PORT --db $DIR/dev.db >/dev/null 2>&1 &
  pid=$!
  until curl -sf http://127.0.0.1:$PORT/healthz >/dev/null; do sleep 0.005; done
  end=$(date +%s%N)
  echo "start-up $(( (end-start)/1000000 )) ms, RSS idle $(grep VmRSS /proc/$pid/status | awk '{print $2}') kB"
  if [ $i = 5 ]; then
    export ERRAND_SERVER=http://127.0.0.1:$PORT E=$BIN
    A=$($E dev token --kind agent --sub a); U=$($E dev token --kind user --sub alice --group eng); R=$($E dev token --kind resource --sub r)
    T=$($E task create -q --token $A --on-behalf-of alice --goal g --scope 'github.repo.read:acme/**' --audience https://api.github.com)
    $E task approve $T --yes --token $U >/dev/null
    for j in $(seq 1 90); do $E token mint $T -q --token $A --scope github.repo.read:acme/x --audience https://api.github.com >/dev/null; done
    echo "after 90 mints through the CLI: RSS $(grep VmRSS /proc/$pid/status | awk '{print $2}') kB, peak $(grep VmHWM /proc/$pid/status | awk '{print $2}') kB"
  fi
  kill $pid; wait $pid 2>/dev/null
done
rm -rf $DIR
