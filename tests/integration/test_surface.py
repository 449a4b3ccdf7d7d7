"""CRI behaviours the conformance runs found missing: each as a user sees it."""

from __future__ import annotations

import json
from pathlib import Path

import grpc
import pytest

from crishim.common import cgroups
from tests.harness.clients import Official
from tests.harness.procs import wait_for
from tests.integration.test_containers import create, pod, wait_exited  # noqa: F401  (fixture)


def seccomp_mode(official: Official, pod, dockerd, **security) -> str:  # noqa: F811
    pb = official.pb
    cid = create(
        official,
        pod,
        f"sc{len(security)}{abs(hash(str(security))) % 1000}",
        ["sh", "-c", "grep Seccomp: /proc/self/status; sleep 300"],
        linux=pb.LinuxContainerConfig(
            security_context=pb.LinuxContainerSecurityContext(**security)
        ),
    )
    wait_for(lambda: "Seccomp:" in dockerd.docker("logs", cid), 30, "the seccomp line")
    return dockerd.docker("logs", cid).split()[1]


def test_an_unset_seccomp_profile_runs_unconfined(official, pod, dockerd) -> None:  # noqa: F811
    pb = official.pb
    assert seccomp_mode(official, pod, dockerd) == "0"  # no filter
    default = pb.SecurityProfile(profile_type=pb.SecurityProfile.RuntimeDefault)
    assert seccomp_mode(official, pod, dockerd, seccomp=default) == "2"  # a filter
    assert seccomp_mode(official, pod, dockerd, seccomp_profile_path="runtime/default") == "2"


def test_list_images_by_repository_lists_every_tag(official, dockerd, test_images) -> None:
    pb = official.pb
    for tag in ("one", "two"):
        dockerd.docker("tag", test_images.busybox, f"crishim-test/repo-filter:{tag}")
    try:

        def tags() -> list[str]:
            images = official.image.ListImages(
                pb.ListImagesRequest(
                    filter=pb.ImageFilter(image=pb.ImageSpec(image="crishim-test/repo-filter"))
                ),
                timeout=30,
            ).images
            return sorted(t for i in images for t in i.repo_tags if "repo-filter" in t)

        # Tagged behind crishim's back: the image cache learns it from Docker's events.
        wait_for(lambda: len(tags()) == 2, 10, "both tags listed")
        assert tags() == [
            "docker.io/crishim-test/repo-filter:one",
            "docker.io/crishim-test/repo-filter:two",
        ]

        def listed(image: str):
            request = pb.ListImagesRequest(filter=pb.ImageFilter(image=pb.ImageSpec(image=image)))
            return official.image.ListImages(request, timeout=30).images

        (one,) = listed("crishim-test/repo-filter:one")  # a tag: that image only
        assert "docker.io/crishim-test/repo-filter:one" in one.repo_tags
        assert listed("crishim-test/repo-filter:three") == []
        assert listed("crishim-test/no-such-repository") == []
    finally:
        dockerd.docker("rmi", "crishim-test/repo-filter:one", "crishim-test/repo-filter:two")


def test_memory_can_be_raised_and_lowered_in_place(official, pod, dockerd) -> None:  # noqa: F811
    pb = official.pb
    mib = 1024 * 1024
    cid = create(
        official,
        pod,
        "resized",
        ["sleep", "300"],
        linux=pb.LinuxContainerConfig(
            resources=pb.LinuxContainerResources(memory_limit_in_bytes=64 * mib)
        ),
    )

    def resize(limit: int) -> None:
        official.runtime.UpdateContainerResources(
            pb.UpdateContainerResourcesRequest(
                container_id=cid,
                linux=pb.LinuxContainerResources(memory_limit_in_bytes=limit),
            ),
            timeout=30,
        )
        memory = dockerd.docker(
            "inspect", "--format", "{{.HostConfig.Memory}} {{.HostConfig.MemorySwap}}", cid
        ).split()
        assert memory == [str(limit), str(limit)]
        status = official.runtime.ContainerStatus(
            pb.ContainerStatusRequest(container_id=cid), timeout=30
        ).status
        assert status.resources.linux.memory_limit_in_bytes == limit

    resize(512 * mib)  # above the swap limit Docker set at create (2 x 64 MiB)
    resize(32 * mib)
    resize(256 * mib)


