"""ImageService against the suite's registry (htpasswd auth) and private dockerd."""

from __future__ import annotations

import base64
import contextlib
import json
import os
import socket
import threading
import time

import grpc
import pytest

from crishim.api.runtime import v1 as api
from tests.harness import images as images_mod
from tests.harness.clients import Official, Own
from tests.harness.images import PAUSE_IMAGE
from tests.harness.procs import free_port, run, wait_for
from tests.integration.test_containers import create, pod  # noqa: F401  (fixture)
from tests.integration.test_polled_calls import recorded  # noqa: F401  (fixture)


def spec(pb, image: str):
    return pb.ImageSpec(image=image)


def auth_forms(pb, registry):
    user, password, server = registry.username, registry.password, registry.address
    encoded = base64.b64encode(f"{user}:{password}".encode()).decode()
    return {
        "username-password": pb.AuthConfig(username=user, password=password, server_address=server),
        "auth-string": pb.AuthConfig(auth=encoded, server_address=server),
    }


def pull(official: Official, image: str, auth=None, timeout: float = 120):
    request = official.pb.PullImageRequest(image=spec(official.pb, image), auth=auth)
    return official.image.PullImage(request, timeout=timeout)


def status(official: Official, image: str, verbose: bool = False):
    return official.image.ImageStatus(
        official.pb.ImageStatusRequest(image=spec(official.pb, image), verbose=verbose), timeout=30
    )


def remove(official: Official, image: str) -> None:
    official.image.RemoveImage(
        official.pb.RemoveImageRequest(image=spec(official.pb, image)), timeout=60
    )


def grpc_error(fn, *args, **kwargs) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as err:
        fn(*args, **kwargs)
    return err.value


@pytest.fixture
def busybox_ref(registry) -> str:
    return f"{registry.address}/crishim-test/busybox:1.0"


@pytest.mark.parametrize("form", ["username-password", "auth-string"])
def test_pull_with_credentials_in_each_form(
    official: Official, registry, busybox_ref, form
) -> None:
    remove(official, busybox_ref)
    assert not status(official, busybox_ref).HasField("image")
    response = pull(official, busybox_ref, auth_forms(official.pb, registry)[form])
    assert response.image_ref.startswith("sha256:")
    image = status(official, busybox_ref).image
    assert image.id == response.image_ref, "image_ref is the same value ImageStatus reports"
    assert busybox_ref in image.repo_tags


def test_pull_without_credentials_says_the_registry_requires_them(
    official: Official, registry
) -> None:
    err = grpc_error(pull, official, f"{registry.address}/crishim-test/user-named:1.0")
    assert err.code() == grpc.StatusCode.UNAUTHENTICATED
    assert f"registry {registry.address} requires credentials" in err.details()


def test_pull_with_a_wrong_password_says_authentication_failed(
    official: Official, registry
) -> None:
    pb = official.pb
    wrong = pb.AuthConfig(
        username=registry.username, password="not-it", server_address=registry.address
    )
    err = grpc_error(pull, official, f"{registry.address}/crishim-test/user-named:1.0", wrong)
    assert err.code() == grpc.StatusCode.UNAUTHENTICATED
    assert f"authentication failed for registry {registry.address}" in err.details()


def test_pull_by_digest_gives_the_same_image_as_by_tag(
    official: Official, registry, busybox_ref
) -> None:
    auth = auth_forms(official.pb, registry)["username-password"]
    by_tag = pull(official, busybox_ref, auth).image_ref
    digests = status(official, busybox_ref).image.repo_digests
    assert digests, "a pulled image has a repo digest"
    digest_ref = digests[0]
    assert digest_ref.startswith(f"{registry.address}/crishim-test/busybox@sha256:")
    remove(official, by_tag)
    assert pull(official, digest_ref, auth).image_ref == by_tag
    assert status(official, digest_ref).image.id == by_tag


