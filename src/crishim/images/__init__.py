"""Images as the kubelet sees them: pull, status, list, remove, and the image
filesystem's usage (ImageFsInfo).

Owns image references (`ref`), registry credentials (`registry`), the image
service (`service`) and the on-disk measurement of Docker's image store (`fs`).
May import: engine, common.
"""
