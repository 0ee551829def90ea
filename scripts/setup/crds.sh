#!/usr/bin/env bash
# Fetch pinned upstream CustomResourceDefinitions into $OPSCTL_CACHE_DIR/crds/<project>-<version>/
# through a package registry (the Go module proxy serves each project's module zip, CRD
# manifests included). The files are copied exactly as published: never edit or hand-write a
# CRD. opsctl/cluster/crds.py finds and installs them. Versions: tools/go/versions.env.
# A warm run (every directory stamped complete) does no network work and takes milliseconds.
# Usage: crds.sh [project ...]  (default: every project)
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
# shellcheck source=../../tools/go/versions.env
source "$root/tools/go/versions.env"
cache=${OPSCTL_CACHE_DIR:-$root/.cache}
crds=$cache/crds

# project | version | how to fetch | where | directory inside it | file glob
# "gomod": a Go module path, downloaded with `go mod download` from the module proxy.
# Prometheus Operator: example/prometheus-operator-crd is the released set (one storage version
# per CRD, no conversion webhook); the -full variant needs the operator's webhook.
sources=(
  "prometheus-operator|$PROMETHEUS_OPERATOR_VERSION|gomod|github.com/prometheus-operator/prometheus-operator|example/prometheus-operator-crd|*.yaml"
)

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
  local module=$1 version=$2 log=$3 scratch json
  find_go
  # Outside any go.mod, so the project's own modules never influence the download.
  scratch=$(mktemp -d)
  if ! json=$(cd "$scratch" && GOFLAGS=-mod=mod GOTOOLCHAIN=local \
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

fetch() {
  local project=$1 version=$2 method=$3 location=$4 subdir=$5 glob=$6
  local dest=$crds/$project-$version
  # The stamp names the source, so moving to another directory or glob fetches again.
  local want="$method $location@$version $subdir/$glob"
  [[ -f $dest/.complete && "$(<"$dest/.complete")" == "$want" ]] && return 0
  local started=$SECONDS staging=$dest.partial source_dir
  mkdir -p "$crds"
  rm -rf "$staging"
  mkdir -p "$staging"
  printf 'setup: fetching %s %s CRDs (%s) ... ' "$project" "$version" "$location"
  case $method in
    gomod) source_dir=$(go_module_dir "$location" "$version" "$staging.log") ;;
    *)
      echo "failed"
      echo "setup: crds.sh: unknown fetch method '$method' for $project" >&2
      exit 2
      ;;
  esac
  if [[ -z $source_dir || ! -d $source_dir/$subdir ]]; then
    echo "failed"
    echo "setup: $location@$version has no directory $subdir" >&2
    exit 1
  fi
  local copied=0 file
  shopt -s nullglob
  for file in "$source_dir/$subdir"/$glob; do
    cp "$file" "$staging/"
    copied=$((copied + 1))
  done
  shopt -u nullglob
  if ((copied == 0)); then
    echo "failed"
    echo "setup: no $glob files in $location@$version/$subdir" >&2
    exit 1
  fi
  # The module cache hands out read-only files; keep our copies removable.
  chmod -R u+w "$staging"
  printf '%s\n' "$want" >"$staging/.complete"
  rm -rf "$dest" "$staging.log"
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