def test_unknown_image_unreachable_registry_and_malformed_reference(
    official: Official, registry
) -> None:
    auth = auth_forms(official.pb, registry)["username-password"]
    err = grpc_error(pull, official, f"{registry.address}/crishim-test/no-such-image:1.0", auth)
    assert err.code() == grpc.StatusCode.NOT_FOUND
    err = grpc_error(pull, official, f"127.0.0.1:{free_port()}/crishim-test/busybox:1.0")
    assert err.code() == grpc.StatusCode.UNAVAILABLE
    assert "unreachable" in err.details()
    # All refused before any lookup: none of these may reach a resolver or registry.
    for bad in ("library/UPPER", "busybox:-tag", "a b", "busybox@sha256:short"):
        err = grpc_error(pull, official, bad)
        assert err.code() == grpc.StatusCode.INVALID_ARGUMENT, bad
    err = grpc_error(pull, official, "")
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "image.image is required" in err.details()


def test_image_status_reports_the_images_user(official: Official, registry) -> None:
    auth = auth_forms(official.pb, registry)["username-password"]
    numeric = f"{registry.address}/crishim-test/user-numeric:1.0"
    named = f"{registry.address}/crishim-test/user-named:1.0"
    pull(official, numeric, auth)
    pull(official, named, auth)
    image = status(official, numeric).image
    assert image.HasField("uid")
    assert (image.uid.value, image.username) == (1000, "")
    image = status(official, named).image
    assert not image.HasField("uid")
    assert image.username == "app"


def test_an_image_without_user_has_neither_uid_nor_username(
    official: Official, test_images
) -> None:
    image = status(official, test_images.busybox).image
    assert image.id.startswith("sha256:")
    assert not image.HasField("uid")
    assert image.username == ""
    assert image.size > 0
    assert image.repo_tags == [f"docker.io/{test_images.busybox}"], "tags are normalised"


def test_an_absent_image_is_a_response_without_image(official: Official) -> None:
    response = status(official, "docker.io/library/absent-image:never")
    assert not response.HasField("image")


def test_verbose_status_carries_the_image_config(official: Official, test_images) -> None:
    response = status(official, test_images.user_named, verbose=True)
    info = json.loads(response.info["info"])
    assert info["config"]["user"] == "app"
    assert info["id"] == response.image.id
    assert dict(status(official, test_images.user_named).info) == {}


def test_the_pause_image_is_pinned(official: Official, test_images) -> None:
    assert status(official, PAUSE_IMAGE).image.pinned is True
    assert status(official, test_images.busybox).image.pinned is False


def test_list_images_shows_tags_and_digests_and_filters(
    official: Official, registry, busybox_ref
) -> None:
    pb = official.pb
    auth = auth_forms(pb, registry)["username-password"]
    image_id = pull(official, busybox_ref, auth).image_ref
    images = official.image.ListImages(pb.ListImagesRequest(), timeout=30).images
    listed = {i.id: i for i in images}
    assert image_id in listed
    assert busybox_ref in listed[image_id].repo_tags
    assert any(
        d.startswith(f"{registry.address}/crishim-test/busybox@sha256:")
        for d in listed[image_id].repo_digests
    )
    assert len(images) >= 5
    only = official.image.ListImages(
        pb.ListImagesRequest(filter=pb.ImageFilter(image=spec(pb, busybox_ref))), timeout=30
    ).images
    assert [i.id for i in only] == [image_id]
    by_id = official.image.ListImages(
        pb.ListImagesRequest(filter=pb.ImageFilter(image=spec(pb, image_id))), timeout=30
    ).images
    assert [i.id for i in by_id] == [image_id]


@pytest.mark.parametrize("kind", ["tag", "digest", "id"])
def test_remove_image_by_each_kind_of_reference_twice(
    official: Official, registry, busybox_ref, kind
) -> None:
    auth = auth_forms(official.pb, registry)["username-password"]
    image_id = pull(official, busybox_ref, auth).image_ref
    ref = {
        "tag": busybox_ref,
        "digest": status(official, busybox_ref).image.repo_digests[0],
        "id": image_id,
    }[kind]
    remove(official, ref)
    listed = official.image.ListImages(official.pb.ListImagesRequest(), timeout=30).images
    assert image_id not in {i.id for i in listed}, "gone from the list as soon as removed"
    remove(official, ref)  # idempotent
    assert not status(official, busybox_ref).HasField("image")
    assert not status(official, image_id).HasField("image")


