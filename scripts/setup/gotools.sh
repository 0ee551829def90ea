#!/usr/bin/env bash
# Build the pinned Go tools (Kubernetes control plane, kubectl, etcd, kwok, kwokctl, helm,
# redis_exporter, kube-state-metrics) from the Go module proxy into
# $OPSCTL_CACHE_DIR/tools/<name>-<version>/bin/<name>, with stable symlinks in
# $OPSCTL_CACHE_DIR/bin/<name>. Versions: tools/go/versions.env; wrapper modules:
# tools/go/*/. A warm run (every binary present for the pinned versions) does no Go work and
# takes milliseconds. Usage: gotools.sh [name ...]  (default: every tool)
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
modules=$root/tools/go
# shellcheck source=../../tools/go/versions.env
source "$modules/versions.env"
cache=${OPSCTL_CACHE_DIR:-$root/.cache}
bin_links=$cache/bin

# name | version | wrapper module dir | package to build
tools=(
  "kwok|$KWOK_VERSION|kwok|sigs.k8s.io/kwok/cmd/kwok"
  "kwokctl|$KWOK_VERSION|kwok|sigs.k8s.io/kwok/cmd/kwokctl"
  "etcd|$ETCD_VERSION|etcd|."
  "kube-apiserver|$KUBERNETES_VERSION|kubernetes|k8s.io/kubernetes/cmd/kube-apiserver"
  "kube-controller-manager|$KUBERNETES_VERSION|kubernetes|k8s.io/kubernetes/cmd/kube-controller-manager"
  "kube-scheduler|$KUBERNETES_VERSION|kubernetes|k8s.io/kubernetes/cmd/kube-scheduler"
  "kubectl|$KUBERNETES_VERSION|kubernetes|k8s.io/kubernetes/cmd/kubectl"
  "helm|$HELM_VERSION|helm|helm.sh/helm/${HELM_VERSION%%.*}/cmd/helm"
  "redis_exporter|$REDIS_EXPORTER_VERSION|redis-exporter|github.com/oliver006/redis_exporter"
  "kube-state-metrics|$KUBE_STATE_METRICS_VERSION|kube-state-metrics|k8s.io/kube-state-metrics/v2"
)

binary_path() { echo "$cache/tools/$1-$2/bin/$1"; }

link() {
  local name=$1 target=$2
  mkdir -p "$bin_links"
  # Only touch the link when it is wrong, so a warm run writes nothing.
  [[ $(readlink "$bin_links/$name" 2>/dev/null) == "$target" ]] || ln -sfn "$target" "$bin_links/$name"
}

# The proxy records when each release was tagged: a reproducible, truthful build date.
release_date() {
  local module_dir=$1 module=$2
  (cd "$modules/$module_dir" && go list -m -f '{{if .Time}}{{.Time.UTC.Format "2006-01-02T15:04:05Z"}}{{end}}' "$module")
}

version_ldflags() {
  local name=$1 version=$2 module_dir=$3
  case $name in
    # Before kube-*: kube-state-metrics reports through prometheus/common, not component-base.
    kube-state-metrics)
      echo "-X github.com/prometheus/common/version.Version=${version#v}" \
        "-X github.com/prometheus/common/version.BuildDate=$(release_date "$module_dir" k8s.io/kube-state-metrics/v2)"
      ;;
    kube-* | kubectl)
      local minor=${version#v1.}
      minor=${minor%%.*}
      local date flags="" pkg
      date=$(release_date "$module_dir" k8s.io/kubernetes)
      # kube-apiserver reports through component-base; clients of it read client-go's copy.
      for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
        flags+=" -X $pkg.gitVersion=$version -X $pkg.gitMajor=1 -X $pkg.gitMinor=$minor"
        flags+=" -X $pkg.gitTreeState=archive -X $pkg.buildDate=$date"
      done
      echo "$flags"
      ;;
    kwok | kwokctl)
      # KubeVersion is the default cluster version kwokctl assumes; keep it on ours.
      echo "-X sigs.k8s.io/kwok/pkg/consts.Version=${version#v}" \
        "-X sigs.k8s.io/kwok/pkg/consts.KubeVersion=${KUBERNETES_VERSION#v}"
      ;;
    helm)
      echo "-X helm.sh/helm/${version%%.*}/internal/version.version=$version" \
        "-X helm.sh/helm/${version%%.*}/internal/version.gitTreeState=clean"
      ;;
    redis_exporter)
      echo "-X main.BuildVersion=${version#v} -X main.BuildDate=$(release_date "$module_dir" github.com/oliver006/redis_exporter)"
      ;;
    etcd) echo "" ;;
  esac
}

check_wrapper_pin() {
  local module_dir=$1 module=$2 version=$3
  grep -qE "^[[:space:]]*(require )?$module $version( |$)" "$modules/$module_dir/go.mod" || {
    echo "setup: tools/go/$module_dir/go.mod does not pin $module $version (versions.env);" \
      "run tools/go/sync-modules.sh" >&2
    exit 2
  }
}

find_go() {
  if [[ -x /usr/local/go/bin/go ]]; then
    export PATH=/usr/local/go/bin:$PATH
  fi
  command -v go >/dev/null || {
    echo "setup: the Go toolchain is required to build the Kubernetes tools" \
      "(install Go >= 1.26 at /usr/local/go)" >&2
    exit 1
  }
}

build() {
  local name=$1 version=$2 module_dir=$3 package=$4
  local dest
  dest=$(binary_path "$name" "$version")
  local staging=$dest.partial log=$cache/tools/$name-$version/build.log
  case $module_dir in
    kubernetes) check_wrapper_pin kubernetes k8s.io/kubernetes "$version" ;;
    etcd) check_wrapper_pin etcd go.etcd.io/etcd/server/v3 "$version" ;;
    kwok) check_wrapper_pin kwok sigs.k8s.io/kwok "$version" ;;
    helm) check_wrapper_pin helm "helm.sh/helm/${version%%.*}" "$version" ;;
    redis-exporter) check_wrapper_pin redis-exporter github.com/oliver006/redis_exporter "$version" ;;
    kube-state-metrics) check_wrapper_pin kube-state-metrics k8s.io/kube-state-metrics/v2 "$version" ;;
  esac
  mkdir -p "$(dirname "$dest")"
  local started=$SECONDS ldflags
  printf 'setup: building %s %s ... ' "$name" "$version"
  ldflags="-s -w $(version_ldflags "$name" "$version" "$module_dir")"
  # One binary at a time with -p 2: the machine is small and shared.
  if ! (cd "$modules/$module_dir" && CGO_ENABLED=0 GOFLAGS="-mod=mod -buildvcs=false" GOTOOLCHAIN=local \
    go build -p 2 -trimpath -ldflags "$ldflags" -o "$staging" "$package") >"$log" 2>&1; then
    echo "failed"
    echo "setup: go build of $name failed; last lines of $log:" >&2
    tail -n 20 "$log" >&2
    rm -f "$staging"
    exit 1
  fi
  mv -f "$staging" "$dest"
  echo "done in $((SECONDS - started)) s"
}

wanted=("$@")
for entry in "${tools[@]}"; do
  IFS='|' read -r name version module_dir package <<<"$entry"
  if ((${#wanted[@]})) && [[ " ${wanted[*]} " != *" $name "* ]]; then
    continue
  fi
  dest=$(binary_path "$name" "$version")
  if [[ ! -x $dest ]]; then
    find_go
    build "$name" "$version" "$module_dir" "$package"
  fi
  link "$name" "$dest"
done
