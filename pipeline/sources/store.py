"""Reading a Common Crawl mirror that lives on an object store (``s3://commoncrawl/``, ``s3://bucket/prefix/``,
``gs://...``): which URLs are stores, and the fsspec filesystem a source URL is read with.

Common Crawl's own bucket is public: anyone may read it anonymously, and any AWS account may read it signed.
So an ``s3://`` source is read with the credentials found in the usual places (``AWS_*`` variables,
``~/.aws``, the instance's role, ``storage_options``) and anonymously when there are none, instead of failing
with "unable to locate credentials". Options given for the source only (``SourceConfig.storage_options``)
apply to the source's filesystem, never to the one the run writes its outputs with.
"""

from __future__ import annotations

import functools
import logging
import os
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit

import fsspec
import fsspec.config

from pipeline.core.storage import location, scheme_of

log = logging.getLogger(__name__)

HTTP_SCHEMES = frozenset({"http", "https"})
S3_SCHEMES = frozenset({"s3", "s3a"})
_S3_IDENTITY_OPTIONS = frozenset({"anon", "key", "secret", "token", "profile", "session", "username", "password"})
_SECRET_ENV = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")
_CREDENTIAL_ENV = (
    "AWS_PROFILE",
    "AWS_DEFAULT_PROFILE",
    "AWS_SHARED_CREDENTIALS_FILE",
    "AWS_CONFIG_FILE",
    "AWS_WEB_IDENTITY_TOKEN_FILE",
    "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
    "AWS_CONTAINER_CREDENTIALS_FULL_URI",
    "AWS_EC2_METADATA_DISABLED",
    "HOME",
)
"""What decides whether botocore finds credentials: the cache key of that answer (of the keys in
``_SECRET_ENV`` only whether they are set is kept)."""


def is_store_url(base_url: str) -> bool:
    """True for an fsspec URL other than HTTP(S) and local paths: ``s3://``, ``gs://``, ``az://``, ``memory://``..."""
    scheme = scheme_of(base_url)
    return bool(scheme) and len(scheme) > 1 and scheme not in HTTP_SCHEMES and scheme not in ("file", "local")


def is_anonymous(fs: fsspec.AbstractFileSystem) -> bool:
    """Whether ``fs`` reads without credentials (so an access-denied error can say so)."""
    return bool(getattr(fs, "anon", False))


def source_filesystem(
    url: str, storage_options: Mapping[str, Any] | None = None, *, timeout_s: float | None = None
) -> tuple[fsspec.AbstractFileSystem, str]:
    """``(filesystem, path)`` to read ``url`` with: the process's storage defaults, then ``storage_options``.

    On ``s3://`` it reads anonymously when no credentials are configured anywhere, and bounds connecting and
    each socket read by ``timeout_s`` (the source's HTTP timeout), so a dead endpoint fails an attempt
    instead of hanging it. Raises :class:`pipeline.core.storage.StorageError` for a scheme without a backend.
    """
    location(url)  # a clear error for a scheme without its backend; installs the per-protocol defaults
    scheme = urlsplit(url).scheme.lower()
    options = dict(storage_options or {})
    if scheme in S3_SCHEMES:
        defaults = fsspec.config.conf.get("s3", {})
        merged = {**defaults, **options}
        if not _S3_IDENTITY_OPTIONS & merged.keys() and not aws_credentials_available():
            log.debug("no AWS credentials found: reading %s anonymously", url)
            options["anon"] = True
        if timeout_s is not None:
            config = {**defaults.get("config_kwargs", {}), **options.get("config_kwargs", {})}
            config.setdefault("connect_timeout", timeout_s)
            config.setdefault("read_timeout", timeout_s)
            options["config_kwargs"] = config
    fs, path = fsspec.core.url_to_fs(url, **options)
    return fs, path


def aws_credentials_available() -> bool:
    """Whether botocore finds credentials (variables, files, container or instance role); cached per setting."""
    setting = tuple(bool(os.environ.get(n)) for n in _SECRET_ENV) + tuple(os.environ.get(n) for n in _CREDENTIAL_ENV)
    return _credentials_for(setting)


@functools.lru_cache(maxsize=8)
def _credentials_for(_setting: tuple[object, ...]) -> bool:
    """The instance-metadata lookup can take a second off EC2: asked once per distinct environment."""
    import botocore.session

    try:
        return botocore.session.Session().get_credentials() is not None
    except Exception as e:  # a broken ~/.aws/config: let the signed request say what is wrong
        log.debug("looking up AWS credentials failed (%s): reading signed", type(e).__name__)
        return True