@pytest.fixture
def recorded_puller(recorded, registry):  # noqa: F811
    """(proxy, client, auth): a recorded crishim and the local registry's credentials."""
    proxy, client = recorded
    return proxy, client, auth_forms(client.pb, registry)["username-password"]


def test_pull_and_remove_show_their_result_at_once_without_listing_every_image(
    recorded_puller, registry, dockerd, test_images, workdir
) -> None:
    """Each call writes its own result into the image cache: with Docker's image lists
    held back at the socket, a pull that moves a tag and a removal still show at once."""
    proxy, client, auth = recorded_puller
    pb = client.pb
    build = workdir / "build-moving"
    old_local = images_mod.derive(dockerd, test_images.busybox, "moving-old:1", build, "old")
    new_local = images_mod.derive(dockerd, test_images.busybox, "moving-new:1", build, "new")
    old = dockerd.docker("image", "inspect", "-f", "{{.Id}}", old_local).strip()
    new = dockerd.docker("image", "inspect", "-f", "{{.Id}}", new_local).strip()
    ref = registry.push(dockerd, new_local, "crishim-test/moving:1.0")
    dockerd.docker("rmi", new_local)  # the new image is now named only by `ref`

    def listed() -> dict[str, api.Image]:
        return {i.id: i for i in client.image.ListImages(pb.ListImagesRequest()).images}

    try:
        dockerd.docker("tag", old_local, ref)  # locally the tag names the old image
        wait_for(lambda: status(client, ref).image.id == old, 30, "the cache to see the tag")
        proxy.hold(r"^GET /images/json$")
        held_from = proxy.mark()

        assert pull(client, ref, auth, timeout=30).image_ref == new  # the registry's image
        assert status(client, ref).image.id == new
        images = listed()
        assert ref in images[new].repo_tags
        assert ref not in images[old].repo_tags, "a tag names one image"

        removing = proxy.mark()
        client.image.RemoveImage(pb.RemoveImageRequest(image=spec(pb, ref)), timeout=30)
        asked = [str(r) for r in proxy.requests(removing)]
        # Named by one repository and used by no container: Docker takes it unforced.
        assert [r for r in asked if r.startswith(("DELETE", "GET /containers/json"))] == [
            f"DELETE /images/{new}"
        ]
        assert new not in listed()
        assert not status(client, ref).HasField("image")
        assert old in listed()
        lists = [r for r in proxy.requests(held_from) if str(r) == "GET /images/json"]
        assert all(r.done is None for r in lists), "no list of every image was answered"
    finally:
        proxy.release()
        for name in (ref, old_local):
            with contextlib.suppress(RuntimeError):
                dockerd.docker("rmi", name)


def lists_settled(proxy, quiet: float = 0.5) -> None:
    """Until the image cache has listed for every change made so far: a change's events can
    reach crishim after the cache already shows it (`docker rmi` of two names is an untag
    each, then a delete), and a list for them must not land in what a test counts next.
    Settled: no list of every image open, and none started in the last `quiet` seconds
    (the cache lists 20 ms after an event)."""

    def settled() -> bool:
        lists = [r for r in proxy.requests() if str(r) == "GET /images/json"]
        start = proxy.mark() - quiet
        return not [r for r in lists if r.done is None or r.at >= start]

    wait_for(settled, 30, "the image cache's lists for earlier changes")