def test_concurrent_removes_of_one_image_all_succeed(official, dockerd, test_images) -> None:
    import concurrent.futures

    pb = official.pb
    for round_ in range(3):
        ref = f"crishim-test/remove-race:{round_}"
        dockerd.docker("tag", test_images.busybox, ref)
        # An image of its own ID: removing it must not touch the test images.
        scratch = dockerd.docker("create", ref, "true").strip()
        built = dockerd.docker("commit", "--change", f"LABEL round={round_}", scratch, ref).strip()
        dockerd.docker("rm", scratch)

        def status_id(ref: str = ref) -> str:
            request = pb.ImageStatusRequest(image=pb.ImageSpec(image=ref))
            return official.image.ImageStatus(request, timeout=30).image.id

        # Committed behind crishim's back: the image cache learns it from Docker's events.
        wait_for(lambda b=built: status_id() == b, 10, f"{ref} names the committed image")
        image_id = built

        def remove(_: int, image_id: str = image_id):
            official.image.RemoveImage(
                pb.RemoveImageRequest(image=pb.ImageSpec(image=image_id)), timeout=60
            )
            return official.image.ImageStatus(
                pb.ImageStatusRequest(image=pb.ImageSpec(image=image_id)), timeout=30
            )

        with concurrent.futures.ThreadPoolExecutor(5) as pool:
            statuses = list(pool.map(remove, range(5)))
        assert all(not s.HasField("image") for s in statuses), "gone right after each remove"


def test_container_status_reports_the_processs_user(official, pod) -> None:  # noqa: F811
    pb = official.pb
    cid = create(
        official,
        pod,
        "who",
        ["sleep", "300"],
        linux=pb.LinuxContainerConfig(
            security_context=pb.LinuxContainerSecurityContext(
                run_as_user=pb.Int64Value(value=1000),
                run_as_group=pb.Int64Value(value=3000),
                supplemental_groups=[4000, 5000],
            )
        ),
    )
    user = official.runtime.ContainerStatus(
        pb.ContainerStatusRequest(container_id=cid), timeout=30
    ).status.user.linux
    assert (user.uid, user.gid) == (1000, 3000)
    assert set(user.supplemental_groups) >= {4000, 5000}


def test_an_oom_killed_container_says_oomkilled_every_time(official, pod, dockerd) -> None:  # noqa: F811
    pb = official.pb
    mib = 1024 * 1024
    program = 'BEGIN { s = sprintf("%67108864s", ""); print length(s) }'  # touches 64 MiB
    for attempt in range(3):
        cid = create(
            official,
            pod,
            f"oom{attempt}",
            ["awk", program],
            linux=pb.LinuxContainerConfig(
                resources=pb.LinuxContainerResources(
                    memory_limit_in_bytes=24 * mib, memory_swap_limit_in_bytes=24 * mib
                )
            ),
        )
        wait_exited(official, cid, 60)
        status = official.runtime.ContainerStatus(
            pb.ContainerStatusRequest(container_id=cid), timeout=30
        ).status
        assert (status.reason, status.exit_code) == ("OOMKilled", 137), f"attempt {attempt}"


def test_runtime_handlers_are_dockers_runtimes_with_honest_features(official, dockerd) -> None:
    handlers = official.runtime.Status(official.pb.StatusRequest(), timeout=30).runtime_handlers
    names = [h.name for h in handlers]
    assert "" in names
    assert "runc" in names
    # Recursive read-only binds: Docker 25 (API 1.44) on Linux 5.12+ (this kernel is newer).
    rro = dockerd.api >= (1, 44)
    for h in handlers:
        assert h.features.recursive_read_only_mounts == rro
        assert not h.features.user_namespaces


