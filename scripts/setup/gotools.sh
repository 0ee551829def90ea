#!/usr/bin/env bash
# Build the pinned Go tools (Kubernetes control plane, kubectl, etcd, kwok, kwokctl, helm,
# redis_exporter, kube-state-metrics, the pulumi CLI and its Kubernetes provider) from the Go
# module proxy into
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
  "pulumi|$PULUMI_VERSION|pulumi|github.com/pulumi/pulumi/pkg/v3/cmd/pulumi"
  "pulumi-resource-kubernetes|$PULUMI_KUBERNETES_PLUGIN_VERSION|pulumi-kubernetes|github.com/pulumi/pulumi-kubernetes/provider/v4/cmd/pulumi-resource-kubernetes"
)
# The engine finds its plugins here; opsctl infra points PULUMI_HOME at it.
pulumi_home=$cache/pulumi-home

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
    pulumi)
      # Without it the CLI reports no version and the Automation API refuses to run it.
      echo "-X github.com/pulumi/pulumi/sdk/v3/go/common/version.Version=$version"
      ;;
    pulumi-resource-kubernetes)
      echo "-X github.com/pulumi/pulumi-kubernetes/provider/v4/pkg/version.Version=${version#v}"
      ;;
    etcd) echo "" ;;
  esac
}

# The provider module on the proxy lacks the embedded schema files its main package needs: copy
# it writable beside a copy of the wrapper module (which replaces it with ./provider) and run the
# module's own generator there. Prints the directory to build in.
prepare_provider() {
  local version=$1 module=github.com/pulumi/pulumi-kubernetes/provider/v4
  local work=$cache/build/pulumi-kubernetes-$PULUMI_KUBERNETES_MODULE_VERSION src
  if [[ ! -f $work/provider/cmd/pulumi-resource-kubernetes/schema-embed.json ]]; then
    rm -rf "$work"
    mkdir -p "$work"
    # Outside any module: the wrapper's replace would hide the proxy's copy.
    src=$(cd "$work" && GOFLAGS=-mod=mod GOTOOLCHAIN=local \
      go mod download -json "$module@$PULUMI_KUBERNETES_MODULE_VERSION" | sed -n 's/^\t"Dir": "\(.*\)",$/\1/p')
    [[ -d $src ]] || { echo "setup: could not download $module" >&2; exit 1; }
    cp -r "$src" "$work/provider"
    chmod -R u+w "$work/provider"
    (cd "$work/provider/cmd/pulumi-resource-kubernetes" && VERSION=${version#v} GOFLAGS=-mod=mod \
      GOTOOLCHAIN=local go run ./generate.go) >&2
  fi
  cp "$modules/pulumi-kubernetes/go.mod" "$modules/pulumi-kubernetes/go.sum" "$work/"
  echo "$work"
}

# `pulumi plugin install --file` registers the built provider under the version the SDK asks for.
install_plugin() {
  local version=$1 binary=$2
  [[ -x $pulumi_home/plugins/resource-kubernetes-$version/pulumi-resource-kubernetes ]] && return
  local log=$cache/tools/pulumi-resource-kubernetes-$version/plugin-install.log
  if ! PULUMI_HOME=$pulumi_home PULUMI_SKIP_UPDATE_CHECK=true "$(binary_path pulumi "$PULUMI_VERSION")" \
    plugin install resource kubernetes "${version#v}" --file "$binary" >"$log" 2>&1; then
    echo "setup: installing the kubernetes plugin failed; see $log" >&2
    exit 1
  fi
  echo "setup: pulumi plugin kubernetes ${version#v} installed in $pulumi_home"
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
    pulumi) check_wrapper_pin pulumi github.com/pulumi/pulumi/pkg/v3 "$version" ;;
    pulumi-kubernetes)
      check_wrapper_pin pulumi-kubernetes github.com/pulumi/pulumi-kubernetes/provider/v4 \
        "$PULUMI_KUBERNETES_MODULE_VERSION"
      ;;
  esac
  local workdir=$modules/$module_dir
  [[ $module_dir == pulumi-kubernetes ]] && workdir=$(prepare_provider "$version")
  mkdir -p "$(dirname "$dest")"
  local started=$SECONDS ldflags
  printf 'setup: building %s %s ... ' "$name" "$version"
  ldflags="-s -w $(version_ldflags "$name" "$version" "$module_dir")"
  # One binary at a time with -p 2: the machine is small and shared.
  if ! (cd "$workdir" && CGO_ENABLED=0 GOFLAGS="-mod=mod -buildvcs=false" GOTOOLCHAIN=local \
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
  [[ $name == pulumi-resource-kubernetes ]] && install_plugin "$version" "$dest"
done
