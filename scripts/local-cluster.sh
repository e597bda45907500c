#!/usr/bin/env bash
# A real single-node Kubernetes on this machine, from Debian's packages only,
# for running the e2e suite's plain-Kubernetes path for real (no Knative:
# its images cannot be fetched here).
#
#   scripts/local-cluster.sh up       # build (once, cached) and start everything
#   scripts/local-cluster.sh down     # stop everything, unmount, remove the bridge
#   scripts/local-cluster.sh status   # what runs
#   scripts/local-cluster.sh build    # only fill the cache (Kubernetes, base and build rootfs)
#   scripts/local-cluster.sh docker ARGS...   # the cluster's docker client
#
# After `up`, KUBECONFIG=/run/kws/kubeconfig reaches the cluster (admin).
#
# What it runs, all bound to loopback or inside the network namespaces it
# creates (nothing talks to any other address):
#   etcd 3.4 (Debian)                       127.0.0.1:2379
#   kube-apiserver 1.20.2                   127.0.0.1:6443, token auth + RBAC
#   kube-controller-manager, kube-scheduler  loopback only
#   dockerd (Debian), own socket/data root, no bridge/iptables/forwarding,
#     default runtime: a runc wrapper that clamps negative oomScoreAdj to 0
#     (this VM lacks CAP_SYS_RESOURCE)
#   kubelet 1.20.2 (dockershim)             127.0.0.1:10250, anonymous + AlwaysAllow
#   pods on a CNI bridge kws0, 10.244.0.0/24; no kube-proxy, no DNS: reach
#     pods through the API's port-forward.
#
# Kubernetes 1.20.2 is built from Debian's `kubernetes` source package (about
# 10 minutes on 2 cores) and cached in $KWS_CACHE, keyed by version; so are
# the pause image (static build of the same tree's pause.c), a Debian
# bookworm base image with Python (debootstrap), the image build stage's
# base: the same with gcc, libc6-dev and python3-dev, and a Redis image:
# Debian's redis-server package (debootstrap).
set -euo pipefail
cd "$(dirname "$0")/.."

K8S_DEBIAN_VERSION=1.20.5+really1.20.2-1.1+deb12u1
K8S_VERSION=1.20.2
CACHE=${KWS_CACHE:-/var/cache/kws}
STATE=${KWS_STATE:-/run/kws}
DATA=${KWS_DATA:-/var/lib/kws}
BIN=$CACHE/kubernetes-$K8S_VERSION/bin
DOCKER_SOCK=$STATE/docker.sock
PAUSE_IMAGE=kws.local/pause:$K8S_VERSION
BASE_IMAGE=${KWS_BASE_IMAGE:-kws.local/python:bookworm}
# The Dockerfile's build stage (BUILD_IMAGE): the same rootfs plus a C
# compiler and the Python headers, to compile the wire core with mypyc.
BUILD_IMAGE=${KWS_BUILD_IMAGE:-kws.local/python-build:bookworm}
BUILD_PACKAGES=(gcc libc6-dev python3-dev)
# Redis for the backplane e2e test (e2e/test_backplane.py): Debian's
# redis-server, debootstrapped the same way.
REDIS_IMAGE=${KWS_REDIS_IMAGE:-kws.local/redis:bookworm}
BRIDGE=kws0
POD_SUBNET=10.244.0.0/24
APT_PACKAGES=(docker.io debootstrap etcd-server golang-go rsync jq make
  golang-github-modern-go-reflect2-dev containernetworking-plugins socat openssl curl gcc libc6-dev iproute2)