def _create_with_mount(official, pod, mount):  # noqa: F811
    pb = official.pb
    sandbox_id, sandbox = pod
    return official.runtime.CreateContainer(
        pb.CreateContainerRequest(
            pod_sandbox_id=sandbox_id,
            config=pb.ContainerConfig(
                metadata=pb.ContainerMetadata(name="mounted"),
                image=pb.ImageSpec(image="crishim-test/busybox:latest"),
                mounts=[mount],
            ),
            sandbox_config=sandbox,
        ),
        timeout=30,
    )


@pytest.mark.parametrize(
    ("mount", "code", "says"),
    [
        (
            {"container_path": "/data", "host_path": "/tmp", "recursive_read_only": True},
            grpc.StatusCode.INVALID_ARGUMENT,
            "requires readonly",
        ),
        (
            {
                "container_path": "/data",
                "host_path": "/tmp",
                "readonly": True,
                "recursive_read_only": True,
                "propagation": 1,  # host to container
            },
            grpc.StatusCode.INVALID_ARGUMENT,
            "requires private propagation",
        ),
    ],
    ids=["rro-without-readonly", "rro-propagating"],
)
def test_mounts_docker_cannot_honour_are_refused(official, pod, mount, code, says) -> None:  # noqa: F811
    pb = official.pb
    spec = dict(mount)
    if "image" in spec:
        spec["image"] = pb.ImageSpec(**spec["image"])
    with pytest.raises(grpc.RpcError) as refused:
        _create_with_mount(official, pod, pb.Mount(**spec))
    assert refused.value.code() == code
    assert says in refused.value.details()


def test_pod_user_namespaces_are_refused(official) -> None:
    from tests.integration.test_sandboxes import sandbox_config

    pb = official.pb
    config = sandbox_config(
        pb,
        security_context=pb.LinuxSandboxSecurityContext(
            namespace_options=pb.NamespaceOption(userns_options=pb.UserNamespace(mode=pb.POD))
        ),
    )
    with pytest.raises(grpc.RpcError) as refused:
        official.runtime.RunPodSandbox(pb.RunPodSandboxRequest(config=config), timeout=60)
    assert refused.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "user namespaces" in refused.value.details()


def test_pod_resources_are_recorded_shown_and_kept_across_a_restart(
    dockerd,
    test_images,  # the pause image, built locally: nothing is pulled
    crishim_factory,
    official_stubs,
) -> None:

    from tests.integration.test_sandboxes import sandbox_config

    proc = crishim_factory(dockerd.endpoint)
    client = Official(proc.socket, *official_stubs)
    pb = client.pb
    sandbox_id = client.runtime.RunPodSandbox(
        pb.RunPodSandboxRequest(config=sandbox_config(pb)), timeout=120
    ).pod_sandbox_id
    try:
        client.runtime.UpdatePodSandboxResources(
            pb.UpdatePodSandboxResourcesRequest(
                pod_sandbox_id=sandbox_id,
                overhead=pb.LinuxContainerResources(cpu_shares=10),
                resources=pb.LinuxContainerResources(
                    cpu_quota=50000, cpu_period=100000, memory_limit_in_bytes=256 << 20
                ),
            ),
            timeout=30,
        )
        client.close()
        proc.stop()
        proc.start()
        client = Official(proc.socket, *official_stubs)
        info = client.runtime.PodSandboxStatus(
            pb.PodSandboxStatusRequest(pod_sandbox_id=sandbox_id, verbose=True), timeout=30
        ).info
        recorded = json.loads(info["info"])["podResources"]
        assert recorded["resources"]["memory_limit_in_bytes"] == 256 << 20
        assert recorded["resources"]["cpu_quota"] == 50000
        assert recorded["overhead"]["cpu_shares"] == 10
        for request, code in (
            (
                pb.UpdatePodSandboxResourcesRequest(
                    pod_sandbox_id=sandbox_id,
                    resources=pb.LinuxContainerResources(
                        memory_limit_in_bytes=256 << 20, memory_swap_limit_in_bytes=1 << 20
                    ),
                ),
                grpc.StatusCode.INVALID_ARGUMENT,
            ),
            (
                pb.UpdatePodSandboxResourcesRequest(pod_sandbox_id="f" * 64),
                grpc.StatusCode.NOT_FOUND,
            ),
        ):
            with pytest.raises(grpc.RpcError) as refused:
                client.runtime.UpdatePodSandboxResources(request, timeout=30)
            assert refused.value.code() == code
    finally:
        client.runtime.RemovePodSandbox(
            pb.RemovePodSandboxRequest(pod_sandbox_id=sandbox_id), timeout=60
        )
        client.close()
    assert not (proc.state_dir / "pod-resources" / f"{sandbox_id}.json").exists()


