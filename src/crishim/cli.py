"""The `crishim` command: `serve`, `check`, `--version`."""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Sequence

from crishim import __version__, config
from crishim.common import errors, logsetup


def _add_settings(parser: argparse.ArgumentParser) -> None:
    # default=None everywhere: an absent flag must not hide env or file values.
    add = parser.add_argument
    add("--config", metavar="FILE", help="TOML settings file (also CRISHIM_CONFIG)")
    add("--listen", help="CRI endpoint: unix:///path or fd:// [unix:///run/crishim/crishim.sock]")
    add(
        "--docker-endpoint",
        help="Docker API: unix:///path or tcp://host:port "
        "[DOCKER_HOST, else unix:///var/run/docker.sock]",
    )
    add("--state-dir", help="crishim's on-disk state [/var/lib/crishim]")
    add("--lock-dir", help="lock of the one log copier per Docker daemon [/run/crishim]")
    add("--pause-image", help="pod sandbox image [registry.k8s.io/pause:3.10]")
    add("--streaming-address", help="exec/attach/port-forward server host:port [127.0.0.1:0]")
    add("--streaming-tls-cert", metavar="PEM", help="serve streaming over TLS with this cert")
    add("--streaming-tls-key", metavar="PEM", help="... and this key")
    add("--stream-idle-timeout", type=float, help="seconds before an idle stream closes [14400]")
    add("--stream-token-ttl", type=float, help="seconds a streaming URL stays usable [60]")
    add(
        "--metrics-address", help="Prometheus /metrics host:port, empty to disable [127.0.0.1:9611]"
    )
    add(
        "--network-plugin",
        choices=config.NETWORK_PLUGINS,
        help="pod networks: cni (the cluster's plugins) or docker (Docker's bridge) [cni]",
    )
    add("--cni-conf-dir", help="CNI network configs [/etc/cni/net.d]")
    add("--cni-bin-dir", help="CNI plugin search path [/opt/cni/bin:/usr/lib/cni]")
    add("--cri-dockerd-root", help="cri-dockerd's state, read for adopted pods")
    add("--cni-cache-dir", help="libcni's result cache, read for adopted pods [/var/lib/cni]")
    add("--log-format", choices=config.LOG_FORMATS, help="[json]")
    add("--log-level", choices=config.LOG_LEVELS, help="[info]")
    add("--shutdown-grace-seconds", type=float, help="time in-flight calls get on SIGTERM [30]")
    add(
        "--pull-progress-timeout",
        type=float,
        help="abort a pull without progress for this long [60]",
    )
    add("--pull-log-interval", type=float, help="seconds between pull progress logs [10]")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="crishim",
        description="A Kubernetes CRI runtime that runs pods on a Docker Engine.",
        epilog="Settings: flags override CRISHIM_* environment variables, which override "
        "the --config TOML file, which overrides the defaults.",
    )
    parser.add_argument("--version", action="version", version=f"crishim {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    _add_settings(sub.add_parser("serve", help="serve the CRI on the listen socket"))
    _add_settings(sub.add_parser("check", help="preflight checks of this node; non-zero on FAIL"))
    _add_settings(
        sub.add_parser(
            "cni-config",
            help="write a default dual-stack bridge network into cni_conf_dir if it has none",
        )
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = vars(build_parser().parse_args(argv))
    command = args.pop("command")
    try:
        settings = config.load(args)
    except errors.CrishimError as exc:
        print(f"crishim: {exc}", file=sys.stderr)
        return 2
    if command == "check":
        return asyncio.run(_check(settings))
    if command == "cni-config":
        return _cni_config(settings)
    logsetup.configure(settings.log_format, settings.log_level)
    try:
        return asyncio.run(_serve(settings))
    except errors.CrishimError as exc:
        print(f"crishim: {exc}", file=sys.stderr)
        return 1


async def _serve(settings: config.Config) -> int:
    from crishim import daemon  # imports the whole server; not needed by `check`

    return await daemon.serve(settings)


async def _check(settings: config.Config) -> int:
    from crishim import preflight

    logsetup.configure(settings.log_format, "error")
    results = await preflight.run_checks(settings)
    for result in results:
        print(result)
    failed = [r for r in results if r.level == "FAIL"]
    print(f"{len(failed)} failed, {sum(r.level == 'WARN' for r in results)} warnings")
    return 1 if failed else 0


def _cni_config(settings: config.Config) -> int:
    from pathlib import Path

    from crishim.network import default

    conf_dir = Path(settings.cni_conf_dir)
    try:
        written = default.write_if_absent(conf_dir)
    except OSError as exc:
        print(f"crishim: cannot write into {conf_dir}: {exc.strerror}", file=sys.stderr)
        return 1
    if written is None:
        print(f"{conf_dir} already has a network config; left as it is")
    else:
        print(f"wrote {written} (bridge crishim0, {default.IPV4_RANGE} and {default.IPV6_RANGE})")
    return 0
