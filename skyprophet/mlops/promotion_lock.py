"""The promotion lock: one promote or rollback of a registered model at a time, whoever runs it.

The lock is a registered model ``<name>.promotion-lock``: creating it is atomic in the registry, so
two operators (or a person and CD) cannot both hold it; the second is told who holds it.
"""

from __future__ import annotations

import logging
import os
import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime

import mlflow
from mlflow.exceptions import MlflowException

logger = logging.getLogger("skyprophet.promote")


LOCK_SUFFIX = ".promotion-lock"


LOCK_STALE_ENV = "SKYPROPHET_PROMOTE_LOCK_STALE_S"


LOCK_STALE_S = 3600.0  # a lock older than this is taken over (a promote takes minutes)


class PromotionInProgress(RuntimeError):
    """Another promote or rollback holds the promotion lock; the message names it."""


def lock_holder() -> dict[str, str]:
    """Who takes the lock: the tracking identity (when set), user, host and process."""
    return {
        "holder": os.environ.get("MLFLOW_TRACKING_USERNAME") or os.environ.get("USER", "unknown"),
        "host": socket.gethostname(),
        "pid": str(os.getpid()),
        "started_at": datetime.now(UTC).isoformat(),
        "started_epoch": f"{time.time():.0f}",
    }


def lock_is_stale(tags: dict[str, str]) -> bool:
    """Older than ``SKYPROPHET_PROMOTE_LOCK_STALE_S`` (default 3600 s), or its process on this host is gone."""
    age = time.time() - float(tags.get("started_epoch", "0") or 0)
    if age > float(os.environ.get(LOCK_STALE_ENV, LOCK_STALE_S)):
        return True
    if tags.get("host") == socket.gethostname() and tags.get("pid", "").isdigit():
        try:
            os.kill(int(tags["pid"]), 0)
        except ProcessLookupError:
            return True
        except PermissionError:  # alive, another user's
            return False
    return False


def describe_lock(tags: dict[str, str]) -> str:
    """``alice (pid 42 on host-1) since …, promote version 3``."""
    who = f"{tags.get('holder', '?')} (pid {tags.get('pid', '?')} on {tags.get('host', '?')})"
    return f"{who} since {tags.get('started_at', '?')}, {tags.get('action', '?')}"


@contextmanager
def promotion_lock(client: mlflow.MlflowClient, name: str, action: str) -> Iterator[dict[str, str]]:
    """Hold the registered model ``<name>.promotion-lock`` (its creation is atomic in the registry).

    A second holder gets RESOURCE_ALREADY_EXISTS and PromotionInProgress naming the first. A stale
    lock (``lock_is_stale``: its process died, or it is older than the limit) is taken over once.
    Released (deleted) at the end, also on errors; an ``os._exit`` leaves it, to be taken over.
    """
    lock = f"{name}{LOCK_SUFFIX}"
    mine = {**lock_holder(), "action": action}
    for attempt in (1, 2):
        try:
            client.create_registered_model(
                lock, tags=mine, description=f"Held while a promotion of {name!r} runs; deleted at its end."
            )
            break
        except MlflowException as err:
            if err.error_code != "RESOURCE_ALREADY_EXISTS":
                raise
        try:
            held = client.get_registered_model(lock).tags
        except MlflowException:  # released meanwhile
            continue
        if attempt == 1 and lock_is_stale(held):
            logger.warning("promote: taking over the stale promotion lock of %s", describe_lock(held))
            client.delete_registered_model(lock)
            continue
        raise PromotionInProgress(
            f"another promotion of {name!r} holds the lock {lock!r}: {describe_lock(held)}; wait for it to end "
            f"(a lock whose process is gone, or older than {LOCK_STALE_ENV}="
            f"{os.environ.get(LOCK_STALE_ENV, f'{LOCK_STALE_S:.0f}')} s, is taken over)"
        )
    else:
        raise PromotionInProgress(f"could not take the promotion lock {lock!r} of {name!r}")
    try:
        yield mine
    finally:
        try:
            client.delete_registered_model(lock)
        except MlflowException as err:
            logger.error("promote: could not release the promotion lock %s (%s)", lock, err)