def test_checkpoint_needs_an_experimental_daemon(official, pod, workdir) -> None:  # noqa: F811
    pb = official.pb
    cid = create(official, pod, "ckpt", ["sleep", "300"])
    with pytest.raises(grpc.RpcError) as refused:
        official.runtime.CheckpointContainer(
            pb.CheckpointContainerRequest(container_id=cid, location=str(workdir / "c.tar")),
            timeout=60,
        )
    assert refused.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "--experimental" in refused.value.details()


def test_checkpoint_on_an_experimental_daemon_matches_what_criu_can_do(
    dockerd_factory, crishim_factory, official_stubs, workdir
) -> None:
    """Docker + CRIU where the kernel lets CRIU work; else CRIU's own reason, clearly."""
    import subprocess
    import tarfile

    from tests.harness import images as images_mod
    from tests.integration.test_sandboxes import sandbox_config

    daemon = dockerd_factory("--experimental")
    images_mod.build(daemon, workdir / f"build-{daemon.name}")
    proc = crishim_factory(daemon.endpoint)
    client = Official(proc.socket, *official_stubs)
    pb = client.pb
    config = sandbox_config(pb)
    sandbox_id = client.runtime.RunPodSandbox(
        pb.RunPodSandboxRequest(config=config), timeout=120
    ).pod_sandbox_id
    try:
        cid = create(
            client, (sandbox_id, config), "counted", ["sh", "-c", "echo x > /f; sleep 300"]
        )
        location = workdir / f"checkpoint-{cid[:12]}.tar"
        request = pb.CheckpointContainerRequest(container_id=cid, location=str(location))
        criu = subprocess.run(["criu", "check"], capture_output=True, text=True)
        if criu.returncode == 0:
            client.runtime.CheckpointContainer(request, timeout=300)
            with tarfile.open(location) as tar:
                names = tar.getnames()
                config_dump = json.loads(tar.extractfile("config.dump").read())
            assert {"config.dump", "spec.dump", "rootfs-diff.tar", "checkpoint"} <= set(names)
            assert any(n.startswith("checkpoint/") for n in names)
            assert config_dump["id"] == cid
        else:
            # This machine: CRIU 3.17 cannot initialise on kernel 6.18 ("vdso ... bounds").
            with pytest.raises(grpc.RpcError) as refused:
                client.runtime.CheckpointContainer(request, timeout=300)
            assert refused.value.code() == grpc.StatusCode.FAILED_PRECONDITION
            assert "docker could not checkpoint" in refused.value.details()
            assert "criu" in refused.value.details().lower()
            assert not location.exists()
        status = client.runtime.ContainerStatus(
            pb.ContainerStatusRequest(container_id=cid), timeout=30
        ).status
        assert status.state == pb.CONTAINER_RUNNING  # checkpointing leaves it running
    finally:
        client.runtime.RemovePodSandbox(
            pb.RemovePodSandboxRequest(pod_sandbox_id=sandbox_id), timeout=60
        )
        client.close()


