#!/usr/bin/env bash
# Install everything the test suite needs, then run all of it: ruff, then pytest on two
# engines at once: Debian's Docker 20.10 and the Docker 28.5 of ../shared/engines, each
# leg with the CRI conformance suite (critest, crictl) of ../shared/conformance.
# Run as root on Debian: the suite starts its own private dockerd and registry
# (under /tmp, on their own socket and bridge) and stops exactly what it starts.
#   ./scripts/test.sh [pytest args...]        (the args go to each engine's leg)
set -euo pipefail
cd "$(dirname "$0")/.."

# The real parts the tests run on, from Debian's packages:
#   docker.io (dockerd 20.10, API 1.41), docker-registry, containernetworking-plugins,
#   busybox (dynamic: test images are built from it), apache2-utils (htpasswd for
#   registry auth), iproute2 (the private daemon's bridge; ip netns and tc for the CNI
#   tests), iptables (portmap and bridge's ipMasq), util-linux (nsenter), criu (Docker's
#   checkpoints, for CheckpointContainer); gcc, libc6-dev, openssl and curl for the
#   conformance kit's setup.sh (its image stand-ins and its registry's certificates).
packages=(docker.io docker-registry containernetworking-plugins iptables busybox apache2-utils iproute2 util-linux criu ca-certificates gcc libc6-dev openssl curl)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  echo "== installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  # policy-rc.d: installing docker.io must not start the machine's own dockerd;
  # the suite runs a private one.
  had_policy=0; [ -e /usr/sbin/policy-rc.d ] && had_policy=1
  if [ "$had_policy" = 0 ]; then printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d; chmod +x /usr/sbin/policy-rc.d; fi
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  if [ "$had_policy" = 0 ]; then rm -f /usr/sbin/policy-rc.d; fi
fi

# An independent SPDY/3.1 peer for the streaming tests: Node.js's spdy-transport.
if ! command -v node >/dev/null || ! command -v npm >/dev/null; then
  echo "== installing nodejs npm"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends nodejs npm >/dev/null
fi
echo "== installing the SPDY test peer (npm ci)"
npm ci --prefix tests/peers/spdy --no-audit --no-fund --loglevel=error >/dev/null

if [ ! -x .venv/bin/python ]; then
  echo "== creating .venv"
  python3 -m venv .venv 2>/dev/null || {
    apt-get install -y -qq python3-venv >/dev/null && python3 -m venv .venv
  }
fi
echo "== installing crishim and its test dependencies"
.venv/bin/python -m pip install -q --upgrade pip >/dev/null
.venv/bin/python -m pip install -q -e '.[test]'

echo "== ruff"
.venv/bin/ruff check src tests bench scripts
.venv/bin/ruff format --check src tests bench scripts

# The legs: Debian's engine runs everything; Docker 28.5 runs what meets a daemon.
KIT=../shared/conformance
ENGINE28=$(cd .. && pwd)/shared/engines/docker-28.5.2/dockerd
common=()
if [ ! -x "$KIT/bin/critest" ]; then
  echo "== conformance: $KIT is absent here: the conformance leg (critest, crictl) did not run"
  common+=(--ignore=tests/conformance)
fi
if (($#)); then debian=("$@"); current=("$@"); else debian=(tests); current=(tests/integration tests/conformance); fi
logs=$(mktemp -d /tmp/crishim-test-legs.XXXXXX)
# critest's mount propagation specs bind-mount /tmp/test<hex>/mnt (beside propagationSrcDir)
# and leave it; both legs run critest at once, so what they left is removed after both end.
propagation_dirs() {
  local d
  for d in /tmp/test*/propagationSrcDir; do if [ -d "$d" ]; then echo "${d%/propagationSrcDir}"; fi; done
}
propagation_dirs | sort > "$logs/propagation.before"
leg28=""
if [ -x "$ENGINE28" ]; then
  echo "== pytest on Docker 28.5 (in the background: $logs/docker-28.5.log, shown when it ends)"
  CRISHIM_TEST_DOCKERD=$ENGINE28 .venv/bin/python -m pytest -p no:cacheprovider "${common[@]}" "${current[@]}" \
    > "$logs/docker-28.5.log" 2>&1 &
  leg28=$!
else
  echo "== Docker 28.5: ${ENGINE28%/dockerd} is absent here: the Docker 28.5 leg did not run"
fi
trap '[ -n "$leg28" ] && kill "$leg28" 2>/dev/null' EXIT
echo "== pytest on Debian's Docker $(/usr/sbin/dockerd --version | awk '{print $3}' | tr -d ,)"
started=$SECONDS
rc=0
.venv/bin/python -m pytest -p no:cacheprovider "${common[@]}" "${debian[@]}" || rc=$?
echo "== Debian's engine leg: exit $rc after $((SECONDS - started)) s"
if [ -n "$leg28" ]; then
  rc28=0; wait "$leg28" || rc28=$?; leg28=""
  echo "== pytest on Docker 28.5 (exit $rc28 after $((SECONDS - started)) s):"
  cat "$logs/docker-28.5.log"
  ((rc)) || rc=$rc28
fi
for d in $(propagation_dirs | sort | comm -13 "$logs/propagation.before" - || true); do
  for m in $(grep -o " $d/[^ ]*" /proc/self/mounts | sort -r || true); do umount -l "$m" || true; done
  rm -rf "$d"
done
rm -rf "$logs"
exit "$rc"
