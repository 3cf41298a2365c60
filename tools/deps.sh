#!/usr/bin/env bash
# make deps: install every system dependency ESCAPE needs, idempotently.
#
# - bookworm packages through the system's own apt: BPF build tools, iptables
#   (CRIU locks the container network with iptables-restore during dump),
#   runc, and the per-event baselines (bpftrace, strace) the benchmark uses.
# - containerd 2.x and CRIU >= 4.2 from Debian unstable, fetched through a
#   PRIVATE apt configuration and unpacked into $ESCAPE_PREFIX. The system's
#   apt sources and its glibc are never touched: unstable's CRIU needs glibc
#   >= 2.38, so it runs through the private prefix's own loader (a wrapper
#   named `criu`, first on containerd's PATH, because runc looks criu up there).
# - for the lab's Kubernetes node (escape-lab up --kubernetes): bookworm's CNI
#   plugins (/usr/lib/cni) and etcd, the latter unpacked into $ESCAPE_PREFIX
#   rather than installed, so that no etcd service starts on the machine
#   itself. The Kubernetes binaries are built by tools/lab/kube_build.sh (make kube-bins).
#
# A re-run on an installed machine only verifies, and takes seconds.
set -euo pipefail

PREFIX=${ESCAPE_PREFIX:-/opt/escape}
APTDIR=$PREFIX/apt
STAMP=$PREFIX/.deps-ok
# Bump when this script's result changes, so installed machines re-run it.
STAMP_VERSION=5

# systemd: systemd-analyze, which verifies deploy/systemd's units in the tests
# (already present on any Debian host booted with systemd).
BOOKWORM_PKGS=(clang llvm libbpf-dev bpftool iptables runc bpftrace strace
  iproute2 util-linux busybox-static tmux redis-tools curl systemd containernetworking-plugins
  postgresql nginx-light python3 openjdk-17-jre-headless)

log() { printf '[deps] %s\n' "$*" >&2; }
die() { printf '[deps] ERROR: %s\n' "$*" >&2; exit 1; }

[ "$(id -u)" = 0 ] || die "must run as root: it installs packages and runs 'criu check' (try: sudo make deps)"
[ "$(uname -m)" = x86_64 ] || die "only x86_64 is supported (found $(uname -m)): the private CRIU prefix is amd64"
command -v apt-get >/dev/null || die "apt-get not found: ESCAPE's installer targets Debian 12 (bookworm)"

version_ge() { # version_ge A B: A >= B
  [ "$(printf '%s\n%s\n' "$2" "$1" | sort -V | head -n1)" = "$2" ]
}

criu_wrapper_version() { "$PREFIX/bin/criu" --version 2>/dev/null | sed -n 's/^Version: *//p'; }
etcd_version() { "$PREFIX/bin/etcd" --version 2>/dev/null | sed -n 's/^etcd Version: *//p'; }
containerd_version() { "$PREFIX/bin/containerd" --version 2>/dev/null | awk '{print $3}' | sed 's/^v//'; }

verify() {
  local ok=0 v
  for p in "${BOOKWORM_PKGS[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || { log "missing bookworm package: $p"; ok=1; }
  done
  v=$(containerd_version || true)
  if [ -z "$v" ]; then log "containerd not runnable at $PREFIX/bin/containerd"; ok=1
  elif ! version_ge "$v" 2.1; then log "containerd $v is older than 2.1"; ok=1; fi
  [ -x "$PREFIX/bin/containerd-shim-runc-v2" ] || { log "containerd-shim-runc-v2 missing"; ok=1; }
  v=$(criu_wrapper_version || true)
  if [ -z "$v" ]; then log "criu not runnable through $PREFIX/bin/criu"; ok=1
  elif ! version_ge "$v" 4.2; then log "criu $v is older than 4.2: its dump hangs on kernels >= 6.16"; ok=1; fi
  command -v runc >/dev/null || { log "runc not on PATH"; ok=1; }
  v=$(etcd_version || true)
  [ -n "$v" ] || { log "etcd not runnable at $PREFIX/bin/etcd"; ok=1; }
  [ -x /usr/lib/cni/bridge ] && [ -x /usr/lib/cni/host-local ] || { log "CNI plugins missing from /usr/lib/cni"; ok=1; }
  return $ok
}

if [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$STAMP_VERSION" ] && verify 2>/dev/null; then
  log "all dependencies present (containerd $(containerd_version), criu $(criu_wrapper_version), runc $(runc --version | awk 'NR==1{print $3}')); nothing to do"
  exit 0
fi

# 1. bookworm packages, through the system's own apt configuration.
missing=()
for p in "${BOOKWORM_PKGS[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  log "installing from bookworm: ${missing[*]}"
  apt-get update -q >/dev/null || die "apt-get update failed: is Debian's archive reachable?"
  # The scenarios start nginx and postgresql themselves, in namespaces of
  # their own; their packages must not start them on the host (nginx would
  # listen on every address). Debian's policy-rc.d says so for the install,
  # unless the host already has one.
  policy=/usr/sbin/policy-rc.d
  if [ ! -e "$policy" ]; then
    printf '#!/bin/sh\n# make deps: no service starts while ESCAPE installs packages\nexit 101\n' >"$policy"
    chmod 755 "$policy"
    trap 'rm -f "$policy"' EXIT
  fi
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}" >/dev/null \
    || die "apt-get install ${missing[*]} failed"
  if trap -p EXIT | grep -q policy; then rm -f "$policy"; trap - EXIT; fi
fi