def _resources_config(pb, name: str, **resources):
    return dict(
        linux=pb.LinuxContainerConfig(resources=pb.LinuxContainerResources(**resources)),
    )


def test_zero_hugepage_limits_are_accepted_and_reported(official, pod) -> None:  # noqa: F811
    pb = official.pb
    limits = [pb.HugepageLimit(page_size="2MB", limit=0), pb.HugepageLimit(page_size="1GB")]
    cid = create(official, pod, "pages", ["sleep", "300"], **_resources_config(pb, "pages",
                 hugepage_limits=limits))  # fmt: skip
    status = official.runtime.ContainerStatus(
        pb.ContainerStatusRequest(container_id=cid), timeout=30
    ).status
    got = {(h.page_size, h.limit) for h in status.resources.linux.hugepage_limits}
    assert got == {("2MB", 0), ("1GB", 0)}
    assert "io.crishim.hugepages" not in status.labels  # bookkeeping, not a CRI label


def test_hugepage_and_unified_settings_are_enforced_or_refused(official, pod, dockerd) -> None:  # noqa: F811
    """Written into the container's cgroup where the host can enforce them; refused where it
    cannot. This machine (cgroup v1, no hugetlb controller) takes the refusing branches."""
    from crishim.pods.cgroupres import _hugetlb_available

    mounts = cgroups.read_mounts()
    pb = official.pb
    cases = [
        (
            {"hugepage_limits": [pb.HugepageLimit(page_size="2MB", limit=2 << 20)]},
            _hugetlb_available(mounts),
            "hugetlb",
            ("hugetlb", "hugetlb.2MB.max" if mounts.is_v2 else "hugetlb.2MB.limit_in_bytes"),
            str(2 << 20),
        ),
        (
            {"unified": {"memory.high": "268435456"}},
            mounts.is_v2,
            "cgroup v2",
            ("", "memory.high"),
            "268435456",
        ),
    ]
    for i, (resources, supported, says, (controller, filename), value) in enumerate(cases):
        config = _resources_config(pb, "x", **resources)
        if not supported:
            with pytest.raises(grpc.RpcError) as refused:
                create(official, pod, f"limited{i}", ["sleep", "300"], **config)
            assert refused.value.code() == grpc.StatusCode.FAILED_PRECONDITION
            assert says in refused.value.details()
            continue
        cid = create(official, pod, f"limited{i}", ["sleep", "300"], **config)
        pid = int(dockerd.docker("inspect", "--format", "{{.State.Pid}}", cid))
        paths = cgroups.locate(pid, mounts)
        assert paths is not None
        path = Path(paths.dir_for(controller)) / filename
        assert path.read_text().strip() == value


@pytest.mark.parametrize(
    ("field", "says"),
    [
        ("cdi", "CDI devices"),
        ("ambient", "ambient capabilities"),
        ("strict", "supplemental_groups_policy Strict"),
    ],
)
def test_container_fields_docker_cannot_honour_are_refused(official, pod, field, says) -> None:  # noqa: F811
    pb = official.pb
    security = pb.LinuxContainerSecurityContext()
    extra = {}
    if field == "cdi":
        extra["CDI_devices"] = [pb.CDIDevice(name="vendor.com/gpu=0")]
    elif field == "ambient":
        security = pb.LinuxContainerSecurityContext(
            capabilities=pb.Capability(add_ambient_capabilities=["NET_BIND_SERVICE"])
        )
    else:
        security = pb.LinuxContainerSecurityContext(supplemental_groups_policy=pb.Strict)
    with pytest.raises(grpc.RpcError) as refused:
        create(
            official, pod, f"refused-{field}", ["true"],
            linux=pb.LinuxContainerConfig(security_context=security), **extra,
        )  # fmt: skip
    assert refused.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert says in refused.value.details()
