"""A last line of defence for gRPC servicer methods: no exception escapes a handler unanswered.

Servicers validate their inputs and answer ``INVALID_ARGUMENT`` (or another fitting status) themselves. If a
bug still raises, :func:`guarded` logs it with the traceback, counts it in the servicer's ``internal_errors``
and answers ``INTERNAL`` with a one-line message instead of gRPC's generic ``UNKNOWN``.
"""

from __future__ import annotations

import functools
import inspect
import logging
from collections import Counter
from collections.abc import Callable
from typing import Any, TypeVar

import grpc

log = logging.getLogger(__name__)
F = TypeVar("F", bound=Callable[..., Any])


def _aborted(context: grpc.ServicerContext) -> bool:
    """True if the handler already chose a status (``context.abort`` raises after setting it)."""
    try:
        code = context.code()
    except (AttributeError, NotImplementedError):  # test doubles
        return False
    return code is not None and code != grpc.StatusCode.OK


def _internal(self: Any, name: str, context: grpc.ServicerContext, exc: Exception) -> None:
    counter = getattr(self, "internal_errors", None)
    if isinstance(counter, Counter):
        counter[name] += 1
    log.exception("%s failed unexpectedly", name)
    context.abort(grpc.StatusCode.INTERNAL, f"{name}: internal error ({type(exc).__name__}: {exc})")


def guarded(method: F) -> F:
    """Wrap a unary or server-streaming servicer method (see the module docstring)."""
    name = method.__name__
    if inspect.isgeneratorfunction(method):

        @functools.wraps(method)
        def stream(self: Any, request: Any, context: grpc.ServicerContext) -> Any:
            try:
                yield from method(self, request, context)
            except Exception as exc:
                if _aborted(context):
                    raise
                _internal(self, name, context, exc)

        return stream  # type: ignore[return-value]

    @functools.wraps(method)
    def unary(self: Any, request: Any, context: grpc.ServicerContext) -> Any:
        try:
            return method(self, request, context)
        except Exception as exc:
            if _aborted(context):
                raise
            _internal(self, name, context, exc)

    return unary  # type: ignore[return-value]