def test_a_pull_lists_no_image_for_its_own_event_and_a_foreign_change_still_does(
    recorded_puller, registry, dockerd, test_images, workdir
) -> None:
    """PullImage writes its result into the image cache; Docker's `pull` event for it
    costs no list of every image. A change made outside crishim still does."""
    proxy, client, auth = recorded_puller
    local = images_mod.derive(
        dockerd, test_images.busybox, "own-event:1", workdir / "build-own-event", "own"
    )
    ref = registry.push(dockerd, local, "crishim-test/own-event:1.0")
    dockerd.docker("rmi", local, ref)  # only the registry has it now: the pull pulls
    other = f"crishim-test/foreign-tag-{os.getpid()}:1"
    try:
        wait_for(lambda: not status(client, ref).HasField("image"), 30, "the cache to settle")
        lists_settled(proxy)
        since = proxy.mark()
        image_id = pull(client, ref, auth, timeout=30).image_ref
        assert status(client, ref).image.id == image_id
        # A foreign change, after the pull's event has come: the cache lists again for it.
        dockerd.docker("tag", image_id, other)
        wait_for(lambda: status(client, other).HasField("image"), 30, "the foreign tag seen")
        lists = [r for r in proxy.requests(since) if str(r) == "GET /images/json"]
        assert len(lists) == 1, "one list, for the foreign tag; none for the pull's own event"
    finally:
        for name in (other, ref):
            with contextlib.suppress(RuntimeError):
                dockerd.docker("rmi", name)


def test_a_pull_of_an_image_already_there_asks_docker_only_to_pull(
    recorded_puller, registry, dockerd, test_images, workdir
) -> None:
    """With the Always pull policy the kubelet pulls before every start. When Docker
    says the name already named the registry's image, the image cache answers with
    it: the pull's one Docker request is the pull, with no inspect after it."""
    proxy, client, auth = recorded_puller
    local = images_mod.derive(
        dockerd, test_images.busybox, "up-to-date:1", workdir / "build-up-to-date", "same"
    )
    ref = registry.push(dockerd, local, "crishim-test/up-to-date:1.0")
    dockerd.docker("rmi", local, ref)  # only the registry has it now: the first pull pulls
    try:
        wait_for(lambda: not status(client, ref).HasField("image"), 30, "the cache to settle")
        since = proxy.mark()
        image_id = pull(client, ref, auth, timeout=30).image_ref
        first = [str(r) for r in proxy.requests(since)]
        assert f"GET /images/{ref}/json" in first, "a pull that brings an image inspects it"

        since = proxy.mark()
        assert pull(client, ref, auth, timeout=30).image_ref == image_id
        asked = [str(r) for r in proxy.requests(since)]
        assert asked.count("POST /images/create") == 1
        assert not [r for r in asked if r.startswith("GET /images/")], asked
        assert status(client, ref).image.id == image_id
    finally:
        with contextlib.suppress(RuntimeError):
            dockerd.docker("rmi", ref)


def test_a_removal_lists_no_image_for_its_own_events_and_a_foreign_change_still_does(
    recorded_puller, dockerd, test_images, workdir
) -> None:
    """RemoveImage writes its result into the image cache; Docker's untag and delete
    events for it cost no list of every image. A change made outside crishim still does."""
    proxy, client, _ = recorded_puller
    pb = client.pb
    local = images_mod.derive(
        dockerd, test_images.busybox, "own-removal:1", workdir / "build-own-removal", "removal"
    )
    second = f"crishim-test/own-removal-{os.getpid()}:2"
    dockerd.docker("tag", local, second)  # two names: two untags, then a delete
    other = f"crishim-test/foreign-after-removal-{os.getpid()}:1"
    try:
        wait_for(lambda: status(client, second).HasField("image"), 30, "the cache to see it")
        lists_settled(proxy)
        since = proxy.mark()
        client.image.RemoveImage(pb.RemoveImageRequest(image=spec(pb, local)), timeout=30)
        assert not status(client, second).HasField("image")
        # A foreign change, after the removal's events have come: listed for it.
        dockerd.docker("tag", test_images.busybox, other)
        wait_for(lambda: status(client, other).HasField("image"), 30, "the foreign tag seen")
        lists = [r for r in proxy.requests(since) if str(r) == "GET /images/json"]
        assert len(lists) == 1, "one list, for the foreign tag; none for the removal's events"
    finally:
        for name in (other, second, local):
            with contextlib.suppress(RuntimeError):
                dockerd.docker("rmi", name)


