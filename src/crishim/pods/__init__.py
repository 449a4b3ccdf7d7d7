"""Pod sandboxes and their containers: the CRI lifecycle on Docker.

Owns RunPodSandbox .. RemovePodSandbox (`sandboxes`), the containers' lifecycle
(`containers`), creates that leave nothing behind (`creating`, `markjournal`),
the validation of names and requests (`validate`), security and cgroup
resources (`security`, `cgroupres`), pod resources (`podresources`), ExecSync
(`execsync`), checkpoints (`checkpoints`) and container events (`events`).
May import: images, logs, network, engine, common.
"""
