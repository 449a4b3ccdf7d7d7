"""Run a CNI network list: ADD, DEL, CHECK, GC and STATUS, as the CNI spec says.

Each plugin is a program: its configuration goes in on stdin, the operation
and the attachment in CNI_* environment variables, and it answers with a JSON
result (success) or a JSON error {code, msg, details} and a non-zero exit.
For a list, as libcni does it:
  - every plugin's config gets the list's `name` and `cniVersion`, the
    previous plugin's result as `prevResult` (ADD), the result of the ADD as
    `prevResult` (DEL and CHECK, from CNI 0.4.0 on), and a `runtimeConfig`
    holding only the capability arguments the plugin declares in its
    `capabilities` (portMappings, bandwidth, ipRanges, dns, ...);
  - ADD runs the plugins in order, and the last result is the list's result;
  - DEL runs them in reverse order and goes on past a failing plugin, so one
    broken plugin does not keep the others from releasing what they hold;
    the first error is reported afterwards;
  - CHECK (0.4.0+) runs in order unless the list says disableCheck;
  - GC and STATUS exist from 1.1.0 on.
Plugins run as asyncio subprocesses (never on the event loop), bounded by the
caller's deadline; a plugin that outlives it is killed.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import time
from dataclasses import dataclass, field
from typing import Any

import structlog
from grpclib.const import Status

from crishim.common import calltime, deadlines, errors, metrics
from crishim.network.conf import (
    NetworkList,
    PluginConf,
    find_plugin,
    supports_check,
    supports_gc_and_status,
)

log = structlog.get_logger(__name__)

PLUGIN_TIMEOUT = 120.0  # seconds one plugin run may take, when the caller has no deadline
MAX_OUTPUT = 4 * 1024 * 1024
TRY_AGAIN_LATER = 11  # CNI's well-known error code for a transient failure


class PluginFailed(errors.FailedPrecondition):
    """A CNI plugin reported an error; the message is the plugin's own."""

    status = Status.FAILED_PRECONDITION

    def __init__(self, message: str, code: int = 0) -> None:
        super().__init__(message)
        self.code = code
        if code == TRY_AGAIN_LATER:
            self.status = Status.UNAVAILABLE


@dataclass(frozen=True, slots=True)
class Attachment:
    """One pod's attachment to a network: what every plugin run is told about it."""

    container_id: str
    netns: str
    ifname: str = "eth0"
    args: tuple[tuple[str, str], ...] = ()
    capability_args: dict[str, Any] = field(default_factory=dict)

    def cni_args(self) -> str:
        return ";".join(f"{k}={v}" for k, v in self.args)


def plugin_config(
    network: NetworkList,
    plugin: PluginConf,
    capability_args: dict[str, Any],
    prev_result: dict[str, Any] | None,
) -> dict[str, Any]:
    """The stdin document of one plugin run (libcni's buildOneConfig)."""
    conf: dict[str, Any] = dict(plugin.conf)
    conf["name"] = network.name
    conf["cniVersion"] = network.cni_version
    if prev_result is not None:
        conf["prevResult"] = prev_result
    runtime = {k: v for k, v in capability_args.items() if k in plugin.capabilities}
    if runtime:
        conf["runtimeConfig"] = runtime
    return conf


