"""The CNI executor against recording plugins: real programs run as subprocesses.

Each plugin appends what it was given (command, stdin document, CNI_ARGS) to a
log and answers as its config tells it to: an ADD result that adds its
`addr`, or a CNI error for the commands listed in `fail`.
"""

from __future__ import annotations

import json
import sys

import pytest

from crishim.common import errors
from crishim.network import conf
from crishim.network.checkpoint import Checkpoint, CheckpointDir, from_libcni_cache
from crishim.network.cni import Attachment, Cni, PluginFailed

PLUGIN = """#!{python}
import json, os, sys
conf = json.load(sys.stdin)
cmd = os.environ["CNI_COMMAND"]
with open({record!r}, "a") as f:
    f.write(json.dumps({{"cmd": cmd, "conf": conf, "args": os.environ.get("CNI_ARGS", ""),
                         "netns": os.environ.get("CNI_NETNS", "")}}) + "\\n")
if cmd in conf.get("fail", []):
    print(json.dumps({{"cniVersion": conf["cniVersion"], "code": conf.get("code", 7),
                      "msg": "refused by " + conf["type"], "details": "as told"}}))
    sys.exit(1)
if cmd == "ADD":
    result = conf.get("prevResult") or {{"cniVersion": conf["cniVersion"],
        "interfaces": [{{"name": "eth0", "sandbox": os.environ["CNI_NETNS"]}}], "ips": []}}
    if conf.get("addr"):
        result["ips"].append({{"address": conf["addr"], "interface": 0}})
    print(json.dumps(result))
"""


@pytest.fixture
def plugins(tmp_path):
    """(bin dirs, read the record) with plugins named one, two, three."""
    record = tmp_path / "record.jsonl"
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for name in ("one", "two", "three"):
        path = bin_dir / name
        path.write_text(PLUGIN.format(python=sys.executable, record=str(record)))
        path.chmod(0o755)

    def calls() -> list[dict]:
        if not record.exists():
            return []
        return [json.loads(line) for line in record.read_text().splitlines()]

    return (str(bin_dir),), calls


def network(version: str = "1.0.0", **extra) -> conf.NetworkList:
    return conf.parse_list(
        {
            "cniVersion": version,
            "name": "test",
            "plugins": [
                {"type": "one", "addr": "10.0.0.5/24", **extra.get("one", {})},
                {"type": "two", "capabilities": {"portMappings": True}, **extra.get("two", {})},
                {"type": "three", "addr": "fd00::5/64", **extra.get("three", {})},
            ],
            **extra.get("list", {}),
        }
    )


ATT = Attachment(
    "c1", "/run/netns/x", args=(("K8S_POD_NAME", "web"),), capability_args={"portMappings": [1]}
)


async def test_add_runs_in_order_and_chains_results(plugins) -> None:
    bins, calls = plugins
    result = await Cni(bins).add(network(), ATT)
    assert [c["conf"]["type"] for c in calls()] == ["one", "two", "three"]
    assert [ip["address"] for ip in result["ips"]] == ["10.0.0.5/24", "fd00::5/64"]
    first, second, _ = calls()
    assert "prevResult" not in first["conf"]
    assert second["conf"]["prevResult"]["ips"][0]["address"] == "10.0.0.5/24"
    assert second["conf"]["runtimeConfig"] == {"portMappings": [1]}
    assert "runtimeConfig" not in first["conf"]
    assert first["args"] == "K8S_POD_NAME=web"
    assert first["netns"] == "/run/netns/x"


async def test_del_runs_in_reverse_past_a_failure_and_reports_it(plugins) -> None:
    bins, calls = plugins
    net = network(two={"fail": ["DEL"]})
    with pytest.raises(PluginFailed, match="refused by two: as told"):
        await Cni(bins).delete(net, ATT, {"ips": []})
    assert [c["conf"]["type"] for c in calls()] == ["three", "two", "one"]
    assert all(c["conf"]["prevResult"] == {"ips": []} for c in calls())


async def test_del_of_an_old_version_gets_no_prev_result(plugins) -> None:
    bins, calls = plugins
    await Cni(bins).delete(network("0.3.1"), ATT, {"ips": []})
    assert all("prevResult" not in c["conf"] for c in calls())


async def test_a_failed_add_carries_the_plugins_message_and_code(plugins) -> None:
    bins, _ = plugins
    with pytest.raises(PluginFailed) as failed:
        await Cni(bins).add(network(two={"fail": ["ADD"], "code": 11}), ATT)
    assert "plugin type='two' failed (add): refused by two" in str(failed.value)
    assert failed.value.status.name == "UNAVAILABLE"  # code 11: try again later


