#!/usr/bin/env bash
# Fetch pinned upstream CustomResourceDefinitions into $OPSCTL_CACHE_DIR/crds/<project>-<version>/
# through a package registry: the Go module proxy (each project's module zip carries its CRD
# manifests) or Maven Central (Strimzi). The files are copied exactly as published: never edit or
# hand-write a CRD. opsctl/cluster/crds.py finds and installs them. Versions: tools/go/versions.env.
# A warm run (every directory stamped complete) does no network work and takes milliseconds.
# Usage: crds.sh [project ...]  (default: every project)
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
# shellcheck source=../../tools/go/versions.env
source "$root/tools/go/versions.env"
cache=${OPSCTL_CACHE_DIR:-$root/.cache}
crds=$cache/crds

# project | version | how to fetch | where | directory inside it | file glob, or "kustomize"
# ("kustomize": the directory is a kustomization; its `kubectl kustomize` output is what the
# project installs, written to kustomize-build.yaml).
# "gomod": a Go module path, downloaded with `go mod download` from the module proxy and checked
#   against sum.golang.org as usual.
# "gomod-nosumdb": the same without the checksum database, which refuses modules whose go.mod
#   declares another path; the copied files must then match the sha256 pins below.
# "maven": groupId:artifactId:type:classifier on Maven Central, resolved with mvn (strict
#   checksums) into the project's Maven repository; the directory is read from inside the jar.
# Prometheus Operator: example/prometheus-operator-crd is the released set (one storage version
# per CRD, no conversion webhook); the -full variant needs the operator's webhook.
# cert-manager: deploy/crds holds plain controller-gen output; the chart's templated copies only
# add labels and annotations (same spec).
# cass-operator: config/crd/bases is controller-gen output that its kustomization patches (e.g.
# spec.config becomes free-form); upstream installs `kubectl apply -k config/crd`.
# Strimzi: the api jar carries no CRDs and its generator (io.strimzi:crd-generator) is not published
# for 0.51.0 (0.45.0 misses newer annotations, 1.2.0 needs Java 21). The api test jar carries
# them: crds/v1beta2 is what Strimzi's own 0.51.0 build generated with the install CRDs'
# --api-versions/--storage-version/--label, descriptions left out (checked against the POM by
# tests/charts/test_crds_setup.py).
sources=(
  "prometheus-operator|$PROMETHEUS_OPERATOR_VERSION|gomod|github.com/prometheus-operator/prometheus-operator|example/prometheus-operator-crd|*.yaml"
  "cert-manager|$CERT_MANAGER_VERSION|gomod|github.com/cert-manager/cert-manager|deploy/crds|*.yaml"
  "cass-operator|$CASS_OPERATOR_VERSION|gomod|github.com/k8ssandra/cass-operator|config/crd|kustomize"
  "redis-operator|$REDIS_OPERATOR_VERSION|gomod-nosumdb|github.com/OT-CONTAINER-KIT/redis-operator|config/crd/bases|*.yaml"
  "strimzi|$STRIMZI_VERSION|maven|io.strimzi:api:jar:tests|crds/v1beta2|*.yaml"
)