# 2. a private apt configuration that reaches Debian unstable.
mkdir -p "$APTDIR/sources" "$APTDIR/lists/partial" "$APTDIR/cache/archives/partial" "$APTDIR/debs"
cat >"$APTDIR/sources/sid.sources" <<EOF
Types: deb
URIs: http://deb.debian.org/debian
Suites: sid
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
EOF
SID_APT=(-o Dir::Etc::SourceList=/dev/null -o "Dir::Etc::SourceParts=$APTDIR/sources"
  -o "Dir::State::Lists=$APTDIR/lists" -o "Dir::Cache=$APTDIR/cache"
  -o Dir::Etc::Preferences=/dev/null -o Dir::Etc::PreferencesParts=/dev/null
  -o Dir::State::status=/dev/null -o APT::Architecture=amd64 -o APT::Architectures=amd64 -o APT::Sandbox::User=root)
log "refreshing the private unstable index in $APTDIR"
apt-get "${SID_APT[@]}" update -q >/dev/null || die "private apt update of Debian unstable failed: is deb.debian.org reachable?"

# sid_closure PKG: PKG and the shared-library packages it needs, resolved now
# because unstable moves. Non-library dependencies (python, tools) are left
# out: the private prefix only has to satisfy the dynamic loader.
sid_closure() {
  apt-cache "${SID_APT[@]}" depends --recurse --no-recommends --no-suggests --no-conflicts \
    --no-breaks --no-replaces --no-enhances "$1" 2>/dev/null |
    awk '/^[a-z0-9]/ {print $1}' | sort -u |
    grep -E "^($1|lib.*|gcc-[0-9]+-base)$" | grep -vE '^(libc-bin|libc-dev-bin|libperl.*|libpython.*)$'
}

unpack() { # unpack DEST PKG...: download from unstable and extract.
  local dest=$1; shift
  (cd "$APTDIR/debs" && apt-get "${SID_APT[@]}" download -q "$@" >/dev/null) \
    || die "downloading from unstable failed: $*"
  rm -rf "$dest.new" && mkdir -p "$dest.new"
  for p in "$@"; do
    local deb
    deb=$(ls -t "$APTDIR/debs/${p}_"*.deb | head -n1) || die "no .deb downloaded for $p"
    dpkg-deb -x "$deb" "$dest.new" || die "unpacking $deb failed"
  done
  rm -rf "$dest" && mv "$dest.new" "$dest"
}

mkdir -p "$PREFIX/bin"

# 3. containerd 2.x: its binaries need only glibc >= 2.34, so they run as they are.
log "fetching containerd from unstable"
unpack "$PREFIX/containerd" containerd
for b in containerd containerd-shim-runc-v2 ctr; do
  ln -sf "$PREFIX/containerd/usr/bin/$b" "$PREFIX/bin/$b"
done

# 4. CRIU >= 4.2 with its libraries (and unstable's glibc) in a private prefix.
log "resolving CRIU's library closure in unstable"
mapfile -t criu_pkgs < <(sid_closure criu)
[ ${#criu_pkgs[@]} -gt 0 ] || die "could not resolve criu's dependencies in unstable"
log "fetching ${#criu_pkgs[@]} packages for CRIU: ${criu_pkgs[*]}"
unpack "$PREFIX/criu" "${criu_pkgs[@]}"
C=$PREFIX/criu
cat >"$PREFIX/bin/criu" <<EOF
#!/bin/sh
# CRIU from Debian unstable, run through its own glibc so the system's stays untouched.
exec "$C/usr/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2" --library-path "$C/usr/lib/x86_64-linux-gnu:$C/lib/x86_64-linux-gnu" "$C/usr/sbin/criu" "\$@"
EOF
chmod 0755 "$PREFIX/bin/criu"
unresolved=$("$C/usr/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2" --library-path "$C/usr/lib/x86_64-linux-gnu:$C/lib/x86_64-linux-gnu" --list "$C/usr/sbin/criu" 2>&1 | grep 'not found' || true)
[ -z "$unresolved" ] || die "CRIU's private prefix is missing libraries: $unresolved"

# 5. etcd for the lab's Kubernetes node, from bookworm (the system's own
# sources), unpacked: installing the package would start an etcd service on
# the machine itself.
log "fetching etcd-server from bookworm"
mkdir -p "$APTDIR/bookworm-debs"
(cd "$APTDIR/bookworm-debs" && apt-get download -q etcd-server >/dev/null) || die "apt-get download etcd-server failed"
deb=$(ls -t "$APTDIR/bookworm-debs/etcd-server_"*.deb | head -n1) || die "no etcd-server .deb downloaded"
rm -rf "$PREFIX/etcd.new" && mkdir -p "$PREFIX/etcd.new" && dpkg-deb -x "$deb" "$PREFIX/etcd.new" || die "unpacking $deb failed"
rm -rf "$PREFIX/etcd" && mv "$PREFIX/etcd.new" "$PREFIX/etcd"
ln -sf "$PREFIX/etcd/usr/bin/etcd" "$PREFIX/bin/etcd"

# 6. verify, and prove CRIU works on this kernel.
verify || die "verification failed (see above)"
check=$("$PREFIX/bin/criu" check 2>&1) || die "'criu check' failed on kernel $(uname -r): $check"
log "criu check: $(echo "$check" | tail -n1)"
echo "$STAMP_VERSION" >"$STAMP.tmp" && mv "$STAMP.tmp" "$STAMP"
log "installed: containerd $(containerd_version), criu $(criu_wrapper_version), runc $(runc --version | awk 'NR==1{print $3}'), etcd $(etcd_version)"