class Cni:
    """Runs network lists with plugins found on `bin_dirs`."""

    def __init__(self, bin_dirs: tuple[str, ...]) -> None:
        self.bin_dirs = bin_dirs

    async def add(self, network: NetworkList, att: Attachment) -> dict[str, Any]:
        """ADD every plugin in order; the last plugin's result is the list's."""
        result: dict[str, Any] | None = None
        for plugin in network.plugins:
            conf = plugin_config(network, plugin, att.capability_args, result)
            result = await self._run("ADD", plugin, conf, att)
            if result is None:
                raise PluginFailed(f"plugin type={plugin.type!r} returned no result for ADD")
        assert result is not None
        return result

    async def delete(
        self, network: NetworkList, att: Attachment, prev_result: dict[str, Any] | None
    ) -> None:
        """DEL every plugin in reverse order, all of them even when one fails."""
        prev = prev_result if supports_check(network.cni_version) else None
        first: errors.CrishimError | None = None
        for plugin in reversed(network.plugins):
            conf = plugin_config(network, plugin, att.capability_args, prev)
            try:
                await self._run("DEL", plugin, conf, att)
            except errors.CrishimError as exc:
                log.warning("cni_del_failed", plugin=plugin.type, error=str(exc))
                first = first or exc
        if first is not None:
            raise first

    async def check(
        self, network: NetworkList, att: Attachment, prev_result: dict[str, Any] | None
    ) -> bool:
        """CHECK every plugin in order; False when the version or the list rules it out."""
        if network.disable_check or not supports_check(network.cni_version):
            return False
        for plugin in network.plugins:
            conf = plugin_config(network, plugin, att.capability_args, prev_result)
            await self._run("CHECK", plugin, conf, att)
        return True

    async def gc(self, network: NetworkList, valid: list[tuple[str, str]]) -> bool:
        """GC (1.1.0+): plugins release whatever is not one of the `valid` attachments."""
        if network.disable_gc or not supports_gc_and_status(network.cni_version):
            return False
        attachments = [{"containerID": c, "ifname": i} for c, i in valid]
        for plugin in network.plugins:
            conf = plugin_config(network, plugin, {}, None)
            conf["cni.dev/valid-attachments"] = attachments
            await self._run("GC", plugin, conf, None)
        return True

    async def status(self, network: NetworkList) -> bool:
        """STATUS (1.1.0+): raises PluginFailed while a plugin says it cannot add pods."""
        if not supports_gc_and_status(network.cni_version):
            return False
        for plugin in network.plugins:
            await self._run("STATUS", plugin, plugin_config(network, plugin, {}, None), None)
        return True

    # -- one plugin run ---------------------------------------------------------

    async def _run(
        self, command: str, plugin: PluginConf, conf: dict[str, Any], att: Attachment | None
    ) -> dict[str, Any] | None:
        path = await asyncio.to_thread(find_plugin, plugin.type, self.bin_dirs)
        if path is None:
            raise PluginFailed(
                f"failed to find plugin {plugin.type!r} in path {list(self.bin_dirs)}"
            )
        env = {
            "CNI_COMMAND": command,
            "CNI_PATH": ":".join(self.bin_dirs),
            "PATH": os.environ.get("PATH", "/usr/sbin:/usr/bin:/sbin:/bin"),
        }
        if att is not None:
            env |= {
                "CNI_CONTAINERID": att.container_id,
                "CNI_NETNS": att.netns,
                "CNI_IFNAME": att.ifname,
                "CNI_ARGS": att.cni_args(),
            }
        started = time.perf_counter()
        proc = await asyncio.create_subprocess_exec(
            path,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            env=env,
            start_new_session=True,
        )
        try:
            async with deadlines.limit(PLUGIN_TIMEOUT, f"CNI {command} of plugin {plugin.type}"):
                stdout, stderr = await proc.communicate(json.dumps(conf).encode())
        except BaseException:
            # Cancelled or out of time: the plugin must not live on unobserved.
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            with contextlib.suppress(Exception):
                await asyncio.shield(proc.wait())
            raise
        finally:
            spent = time.perf_counter() - started
            metrics.CNI_SECONDS.labels(command, plugin.type).observe(spent)
            calltime.add("cni", spent)
        log.debug(
            "cni_plugin_ran",
            command=command,
            plugin=plugin.type,
            exit_code=proc.returncode,
            duration_ms=round((time.perf_counter() - started) * 1000, 1),
        )
        if proc.returncode != 0:
            raise _failure(command, plugin.type, proc.returncode, stdout, stderr)
        if command not in ("ADD",) or not stdout.strip():
            return None
        if len(stdout) > MAX_OUTPUT:
            raise PluginFailed(f"plugin type={plugin.type!r} ({command}): result too large")
        try:
            result = json.loads(stdout)
        except ValueError:
            raise PluginFailed(
                f"plugin type={plugin.type!r} ({command}): unreadable result {stdout[:200]!r}"
            ) from None
        if not isinstance(result, dict):
            raise PluginFailed(f"plugin type={plugin.type!r} ({command}): result is not an object")
        return result


def _failure(
    command: str, kind: str, code: int | None, stdout: bytes, stderr: bytes
) -> PluginFailed:
    """The plugin's own error message (JSON on stdout per the spec, else its stderr)."""
    message, cni_code = "", 0
    with contextlib.suppress(ValueError, AttributeError):
        doc = json.loads(stdout)
        message = str(doc.get("msg") or "")
        if doc.get("details"):
            message += f": {doc['details']}"
        cni_code = int(doc.get("code") or 0)
    if not message:
        message = (stderr or stdout).decode(errors="replace").strip()[-500:] or f"exit {code}"
    return PluginFailed(f"plugin type={kind!r} failed ({command.lower()}): {message}", cni_code)


def result_ips(result: dict[str, Any] | None) -> tuple[str, ...]:
    """The pod's addresses (no prefix length) from an ADD result: IPv4 first, then IPv6.

    Results of every version name addresses in `ips[].address` (CIDR form);
    only addresses on an interface inside the pod count when interfaces are
    named (0.3.0+), so a plugin that also reports the host side adds nothing.
    """
    if not result:
        return ()
    interfaces = result.get("interfaces") if isinstance(result.get("interfaces"), list) else []
    ips: list[str] = []
    for entry in result.get("ips") or ():
        if not isinstance(entry, dict) or not isinstance(entry.get("address"), str):
            continue
        index = entry.get("interface")
        if isinstance(index, int) and 0 <= index < len(interfaces):
            iface = interfaces[index]
            if isinstance(iface, dict) and not iface.get("sandbox"):
                continue
        address = entry["address"].split("/")[0]
        if address not in ips:
            ips.append(address)
    # Older results (0.2.0) carry ip4/ip6 objects instead.
    for key in ("ip4", "ip6"):
        block = result.get(key)
        if isinstance(block, dict) and isinstance(block.get("ip"), str):
            address = block["ip"].split("/")[0]
            if address not in ips:
                ips.append(address)
    return tuple(sorted(ips, key=lambda a: ":" in a))
