"""Published weights by name or URL: the registry, and a verified download cache.

``resolve("pspnet_r50-d8_4xb4-80k_ade20k-512x512")`` downloads (once) and returns the cached
file and its registry entry; a URL is downloaded and cached the same way (a plain-http one
only with its SHA-256 prefix in its file name); a path is returned as it is. Everything that
accepts a checkpoint goes through it. A registry download may be at most twice the entry's
estimated size; :mod:`pspnet.weights.download` says what its hashes prove.
"""

from __future__ import annotations

from pathlib import Path

from pspnet.errors import CheckpointError
from pspnet.weights.download import (
    Progress,
    cache_dir,
    cache_path,
    download_limit,
    fetch,
    is_url,
    offline,
)
from pspnet.weights.registry import (
    PublishedWeights,
    estimated_bytes,
    find,
    imagenet_backbone,
    registry,
)

__all__ = [
    "PublishedWeights",
    "cache_dir",
    "cache_path",
    "fetch",
    "find",
    "imagenet_backbone",
    "offline",
    "registry",
    "resolve",
]


def resolve(
    spec: str | Path, progress: Progress | None = None
) -> tuple[Path, PublishedWeights | None]:
    """The local file ``spec`` names and its registry entry (None for other files).

    Args:
        spec: a path, a registry name, or an http(s) URL.
        progress: download progress, ``progress(bytes_done, bytes_total or None)``.

    Raises:
        CheckpointError: an unsupported registry entry, a plain-http URL with no SHA-256, or a
            failed download.
    """
    text = str(spec)
    if Path(text).exists() or not (is_url(text) or find(text)):
        return Path(spec), None
    entry = find(text)
    if entry is not None and entry.unsupported:
        raise CheckpointError(
            f"{entry.name}: published, but not loadable here: {entry.unsupported}"
        )
    if entry is None:
        return fetch(text, progress=progress), None
    limit = download_limit(estimated_bytes(entry))
    return fetch(entry.url, entry.sha256_prefix, progress, max_bytes=limit), entry
