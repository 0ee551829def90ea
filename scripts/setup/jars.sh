#!/usr/bin/env bash
# Fetch the official Kafka, MirrorMaker 2 (Kafka's connect-mirror) and Cassandra jars (with their
# runtime dependencies) and the Prometheus JMX exporter agent from Maven Central into
# $OPSCTL_CACHE_DIR/jars/<name>-<version>/ for the local stack (opsctl local up).
# Idempotent: a stamp file per directory makes a second run a no-op that takes milliseconds.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
# shellcheck source=jars/versions.env
source "$here/jars/versions.env"
cache=${OPSCTL_CACHE_DIR:-$root/.cache}
jars=$cache/jars

# name version groupId artifactId [extra groupId:artifactId:version ...]
# Kafka's pom leaves out the SLF4J binding its distribution ships, without which it logs nothing,
# and its tools (kafka-tools: partition reassignment, for the kafka-partition-leaderless drill),
# whose other dependencies kafka_2.13 already brings.
# MirrorMaker 2 (org.apache.kafka.connect.mirror.MirrorMaker, for the multi-region local stack)
# is the distribution's connect-mirror jar with connect-runtime and friends, at Kafka's version;
# its pom brings neither an SLF4J binding nor log4j itself, so all three are added.
log4j=org.apache.logging.log4j
wanted=(
  "kafka $KAFKA_VERSION org.apache.kafka kafka_2.13 org.apache.logging.log4j:log4j-slf4j-impl:$KAFKA_LOG4J_VERSION org.apache.kafka:kafka-tools:$KAFKA_VERSION"
  "connect-mirror $KAFKA_VERSION org.apache.kafka connect-mirror $log4j:log4j-slf4j-impl:$KAFKA_LOG4J_VERSION $log4j:log4j-api:$KAFKA_LOG4J_VERSION $log4j:log4j-core:$KAFKA_LOG4J_VERSION"
  "cassandra $CASSANDRA_VERSION org.apache.cassandra cassandra-all"
  "jmx-exporter $JMX_EXPORTER_VERSION io.prometheus.jmx jmx_prometheus_javaagent"
)

run_mvn() {
  local staging=$1
  shift
  if ! "$@" >"$staging.log" 2>&1; then
    echo "setup: mvn failed ($*); last lines of $staging.log:" >&2
    tail -n 20 "$staging.log" >&2
    exit 1
  fi
}

fetch() {
  local name=$1 version=$2 group=$3 artifact=$4
  shift 4
  local dest=$jars/$name-$version
  # The stamp names what was fetched, so changing an extra artifact fetches again.
  local want="$group:$artifact:$version $*"
  [[ -f $dest/.complete && "$(<"$dest/.complete")" == "$want" ]] && return 0
  command -v mvn >/dev/null || { echo "setup: mvn is required (apt-get install maven)" >&2; exit 1; }
  echo "setup: fetching $group:$artifact:$version from Maven Central"
  local staging=$dest.partial
  rm -rf "$staging"
  mkdir -p "$staging"
  # The Maven repository lives in the project cache too, so nothing lands in ~/.m2.
  local mvn=(mvn -q -B -f "$here/jars/pom.xml" -Dmaven.repo.local="$cache/maven/repository"
    -Djar.groupId="$group" -Djar.artifactId="$artifact" -Djar.version="$version")
  run_mvn "$staging" "${mvn[@]}" dependency:copy-dependencies \
    -DincludeScope=runtime -DoutputDirectory="$staging"
  local extra
  for extra in "$@"; do
    run_mvn "$staging" "${mvn[@]}" dependency:copy -Dartifact="$extra" \
      -DoutputDirectory="$staging"
  done
  [[ -f $staging/$artifact-$version.jar ]] \
    || { echo "setup: $artifact-$version.jar missing after mvn (see $staging.log)" >&2; exit 1; }
  printf '%s\n' "$want" >"$staging/.complete"
  rm -rf "$dest" "$staging.log"
  mv "$staging" "$dest"
  echo "setup: $name $version ready ($(find "$dest" -name '*.jar' | wc -l) jars)"
}

for entry in "${wanted[@]}"; do
  # shellcheck disable=SC2086
  fetch $entry
done
echo "setup: jars present (kafka and connect-mirror $KAFKA_VERSION, cassandra $CASSANDRA_VERSION," \
  "jmx exporter $JMX_EXPORTER_VERSION)"