@pytest.mark.parametrize(
    ("version", "disable", "runs"),
    [("0.3.1", False, False), ("1.0.0", True, False), ("1.0.0", False, True)],
)
async def test_check_only_where_the_version_and_list_allow(plugins, version, disable, runs) -> None:
    bins, calls = plugins
    net = network(version, list={"disableCheck": disable})
    assert await Cni(bins).check(net, ATT, {"ips": []}) is runs
    assert [c["cmd"] for c in calls()] == (["CHECK"] * 3 if runs else [])


async def test_gc_and_status_from_1_1_0(plugins) -> None:
    bins, calls = plugins
    cni = Cni(bins)
    assert await cni.gc(network("1.0.0"), [("c1", "eth0")]) is False
    assert await cni.status(network("1.0.0")) is False
    assert calls() == []
    assert await cni.gc(network("1.1.0"), [("c1", "eth0")]) is True
    assert {c["cmd"] for c in calls()} == {"GC"}
    assert calls()[0]["conf"]["cni.dev/valid-attachments"] == [
        {"containerID": "c1", "ifname": "eth0"}
    ]
    assert await cni.status(network("1.1.0")) is True
    with pytest.raises(PluginFailed, match="refused by three"):
        await cni.status(network("1.1.0", three={"fail": ["STATUS"]}))


async def test_a_missing_plugin_is_failed_precondition(tmp_path) -> None:
    with pytest.raises(errors.FailedPrecondition, match="failed to find plugin 'one'"):
        await Cni((str(tmp_path),)).add(network(), ATT)


def test_checkpoints_round_trip_and_bad_files_are_kept(tmp_path) -> None:
    store = CheckpointDir(tmp_path / "sandboxes")
    cp = Checkpoint(
        "abc", {"name": "n"}, "/x/netns/abc", args=(("K", "V"),), capability_args={"a": [1]}
    ).with_result({"ips": [{"address": "10.0.0.2/24"}]})
    store.write(cp)
    (tmp_path / "sandboxes" / "broken.json").write_text("{")
    assert store.load_all() == {"abc": cp}
    assert cp.ips == ("10.0.0.2",)
    assert (tmp_path / "sandboxes" / "broken.json").exists()
    store.remove("abc")
    store.remove("abc")  # idempotent
    assert store.load_all() == {}
    with pytest.raises(ValueError, match="not a sandbox id"):
        store.path("../etc")


def test_a_cri_dockerd_pod_is_read_from_libcni_and_its_checkpoint(tmp_path) -> None:
    import base64

    cache, root = tmp_path / "cni", tmp_path / "cri-dockerd"
    (cache / "results").mkdir(parents=True)
    (root / "sandbox").mkdir(parents=True)
    config = {"cniVersion": "0.4.0", "name": "cbr0", "plugins": [{"type": "bridge"}]}
    (cache / "results" / "cbr0-sid1-eth0").write_text(
        json.dumps(
            {
                "kind": "cniCacheV1",
                "containerId": "sid1",
                "config": base64.b64encode(json.dumps(config).encode()).decode(),
                "ifName": "eth0",
                "networkName": "cbr0",
                "cniArgs": [["K8S_POD_NAME", "web"]],
                "result": {"cniVersion": "0.4.0", "ips": [{"address": "10.1.2.3/24"}]},
            }
        )
    )
    (root / "sandbox" / "sid1").write_text(
        json.dumps(
            {
                "version": "v1",
                "name": "web",
                "namespace": "default",
                "data": {
                    "port_mappings": [
                        {"protocol": "TCP", "container_port": 80, "host_port": 8080},
                        {"protocol": "UDP", "container_port": 53},
                    ]
                },
                "checksum": 1,
            }
        )
    )
    cp = from_libcni_cache(cache, "sid1", "/proc/1/ns/net", root)
    assert cp is not None
    assert (cp.network, cp.ips, cp.args) == (config, ("10.1.2.3",), (("K8S_POD_NAME", "web"),))
    assert cp.capability_args["portMappings"] == [
        {"hostPort": 8080, "containerPort": 80, "protocol": "tcp", "hostIP": ""}
    ]
    assert cp.adopted_from == "cri-dockerd"
    assert from_libcni_cache(cache, "other", "", root) is None