def test_removing_an_image_in_use_names_the_container(
    official: Official, dockerd, test_images
) -> None:
    name = f"uses-image-{os.getpid()}"
    dockerd.docker("create", "--name", name, test_images.user_numeric, "true")
    try:
        err = grpc_error(remove, official, test_images.user_numeric)
        assert err.code() == grpc.StatusCode.FAILED_PRECONDITION
        assert name in err.details()
        assert status(official, test_images.user_numeric).HasField("image")
    finally:
        dockerd.docker("rm", "-f", name)


def test_ten_concurrent_pulls_make_one_docker_pull(official: Official, registry, dockerd) -> None:
    pb = official.pb
    ref = f"{registry.address}/crishim-test/user-named:1.0"
    remove(official, ref)
    since = f"{time.time():.6f}"  # Docker's events take fractional seconds
    auth = auth_forms(pb, registry)["username-password"]
    request = pb.PullImageRequest(image=spec(pb, ref), auth=auth)
    futures = [official.image.PullImage.future(request, timeout=120) for _ in range(10)]
    refs = {f.result().image_ref for f in futures}
    assert len(refs) == 1
    events = dockerd.docker(
        "events",
        "--since",
        since,
        "--until",
        str(int(time.time()) + 1),
        "--filter",
        "type=image",
        "--filter",
        "event=pull",
        "--format",
        "{{.ID}}",
    ).split()
    assert events.count(ref) == 1, f"one pull event expected since {since}, got {events}"