log() { printf '==> [local-cluster %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { printf 'local-cluster: %s\n' "$*" >&2; exit 1; }
kdocker() { docker -H "unix://$DOCKER_SOCK" "$@"; }

need_root() { [ "$(id -u)" -eq 0 ] || die "must run as root (it starts dockerd and the kubelet)"; }

install_packages() {
  local missing=() pkg
  for pkg in "${APT_PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
  done
  if [ "${#missing[@]}" -gt 0 ]; then
    log "apt-get install ${missing[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
  fi
}

# -- building (cached) --------------------------------------------------------------

debian_mirror() {
  # The Debian mirror apt is configured with (comments aside), for deb-src
  # and debootstrap: the only package source this machine reaches.
  local uri
  uri=$(awk '$1 == "URIs:" {print $2}' /etc/apt/sources.list.d/*.sources 2>/dev/null | grep -E '/debian/?$' | head -n1)
  [ -n "$uri" ] || uri=$(awk '$1 == "deb" {print $2}' /etc/apt/sources.list 2>/dev/null | grep -E '/debian/?$' | head -n1)
  echo "${uri:-http://deb.debian.org/debian}"
}

build_kubernetes() {
  if [ -x "$BIN/kube-apiserver" ] && [ -x "$BIN/kubelet" ] && [ -x "$BIN/pause" ]; then
    log "Kubernetes $K8S_VERSION binaries cached in $BIN"
    return
  fi
  local work=$CACHE/build src
  rm -rf "$work"
  mkdir -p "$work/apt/lists/partial" "$work/apt/archives/partial" "$work/src"
  # A private apt configuration with a deb-src line, leaving the system's alone.
  local mirror
  mirror=$(debian_mirror)
  echo "deb-src ${mirror%/} bookworm main" >"$work/apt/sources.list"
  cat >"$work/apt/apt.conf" <<EOF
Dir::Etc::SourceList "$work/apt/sources.list";
Dir::Etc::SourceParts "-";
Dir::State::Lists "$work/apt/lists";
Dir::Cache::Archives "$work/apt/archives";
EOF
  log "downloading Debian's kubernetes $K8S_DEBIAN_VERSION source"
  APT_CONFIG=$work/apt/apt.conf apt-get update -qq
  (cd "$work/src" && APT_CONFIG=$work/apt/apt.conf apt-get source --download-only -qq "kubernetes=$K8S_DEBIAN_VERSION")
  tar -xzf "$work"/src/kubernetes_*.orig.tar.gz -C "$work"
  src=$(echo "$work"/kubernetes-*/)
  # Vendored reflect2 1.0.1 crashes the apiserver on the first custom-object
  # write when built with Go >= 1.18; Debian's 1.0.2 sources do not.
  rm -rf "$src/vendor/github.com/modern-go/reflect2"
  mkdir -p "$src/vendor/github.com/modern-go/reflect2"
  cp /usr/share/gocode/src/github.com/modern-go/reflect2/*.go \
    /usr/share/gocode/src/github.com/modern-go/reflect2/*.s "$src/vendor/github.com/modern-go/reflect2/"
  log "building kube-apiserver, kubelet, kube-scheduler, kube-controller-manager (about 10 minutes)"
  (cd "$src" && GOPROXY=off GOFLAGS=-mod=vendor make \
    WHAT="cmd/kube-apiserver cmd/kubelet cmd/kube-scheduler cmd/kube-controller-manager") \
    >"$work/build.log" 2>&1 || { tail -n 40 "$work/build.log"; die "Kubernetes build failed ($work/build.log)"; }
  mkdir -p "$BIN.tmp"
  cp "$src"/_output/bin/{kube-apiserver,kubelet,kube-scheduler,kube-controller-manager} "$BIN.tmp/"
  log "building the pause container (static)"
  gcc -Os -static -DVERSION="$K8S_VERSION" -o "$BIN.tmp/pause" "$src/build/pause/linux/pause.c"
  rm -rf "$BIN"
  mv "$BIN.tmp" "$BIN"
  rm -rf "$work"
  log "cached in $BIN"
}

base_rootfs_tar() {
  local tar=$CACHE/images/debian-bookworm-python.tar
  if [ ! -f "$tar" ]; then
    log "debootstrap: Debian bookworm (minbase) with python3 and python3-venv"
    local root=$CACHE/images/rootfs.tmp
    rm -rf "$root"
    mkdir -p "$CACHE/images"
    debootstrap --variant=minbase --include=python3,python3-venv bookworm "$root" "$(debian_mirror)" \
      >"$CACHE/images/debootstrap.log" 2>&1 || { tail -n 20 "$CACHE/images/debootstrap.log"; die "debootstrap failed"; }
    rm -rf "$root"/var/cache/apt/archives/*.deb "$root"/var/lib/apt/lists/*
    tar -C "$root" -cf "$tar.tmp" .
    mv "$tar.tmp" "$tar"
    rm -rf "$root"
  fi
  echo "$tar"
}

build_rootfs_tar() {
  # The base rootfs plus BUILD_PACKAGES, installed by apt-get in a chroot from
  # the mirror debootstrap wrote into its sources.list (debian_mirror).
  local tar=$CACHE/images/debian-bookworm-python-build.tar
  if [ ! -f "$tar" ]; then
    local base root=$CACHE/images/build-rootfs.tmp
    base=$(base_rootfs_tar)
    log "the build base: the base rootfs plus ${BUILD_PACKAGES[*]} (apt-get in a chroot)"
    rm -rf "$root"
    mkdir -p "$root"
    tar -C "$root" -xf "$base"
    cp /etc/resolv.conf "$root/etc/resolv.conf"
    {
      chroot "$root" apt-get update -qq &&
        DEBIAN_FRONTEND=noninteractive chroot "$root" \
          apt-get install -y -qq --no-install-recommends "${BUILD_PACKAGES[@]}"
    } >"$CACHE/images/build-rootfs.log" 2>&1 ||
      { tail -n 20 "$CACHE/images/build-rootfs.log"; rm -rf "$root"; die "apt-get in the build rootfs failed"; }
    rm -rf "$root"/var/cache/apt/archives/*.deb "$root"/var/lib/apt/lists/*
    tar -C "$root" -cf "$tar.tmp" .
    mv "$tar.tmp" "$tar"
    rm -rf "$root"
  fi
  echo "$tar"
}

redis_rootfs_tar() {
  # Debian bookworm (minbase) with redis-server and what it depends on; the
  # pod runs /usr/bin/redis-server with its arguments (e2e/redis.yaml).
  local tar=$CACHE/images/debian-bookworm-redis.tar
  if [ ! -f "$tar" ]; then
    log "debootstrap: Debian bookworm (minbase) with redis-server"
    local root=$CACHE/images/redis-rootfs.tmp
    rm -rf "$root"
    mkdir -p "$CACHE/images"
    debootstrap --variant=minbase --include=redis-server bookworm "$root" "$(debian_mirror)" \
      >"$CACHE/images/debootstrap-redis.log" 2>&1 ||
      { tail -n 20 "$CACHE/images/debootstrap-redis.log"; rm -rf "$root"; die "debootstrap (redis) failed"; }
    rm -rf "$root"/var/cache/apt/archives/*.deb "$root"/var/lib/apt/lists/*
    tar -C "$root" -cf "$tar.tmp" .
    mv "$tar.tmp" "$tar"
    rm -rf "$root"
  fi
  echo "$tar"
}

import_images() {
  if ! kdocker image inspect "$PAUSE_IMAGE" >/dev/null 2>&1; then
    log "importing $PAUSE_IMAGE"
    local dir
    dir=$(mktemp -d)
    cp "$BIN/pause" "$dir/pause"
    tar -C "$dir" -cf - pause | kdocker import -c 'ENTRYPOINT ["/pause"]' - "$PAUSE_IMAGE" >/dev/null
    rm -rf "$dir"
  fi
  if ! kdocker image inspect "$BASE_IMAGE" >/dev/null 2>&1; then
    log "importing $BASE_IMAGE"
    kdocker import -c 'CMD ["python3"]' "$(base_rootfs_tar)" "$BASE_IMAGE" >/dev/null
  fi
  if ! kdocker image inspect "$BUILD_IMAGE" >/dev/null 2>&1; then
    log "importing $BUILD_IMAGE"
    kdocker import -c 'CMD ["python3"]' "$(build_rootfs_tar)" "$BUILD_IMAGE" >/dev/null
  fi
  if ! kdocker image inspect "$REDIS_IMAGE" >/dev/null 2>&1; then
    log "importing $REDIS_IMAGE"
    kdocker import -c 'ENTRYPOINT ["/usr/bin/redis-server"]' "$(redis_rootfs_tar)" "$REDIS_IMAGE" >/dev/null
  fi
}

# -- certificates and config --------------------------------------------------------

write_pki() {
  local pki=$STATE/pki
  [ -f "$pki/apiserver.crt" ] && return
  mkdir -p "$pki"
  openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj "/CN=kws-ca" \
    -keyout "$pki/ca.key" -out "$pki/ca.crt" 2>/dev/null
  openssl req -newkey rsa:2048 -nodes -subj "/CN=kube-apiserver" \
    -keyout "$pki/apiserver.key" -out "$pki/apiserver.csr" 2>/dev/null
  printf 'subjectAltName=IP:127.0.0.1,DNS:localhost,DNS:kubernetes.default.svc\n' >"$pki/san.ext"
  openssl x509 -req -in "$pki/apiserver.csr" -CA "$pki/ca.crt" -CAkey "$pki/ca.key" \
    -CAcreateserial -days 2 -extfile "$pki/san.ext" -out "$pki/apiserver.crt" 2>/dev/null
  openssl genrsa -out "$pki/sa.key" 2048 2>/dev/null
  openssl rsa -in "$pki/sa.key" -pubout -out "$pki/sa.pub" 2>/dev/null
  local token
  token=$(openssl rand -hex 24)
  printf '%s,admin,admin,system:masters\n' "$token" >"$pki/tokens.csv"
  chmod 600 "$pki"/*.key "$pki/tokens.csv"
  cat >"$STATE/kubeconfig" <<EOF
apiVersion: v1
kind: Config
clusters:
  - name: kws
    cluster:
      server: https://127.0.0.1:6443
      certificate-authority: $pki/ca.crt
users:
  - name: admin
    user:
      token: $token
contexts:
  - name: kws
    context: {cluster: kws, user: admin}
current-context: kws
EOF
  chmod 600 "$STATE/kubeconfig"
}

write_runtime_wrapper() {
  cat >"$STATE/runc-clamp" <<'EOF'
#!/bin/sh
# runc, but a negative oomScoreAdj in the bundle's config.json becomes 0:
# this VM lacks CAP_SYS_RESOURCE, and runc fails with "can't get final
# child's PID from pipe: EOF" when asked to lower it.
bundle=""
prev=""
for arg in "$@"; do
  [ "$prev" = "--bundle" ] || [ "$prev" = "-b" ] && bundle=$arg
  prev=$arg
done
if [ -n "$bundle" ] && [ -f "$bundle/config.json" ]; then
  tmp="$bundle/config.json.clamp"
  jq '(.process.oomScoreAdj // 0) as $o | if $o < 0 then .process.oomScoreAdj = 0 else . end' \
    "$bundle/config.json" >"$tmp" && mv "$tmp" "$bundle/config.json"
fi
exec runc "$@"
EOF
  chmod 755 "$STATE/runc-clamp"
  cat >"$STATE/daemon.json" <<EOF
{
  "runtimes": {"kws-runc": {"path": "$STATE/runc-clamp"}},
  "default-runtime": "kws-runc"
}
EOF
}

write_cni() {
  mkdir -p "$STATE/cni" "$DATA/cni-cache"
  cat >"$STATE/cni/10-kws.conflist" <<EOF
{
  "cniVersion": "0.4.0",
  "name": "kws",
  "plugins": [
    {
      "type": "bridge",
      "bridge": "$BRIDGE",
      "isGateway": true,
      "ipMasq": false,
      "hairpinMode": true,
      "ipam": {"type": "host-local", "subnet": "$POD_SUBNET", "dataDir": "$DATA/cni-ipam"}
    }
  ]
}
EOF
}

# -- processes ----------------------------------------------------------------------

start() { # name, command...
  local name=$1
  shift
  if [ -f "$STATE/$name.pid" ] && kill -0 "$(cat "$STATE/$name.pid")" 2>/dev/null; then
    return
  fi
  setsid "$@" >"$STATE/$name.log" 2>&1 </dev/null &
  echo $! >"$STATE/$name.pid"
}

wait_for() { # what, seconds, command...
  local what=$1 seconds=$2
  shift 2
  local i
  for ((i = 0; i < seconds * 5; i++)); do
    if "$@" >/dev/null 2>&1; then return 0; fi
    sleep 0.2
  done
  die "$what did not come up within ${seconds}s (logs: $STATE/*.log)"
}

kctl() { KUBECONFIG=$STATE/kubeconfig kubectl "$@"; }

up() {
  need_root
  install_packages
  build_kubernetes
  mkdir -p "$STATE" "$DATA"
  write_pki
  write_runtime_wrapper
  write_cni

  log "starting etcd"
  start etcd etcd --name kws --data-dir "$DATA/etcd" \
    --listen-client-urls http://127.0.0.1:2379 --advertise-client-urls http://127.0.0.1:2379 \
    --listen-peer-urls http://127.0.0.1:2380 --initial-advertise-peer-urls http://127.0.0.1:2380 \
    --initial-cluster kws=http://127.0.0.1:2380 --listen-metrics-urls http://127.0.0.1:2381
  wait_for etcd 30 curl -fsS http://127.0.0.1:2379/health

  log "starting kube-apiserver"
  local pki=$STATE/pki
  start apiserver "$BIN/kube-apiserver" \
    --bind-address 127.0.0.1 --secure-port 6443 --advertise-address 127.0.0.1 \
    --endpoint-reconciler-type none \
    --etcd-servers http://127.0.0.1:2379 \
    --tls-cert-file "$pki/apiserver.crt" --tls-private-key-file "$pki/apiserver.key" \
    --client-ca-file "$pki/ca.crt" \
    --token-auth-file "$pki/tokens.csv" --authorization-mode Node,RBAC \
    --service-account-issuer https://kubernetes.default.svc \
    --service-account-key-file "$pki/sa.pub" --service-account-signing-key-file "$pki/sa.key" \
    --service-cluster-ip-range 10.96.0.0/24 \
    --kubelet-preferred-address-types Hostname \
    --allow-privileged=false --insecure-port 0 --profiling=false
  wait_for kube-apiserver 90 kctl get --raw /readyz

  log "starting kube-controller-manager and kube-scheduler"
  start controller-manager "$BIN/kube-controller-manager" \
    --kubeconfig "$STATE/kubeconfig" --bind-address 127.0.0.1 --port 0 \
    --service-account-private-key-file "$pki/sa.key" --root-ca-file "$pki/ca.crt" \
    --use-service-account-credentials=false --controllers '*,-nodeipam,-service,-route,-cloud-node-lifecycle' \
    --leader-elect=false --profiling=false
  start scheduler "$BIN/kube-scheduler" \
    --kubeconfig "$STATE/kubeconfig" --bind-address 127.0.0.1 --port 0 \
    --leader-elect=false --profiling=false

  log "starting dockerd (own socket and data root, no bridge, no iptables)"
  start dockerd dockerd --host "unix://$DOCKER_SOCK" --data-root "$DATA/docker" \
    --exec-root "$STATE/docker-exec" --pidfile "$STATE/dockerd.real.pid" \
    --config-file "$STATE/daemon.json" \
    --bridge=none --iptables=false --ip-forward=false --ip-masq=false --ip6tables=false \
    --storage-driver overlay2
  wait_for dockerd 60 kdocker info
  import_images

  log "starting the kubelet"
  mkdir -p "$DATA/kubelet"
  start kubelet env AWS_EC2_METADATA_DISABLED=true "$BIN/kubelet" \
    --kubeconfig "$STATE/kubeconfig" \
    --container-runtime docker --docker-endpoint "unix://$DOCKER_SOCK" \
    --pod-infra-container-image "$PAUSE_IMAGE" \
    --cgroup-driver cgroupfs --fail-swap-on=false \
    --address 127.0.0.1 --hostname-override localhost --read-only-port 0 \
    --anonymous-auth=true --authorization-mode AlwaysAllow \
    --network-plugin cni --cni-bin-dir /usr/lib/cni --cni-conf-dir "$STATE/cni" \
    --cni-cache-dir "$DATA/cni-cache" \
    --root-dir "$DATA/kubelet" --cert-dir "$STATE/kubelet-pki" \
    --eviction-hard 'nodefs.available<1%,imagefs.available<1%,memory.available<100Mi' \
    --image-gc-high-threshold 100 --image-gc-low-threshold 99 \
    --serialize-image-pulls=false --register-node=true
  wait_for "node localhost" 120 kctl get node localhost
  kctl wait node/localhost --for=condition=Ready --timeout=120s >/dev/null
  log "ready: KUBECONFIG=$STATE/kubeconfig (node localhost, Kubernetes $K8S_VERSION)"
}

stop_pid() { # name
  local file=$STATE/$1.pid pid
  [ -f "$file" ] || return 0
  pid=$(cat "$file")
  if kill -0 "$pid" 2>/dev/null; then
    kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
    kill -KILL "$pid" 2>/dev/null || true
  fi
  rm -f "$file"
}

down() {
  need_root
  log "stopping"
  stop_pid kubelet
  if [ -S "$DOCKER_SOCK" ]; then
    local ids
    ids=$(kdocker ps -aq 2>/dev/null || true)
    # shellcheck disable=SC2086
    [ -z "$ids" ] || kdocker rm -f $ids >/dev/null 2>&1 || true
  fi
  stop_pid scheduler
  stop_pid controller-manager
  stop_pid apiserver
  stop_pid etcd
  stop_pid dockerd
  # Mounts the kubelet and dockerd left behind, deepest first.
  local mp
  while read -r mp; do umount -l "$mp" 2>/dev/null || true; done < <(
    awk -v d="$DATA" -v s="$STATE" '$2 ~ "^"d || $2 ~ "^"s {print $2}' /proc/mounts | sort -r
  )
  if ip link show "$BRIDGE" >/dev/null 2>&1; then
    ip link delete "$BRIDGE"
  fi
  rm -rf "$DATA/etcd" "$DATA/kubelet" "$DATA/cni-ipam" "$DATA/cni-cache" "$STATE/pki" "$STATE/kubeconfig"
  log "stopped (cache kept in $CACHE; docker images kept in $DATA/docker)"
}

status() {
  local name
  for name in etcd apiserver controller-manager scheduler dockerd kubelet; do
    if [ -f "$STATE/$name.pid" ] && kill -0 "$(cat "$STATE/$name.pid")" 2>/dev/null; then
      echo "$name: running (pid $(cat "$STATE/$name.pid"))"
    else
      echo "$name: stopped"
    fi
  done
}

case "${1:-}" in
  up) up ;;
  down) down ;;
  status) status ;;
  docker) shift; kdocker "$@" ;;
  build)
    need_root
    install_packages
    build_kubernetes
    base_rootfs_tar >/dev/null
    build_rootfs_tar >/dev/null
    redis_rootfs_tar >/dev/null
    ;;
  *) die "usage: $0 up|down|status|build|docker ARGS..." ;;
esac