# sha256 of every file copied (the whole set: a missing or extra file fails too). Required for
# gomod-nosumdb; for Strimzi too, as a test jar is no documented release artifact: the pins
# record exactly which files were validated.
declare -A pinned_sha256=(
  ["redis-operator v0.23.0"]="
497cfc9f33d74b960966c46eb0c4a331fa82c5bee3bd4fa5beb73e32a334f19d  redis.redis.opstreelabs.in_redis.yaml
8edceeebbb7ffce053fa51dadb585334415869e13d85086d3d240667e5884769  redis.redis.opstreelabs.in_redisclusters.yaml
fc46f9211ee9c94b77de55d6bfb189397d998ad15d62fb502e8bcd1db7a1a87a  redis.redis.opstreelabs.in_redisreplications.yaml
a7d8f60056be907b23488a56f9369756e93fdef5fe2df5d91d51397f7b73f185  redis.redis.opstreelabs.in_redissentinels.yaml
"
  ["strimzi 0.51.0"]="
4966bceb2f85a238132fb3ba7e8b37fe86b28cf30344c15d4cf2b77bc7c2c951  040-Crd-kafka.yaml
fa1d4372786aacd51f370bb2758cd6016d4f2ab8dd0bfe7d9bb72645fa948a79  041-Crd-kafkaconnect.yaml
1fc9115786c284a2cab638884bccff0225ef7841c2c992ede5d350379788f5ba  042-Crd-strimzipodset.yaml
fd069481630292533492221a8f9e57c353b46edc40c6301a05fa6a522ab0d4a6  043-Crd-kafkatopic.yaml
43f6cd9cd7fa4b1a19817889c034612ce8847ec8649954e7c6cdd7178d2446b6  044-Crd-kafkauser.yaml
105efaad09ddd2b9e8e5410f1e69fa5c0baa73a4d767b373d9990bdf41af3d94  045-Crd-kafkanodepool.yaml
abd730e0b8ab5e6d171bb7564c4994d5a5e38b54743b4a643b2fe8de0b68782a  046-Crd-kafkabridge.yaml
b978794a2532e13baae0cae6ce07bff5cee869eb37f5389d003ac431cddda260  047-Crd-kafkaconnector.yaml
7d5f046aabe79fb040575b4957cb257b872a3909b240eae31777df0c258701e1  048-Crd-kafkamirrormaker2.yaml
e687f1a164ce948742c11f3bbab63c0875a33869f3c7d2fd1a371b07c3e14f82  049-Crd-kafkarebalance.yaml
"
)

# Also used inside $(...), hence everything on stderr.
fail() {
  echo "failed" >&2
  local line
  for line in "$@"; do echo "setup: $line" >&2; done
  exit 1
}

find_go() {
  if [[ -x /usr/local/go/bin/go ]]; then
    export PATH=/usr/local/go/bin:$PATH
  fi
  command -v go >/dev/null || {
    echo "setup: the Go toolchain is required to fetch CRDs from the Go module proxy" \
      "(install Go at /usr/local/go)" >&2
    exit 1
  }
}

# Prints the module's extracted directory in the module cache (read-only files).
go_module_dir() {
  local module=$1 version=$2 log=$3 nosumdb=${4:-} scratch json
  find_go
  # Outside any go.mod, so the project's own modules never influence the download.
  scratch=$(mktemp -d)
  if ! json=$(cd "$scratch" && GOFLAGS=-mod=mod GOTOOLCHAIN=local GONOSUMDB=$nosumdb \
    go mod download -json "$module@$version" 2>"$log"); then
    rm -rf "$scratch"
    echo "failed" >&2
    echo "setup: go mod download $module@$version failed:" >&2
    { printf '%s\n' "$json"; cat "$log"; } | tail -n 10 >&2
    exit 1
  fi
  rm -rf "$scratch"
  printf '%s\n' "$json" | sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p'
}

