"""Privacy helpers for events: IP anonymization and removal of fields by dotted path.

All functions are pure: no I/O, and the caller's event is never mutated.

A dotted path names a value inside nested dicts: ``"context.username"`` is
``event["context"]["username"]``. Paths go through dicts (any Mapping) only;
list indices are not supported, and a key that itself contains a dot cannot be
named.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Mapping
from typing import Any, Sequence, Union

# A path as given (dotted text) or as compiled (its segments).
Path = Union[str, Sequence[str]]

_IPV4_KEPT_PREFIX = 24  # zero the last octet
_IPV6_KEPT_PREFIX = 48  # zero the last 80 bits


def anonymize_ip(ip: str) -> str:
    """Return ``ip`` with its host part zeroed, in the usual compressed text form.

    * IPv4: the last octet is zeroed: ``"1.2.3.4"`` -> ``"1.2.3.0"``.
    * IPv6: the last 80 bits are zeroed (a /48 is kept):
      ``"2001:db8:1:2:3:4:5:6"`` -> ``"2001:db8:1::"``; a zone (``%eth0``) is dropped.
    * IPv4-mapped IPv6: the embedded IPv4 is anonymized and the mapped form kept:
      ``"::ffff:1.2.3.4"`` -> ``"::ffff:1.2.3.0"`` (zeroing 80 bits would erase it all).

    Anything that is not a single IP address (``""``, ``"unknown"``, a
    ``"1.2.3.4:8080"`` with port, a comma-separated ``X-Forwarded-For`` list,
    a non-str) is returned unchanged: this function never raises, so callers
    must hand it one address.
    """
    if not isinstance(ip, str):
        return ip
    try:
        address = ipaddress.ip_address(ip.strip())
    except ValueError:
        return ip
    if isinstance(address, ipaddress.IPv4Address):
        return str(_zero_host(address, _IPV4_KEPT_PREFIX))
    mapped = address.ipv4_mapped
    if mapped is not None:
        return f"::ffff:{_zero_host(mapped, _IPV4_KEPT_PREFIX)}"
    return str(_zero_host(ipaddress.IPv6Address(int(address)), _IPV6_KEPT_PREFIX))


def _zero_host(address: ipaddress.IPv4Address | ipaddress.IPv6Address, kept_prefix: int) -> Any:
    return ipaddress.ip_network((address, kept_prefix), strict=False).network_address


def compile_paths(paths: Iterable[str]) -> tuple[tuple[str, ...], ...]:
    """Split dotted paths into segment tuples: ``"context.username"`` -> ``("context", "username")``.

    Duplicates are dropped, order is kept. Raises ``ValueError`` naming the
    offending path when a path is empty or has an empty segment (``"a..b"``,
    ``".a"``, ``"a."``), and ``TypeError`` when ``paths`` is a single string
    (which would otherwise be read one character per path) or holds a non-str.
    """
    if isinstance(paths, str):
        raise TypeError(f"paths must be an iterable of dotted strings, not the single string {paths!r}")
    compiled = []
    for path in paths:
        if not isinstance(path, str):
            raise TypeError(f"path must be a dotted string, not {type(path).__name__}: {path!r}")
        if not path:
            raise ValueError("empty path")
        segments = tuple(path.split("."))
        if "" in segments:
            raise ValueError(f"path {path!r} has an empty segment")
        compiled.append(segments)
    return tuple(dict.fromkeys(compiled))


def without_paths(event: Mapping, paths: Iterable[Path]) -> dict:
    """Return a copy of ``event`` with the values at ``paths`` removed.

    ``paths`` holds compiled paths (from :func:`compile_paths`) or dotted strings.
    Paths that are absent, or that run into a non-dict, are ignored. The event
    is never mutated: the result is a new top-level dict, and only the dicts
    along a removed path are copied; everything else is shared with ``event``.
    Nested Mappings that are copied come back as plain dicts.
    """
    result = dict(event)
    parent: Any  # a dict along the path (copied first unless this call made it)
    copies = {id(result)}  # dicts this call created, hence free to mutate
    for path in paths:
        segments = path.split(".") if isinstance(path, str) else path
        if not segments:
            continue
        chain = _chain_to(result, segments)
        if chain is None:
            continue
        parent = result
        for segment, child in zip(segments[:-1], chain[1:]):
            if id(child) not in copies:
                child = dict(child)
                copies.add(id(child))
                parent[segment] = child
            parent = child
        del parent[segments[-1]]
    return result


def _chain_to(event: Mapping, segments: Sequence[str]) -> list[Mapping] | None:
    """The containers from ``event`` down to the parent of the last segment, or None if the path is absent."""
    chain = [event]
    node: Any = event
    for segment in segments[:-1]:
        node = node.get(segment)
        if not isinstance(node, Mapping):
            return None
        chain.append(node)
    return chain if segments[-1] in node else None


def get_path(event: Mapping, path: Path) -> Any | None:
    """Return the value at ``path`` (dotted string or compiled tuple) in ``event``.

    Returns None when any segment is absent or a non-dict value is in the way
    (a value that is itself None also reads as None).
    """
    segments = path.split(".") if isinstance(path, str) else path
    node: Any = event
    for segment in segments:
        if not isinstance(node, Mapping):
            return None
        node = node.get(segment)
    return node