def test_image_fs_info_describes_the_docker_data_root(
    official: Official,
    dockerd,
    pod,  # noqa: F811
) -> None:
    # A container with files of its own in its writable layer: not the images' inodes.
    create(official, pod, "writer", ["sh", "-c", "mkdir /w && touch /w/$(seq 1 50); sleep 300"])
    response = official.image.ImageFsInfo(official.pb.ImageFsInfoRequest(), timeout=60)
    (images,) = response.image_filesystems
    (containers,) = response.container_filesystems
    root = dockerd.root / "data"
    mount = str(root.resolve())
    while not os.path.ismount(mount):
        mount = os.path.dirname(mount)
    assert images.fs_id.mountpoint == containers.fs_id.mountpoint == mount
    assert containers.HasField("used_bytes")
    # What the image store holds on disk, as du counts it: the image metadata and the
    # image layers (the layer store less the containers' own writable and init layers).
    container_layers = set()
    for cid in dockerd.docker("ps", "-aq").split():
        upper = dockerd.docker("inspect", "--format", "{{.GraphDriver.Data.UpperDir}}", cid)
        layer = os.path.dirname(upper.strip())
        container_layers |= {layer, layer + "-init"}
    store = [str(root / "image")] + [
        str(p) for p in (root / "overlay2").iterdir() if str(p) not in container_layers
    ]
    du_bytes = sum(int(line.split()[0]) for line in run("du", "-s", "-B1", *store).splitlines())
    du_inodes = sum(
        int(line.split()[0]) for line in run("du", "-s", "--inodes", *store).splitlines()
    )
    # Docker counts content bytes, du allocated blocks: at most a block apart per file.
    assert du_bytes - 4096 * du_inodes <= images.used_bytes.value <= du_bytes
    assert abs(images.inodes_used.value - du_inodes) <= max(8, du_inodes // 20)
    assert images.used_bytes.value > 0
    assert images.inodes_used.value > 0
    assert abs(images.timestamp / 1e9 - time.time()) < 60


async def test_our_own_client_lists_and_inspects(own: Own, test_images) -> None:
    listed = await own.image.list_images(api.ListImagesRequest())
    assert any(f"docker.io/{test_images.busybox}" in i.repo_tags for i in listed.images)
    response = await own.image.image_status(
        api.ImageStatusRequest(image=api.ImageSpec(image=test_images.user_numeric))
    )
    assert response.image.uid == api.Int64Value(value=1000)


class StallingServer:
    """Accepts connections and never answers: a registry that makes no progress."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen()
        self.port = self.sock.getsockname()[1]
        self.held: list[socket.socket] = []
        self.thread = threading.Thread(target=self._accept, daemon=True)
        self.thread.start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.held.append(conn)

    def close(self) -> None:
        self.sock.close()
        for conn in self.held:
            conn.close()


def test_a_pull_without_progress_is_aborted(dockerd, crishim_factory, official_stubs) -> None:
    stall = StallingServer()
    proc = crishim_factory(dockerd.endpoint, "--pull-progress-timeout=3")
    client = Official(proc.socket, *official_stubs)
    try:
        started = time.monotonic()
        err = grpc_error(pull, client, f"127.0.0.1:{stall.port}/crishim-test/busybox:1.0", None, 60)
        elapsed = time.monotonic() - started
    finally:
        client.close()
        stall.close()
    assert err.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    assert "made no progress for 3s" in err.details()
    assert elapsed < 50


def test_a_long_pull_logs_its_progress(
    dockerd, registry, crishim_factory, official_stubs, workdir
) -> None:
    # A layer big enough that the pull takes several progress reports.
    ctx = workdir / "big-image"
    ctx.mkdir(exist_ok=True)
    (ctx / "Dockerfile").write_text(
        "FROM crishim-test/busybox:latest\nRUN head -c 60000000 /dev/urandom > /blob\n"
    )
    dockerd.docker("build", "-q", "-t", "crishim-test/big:latest", str(ctx))
    ref = registry.push(dockerd, "crishim-test/big:latest", "crishim-test/big:1.0")
    dockerd.docker("rmi", ref, "crishim-test/big:latest")
    proc = crishim_factory(dockerd.endpoint, "--pull-log-interval=0.01")
    client = Official(proc.socket, *official_stubs)
    try:
        auth = auth_forms(client.pb, registry)["username-password"]
        pull(client, ref, auth)
    finally:
        client.close()
    events = [e for e in proc.events() if e.get("image") == ref]
    names = [e["event"] for e in events]
    assert names[0] == "image_pull_started"
    assert names[-1] == "image_pulled"
    progress = [e for e in events if e["event"] == "image_pull_progress"]
    assert progress, events
    assert {"layers", "layers_done", "bytes", "bytes_total"} <= set(progress[-1])


def token_forms(pb, registry):
    tokens = registry.tokens
    scope = [{"type": "repository", "name": "crishim-test/busybox", "actions": ["pull"]}]
    return {
        "username-password": pb.AuthConfig(username=registry.username, password=registry.password),
        "identity-token": pb.AuthConfig(
            identity_token=tokens.identity_token, server_address=registry.address
        ),
        "registry-token": pb.AuthConfig(registry_token=tokens.mint(registry.username, scope)),
    }


@pytest.mark.parametrize("form", ["username-password", "identity-token", "registry-token"])
def test_pull_from_a_token_registry_with_each_form(
    official: Official, token_registry, form
) -> None:
    ref = f"{token_registry.address}/crishim-test/busybox:1.0"
    remove(official, ref)
    image_ref = pull(official, ref, token_forms(official.pb, token_registry)[form]).image_ref
    assert status(official, ref).image.id == image_ref


@pytest.mark.parametrize(
    "auth",
    [
        pytest.param({"username": "crishim", "password": "wrong"}, id="password"),
        pytest.param({"identity_token": "not-the-token"}, id="identity-token"),
        pytest.param({"registry_token": "not.a.jwt"}, id="registry-token"),
    ],
)
def test_wrong_credentials_for_a_token_registry_say_authentication_failed(
    official: Official, token_registry, auth
) -> None:
    ref = f"{token_registry.address}/crishim-test/busybox:1.0"
    remove(official, ref)
    err = grpc_error(pull, official, ref, official.pb.AuthConfig(**auth))
    assert err.code() == grpc.StatusCode.UNAUTHENTICATED
    assert f"authentication failed for registry {token_registry.address}" in err.details()