# Unpacks groupId:artifactId:type:classifier at version from Maven Central into $3 (the
# project's Maven repository keeps the download, as scripts/setup/jars.sh does).
maven_artifact_dir() {
  local coordinates=$1 version=$2 unpacked=$3 log=$4 group artifact type classifier jar
  IFS=: read -r group artifact type classifier <<<"$coordinates"
  command -v mvn >/dev/null || fail "mvn is required to fetch CRDs from Maven Central" \
    "(apt-get install maven)"
  command -v unzip >/dev/null || fail "unzip is required (apt-get install unzip)"
  local repository=$cache/maven/repository
  # The POM too: it records how upstream generated the files (tests compare against it).
  local coordinate pom=$group:$artifact:$version:pom
  for coordinate in "$group:$artifact:$version:$type:$classifier" "$pom"; do
    if ! mvn -q -B -C -Dmaven.repo.local="$repository" dependency:get -Dtransitive=false \
      -Dartifact="$coordinate" >>"$log" 2>&1; then
      tail -n 10 "$log" >&2
      fail "mvn could not resolve $coordinate"
    fi
  done
  jar=$repository/${group//.//}/$artifact/$version/$artifact-$version-$classifier.$type
  [[ -f $jar ]] || fail "$jar missing after mvn"
  mkdir -p "$unpacked"
  unzip -q -o "$jar" -d "$unpacked" >>"$log" 2>&1 || fail "cannot unpack $jar"
  printf '%s\n' "$unpacked"
}

# The pinned kubectl (scripts/setup/gotools.sh builds it first) has kustomize built in.
kustomize_build() {
  local directory=$1 out=$2 log=$3
  local kubectl=$cache/tools/kubectl-$KUBERNETES_VERSION/bin/kubectl
  [[ -x $kubectl ]] || fail "$kubectl missing; run scripts/setup/gotools.sh first"
  "$kubectl" kustomize "$directory" >"$out" 2>"$log" || {
    tail -n 10 "$log" >&2
    fail "kubectl kustomize $directory failed"
  }
}

# The staged files' sha256 list must be exactly the pinned one.
check_pins() {
  local pins=$1 staging=$2 actual
  actual=$(cd "$staging" && find . -maxdepth 1 -type f ! -name '.*' -printf '%f\n' \
    | LC_ALL=C sort | xargs -r -d '\n' sha256sum)
  if [[ $actual != "$(grep -v '^$' <<<"$pins")" ]]; then
    echo "failed"
    echo "setup: copied CRDs differ from their sha256 pins in crds.sh:" >&2
    diff <(grep -v '^$' <<<"$pins") <(printf '%s\n' "$actual") >&2 || true
    exit 1
  fi
}

fetch() {
  local project=$1 version=$2 method=$3 location=$4 subdir=$5 glob=$6
  local dest=$crds/$project-$version
  local pins=${pinned_sha256["$project $version"]:-}
  if [[ $method == gomod-nosumdb && -z $pins ]]; then
    echo "setup: crds.sh: $project $version skips the checksum database but has no sha256" \
      "pins; add them to pinned_sha256" >&2
    exit 2
  fi
  # The stamp names the source and its pins, so changing either fetches again.
  local want="$method $location@$version $subdir/$glob"
  [[ -n $pins ]] && want+=" sha256:$(sha256sum <<<"$pins" | cut -c1-16)"
  [[ -f $dest/.complete && "$(<"$dest/.complete")" == "$want" ]] && return 0
  local started=$SECONDS staging=$dest.partial source_dir
  mkdir -p "$crds"
  rm -rf "$staging" "$staging.unpacked"
  mkdir -p "$staging"
  printf 'setup: fetching %s %s CRDs (%s) ... ' "$project" "$version" "$location"
  case $method in
    gomod) source_dir=$(go_module_dir "$location" "$version" "$staging.log") ;;
    gomod-nosumdb)
      source_dir=$(go_module_dir "$location" "$version" "$staging.log" "$location")
      ;;
    maven)
      source_dir=$(maven_artifact_dir "$location" "$version" "$staging.unpacked" "$staging.log")
      ;;
    *)
      echo "failed"
      echo "setup: crds.sh: unknown fetch method '$method' for $project" >&2
      exit 2
      ;;
  esac
  if [[ -z $source_dir || ! -d $source_dir/$subdir ]]; then
    fail "$location@$version has no directory $subdir"
  fi
  local copied=0 file
  if [[ $glob == kustomize ]]; then
    kustomize_build "$source_dir/$subdir" "$staging/kustomize-build.yaml" "$staging.log"
    copied=1
  else
    shopt -s nullglob
    for file in "$source_dir/$subdir"/$glob; do
      cp "$file" "$staging/"
      copied=$((copied + 1))
    done
    shopt -u nullglob
  fi
  ((copied > 0)) || fail "no $glob files in $location@$version/$subdir"
  # The module cache hands out read-only files; keep our copies removable.
  chmod -R u+w "$staging"
  [[ -n $pins ]] && check_pins "$pins" "$staging"
  printf '%s\n' "$want" >"$staging/.complete"
  rm -rf "$dest" "$staging.log" "$staging.unpacked"
  mv "$staging" "$dest"
  echo "done: $copied files in $((SECONDS - started)) s"
}

wanted=("$@")
for entry in "${sources[@]}"; do
  IFS='|' read -r project version method location subdir glob <<<"$entry"
  if ((${#wanted[@]})) && [[ " ${wanted[*]} " != *" $project "* ]]; then
    continue
  fi
  fetch "$project" "$version" "$method" "$location" "$subdir" "$glob"
done
