#!/usr/bin/env bash
# Install crishim and start it serving the CRI on /run/crishim/crishim.sock.
# Run as root on Debian. Where no Docker Engine runs, installs Debian's docker.io
# and starts it. With systemd: installs and enables deploy/crishim.{socket,service}.
# Without systemd: starts `crishim serve` in the background (log /var/log/crishim.log,
# pid /run/crishim/crishim.pid).
set -euo pipefail
cd "$(dirname "$0")/.."
export DEBIAN_FRONTEND=noninteractive
PREFIX=/opt/crishim
SOCK=/var/run/docker.sock

have_systemd() { [ -d /run/systemd/system ]; }
docker_up() { [ -S "$SOCK" ] && docker_ping; }
docker_ping() { python3 - "$SOCK" <<'PY'
import socket, sys
s = socket.socket(socket.AF_UNIX); s.settimeout(3)
try:
    s.connect(sys.argv[1]); s.sendall(b"GET /_ping HTTP/1.0\r\n\r\n")
    sys.exit(0 if b" 200 " in s.recv(64) else 1)
except OSError:
    sys.exit(1)
PY
}

# 1. Docker Engine
if ! docker_up; then
  if ! command -v dockerd >/dev/null && [ ! -x /usr/sbin/dockerd ]; then
    echo "== installing Docker Engine (Debian docker.io)"
    apt-get update -qq
    apt-get install -y -qq docker.io >/dev/null
  fi
  if have_systemd; then
    systemctl enable --now docker.service
  else
    echo "== starting dockerd (log /var/log/dockerd.log)"
    nohup /usr/sbin/dockerd >>/var/log/dockerd.log 2>&1 &
  fi
  for _ in $(seq 60); do docker_up && break; sleep 1; done
  docker_up || { echo "dockerd did not come up; see /var/log/dockerd.log" >&2; exit 1; }
fi
echo "== Docker Engine is up"

# 2. crishim, in its own virtual environment
echo "== installing crishim into $PREFIX"
python3 -m venv "$PREFIX/venv" 2>/dev/null || { apt-get install -y -qq python3-venv >/dev/null; python3 -m venv "$PREFIX/venv"; }
"$PREFIX/venv/bin/python" -m pip install -q --upgrade pip >/dev/null
# setuptools builds in ./build and copies what it finds there into the wheel: a build
# left by an older checkout (before modules moved) would install its stale modules too.
rm -rf build
"$PREFIX/venv/bin/python" -m pip install -q .
ln -sf "$PREFIX/venv/bin/crishim" /usr/local/bin/crishim
mkdir -p /etc/crishim
[ -e /etc/crishim/crishim.toml ] || cp deploy/crishim.toml /etc/crishim/crishim.toml

# 3. the pod network (cni mode, the default): where no CNI config exists yet, Debian's
#    reference plugins and a default dual-stack bridge network (crishim cni-config), as
#    containerd's packaging ships one. A cluster's network add-on may replace it later.
read -r mode conf_dir < <("$PREFIX/venv/bin/python" -c 'from crishim import config
c = config.load({"config": "/etc/crishim/crishim.toml"}); print(c.network_plugin, c.cni_conf_dir)')
if [ "$mode" = cni ]; then
  if ! ls "$conf_dir"/*.conflist "$conf_dir"/*.conf "$conf_dir"/*.json >/dev/null 2>&1; then
    if ! dpkg-query -W -f='${Status}' containernetworking-plugins 2>/dev/null | grep -q "install ok installed"; then
      echo "== installing the CNI reference plugins (Debian containernetworking-plugins)"
      apt-get update -qq
      apt-get install -y -qq --no-install-recommends containernetworking-plugins >/dev/null
    fi
    echo "== writing a default pod network into $conf_dir"
    /usr/local/bin/crishim cni-config --config /etc/crishim/crishim.toml
  fi
fi

# 4. preflight, then serve
running() { [ -f /run/crishim/crishim.pid ] && kill -0 "$(cat /run/crishim/crishim.pid)" 2>/dev/null; }
if ! have_systemd && ! running; then
  /usr/local/bin/crishim check --config /etc/crishim/crishim.toml
fi
if have_systemd; then
  cp deploy/crishim.service deploy/crishim.socket /etc/systemd/system/
  systemctl daemon-reload
  systemctl enable --now crishim.socket crishim.service
  systemctl restart crishim.service
else
  PIDFILE=/run/crishim/crishim.pid
  mkdir -p /run/crishim
  if running; then
    echo "== crishim already runs (pid $(cat "$PIDFILE"))"
  else
    echo "== starting crishim (log /var/log/crishim.log)"
    nohup /usr/local/bin/crishim serve --config /etc/crishim/crishim.toml >>/var/log/crishim.log 2>&1 &
    echo $! > "$PIDFILE"
  fi
fi
# 5. prove it serves: a real CRI Version call over the socket, retried for 30 s (a socket
#    left by a crishim that was killed exists, but refuses, until the new one binds it)
"$PREFIX/venv/bin/python" - <<'PY' || { echo "crishim is not serving; see /var/log/crishim.log" >&2; exit 1; }
import asyncio
import time
from grpclib.client import Channel
from crishim.api.runtime import v1 as api

async def main() -> None:
    give_up = time.monotonic() + 30
    while True:
        channel = Channel(path="/run/crishim/crishim.sock")
        try:
            call = api.RuntimeServiceStub(channel).version(api.VersionRequest())
            v = await asyncio.wait_for(call, 10)
            break
        except OSError:
            if time.monotonic() > give_up:
                raise
            await asyncio.sleep(0.5)
        finally:
            channel.close()
    print(f"== crishim serves unix:///run/crishim/crishim.sock: {v.runtime_name}://{v.runtime_version}")

asyncio.run(main())
PY
echo "   kubelet: --container-runtime-endpoint=unix:///run/crishim/crishim.sock (see deploy/kubelet.md)"
