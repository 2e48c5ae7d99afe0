"""Kubernetes ``$(VAR)`` expansion, as in ``third_party/forked/golang/expansion``.

Flows through: command, args and env values of a container, with the variables known at
that point. Must stay true (it is what users' manifests rely on): ``$(NAME)`` becomes the
value when NAME is known and stays literally ``$(NAME)`` when not; ``$$`` is an escaped
``$``; a ``$`` followed by anything else, or an unclosed ``$(``, is kept as written.
"""

from __future__ import annotations

from collections.abc import Mapping


def expand(text: str, variables: Mapping[str, str]) -> str:
    """Expand ``$(VAR)`` references in ``text`` from ``variables``."""
    out: list[str] = []
    checkpoint = 0
    cursor = 0
    while cursor < len(text):
        if text[cursor] == "$" and cursor + 1 < len(text):
            out.append(text[checkpoint:cursor])
            nxt = text[cursor + 1]
            if nxt == "$":
                out.append("$")
                advance = 1
            elif nxt == "(":
                close = text.find(")", cursor + 2)
                if close == -1:
                    out.append("$(")
                    advance = 1
                else:
                    name = text[cursor + 2 : close]
                    out.append(variables.get(name, f"$({name})"))
                    advance = close - cursor
            else:
                out.append("$" + nxt)
                advance = 1
            cursor += advance
            checkpoint = cursor + 1
        cursor += 1
    out.append(text[checkpoint:])
    return "".join(out)
