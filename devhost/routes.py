"""ASP.NET-style route templates, as HTTP triggers declare them.

Supports what Functions apps use: literal segments (case-insensitive, like ASP.NET), `{name}`,
optional `{name?}`, defaults `{name=value}`, catch-all `{*rest}`, the common constraints
(`{id:int}`, `:long`, `:alpha`, `:bool`, `:guid`) and several parameters in one segment
(`{name}.{ext}`). Several templates may match one path; `precedence` orders them the way ASP.NET
does — literal segments before constrained parameters before plain, optional and catch-all ones.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from urllib.parse import unquote

_PARAMETER = re.compile(r"\{([^{}]+)\}")
_CONSTRAINTS = {
    "int": r"-?\d+",
    "long": r"-?\d+",
    "alpha": r"[A-Za-z]+",
    "bool": r"(?i:true|false)",
    "guid": r"\{?[0-9A-Fa-f]{8}-?(?:[0-9A-Fa-f]{4}-?){3}[0-9A-Fa-f]{12}\}?",
}

# Precedence rank of a segment kind; lower is more specific.
_LITERAL, _COMPLEX, _CONSTRAINED, _PLAIN, _OPTIONAL, _CATCH_ALL = range(6)


class RouteError(ValueError):
    """A route template devhost cannot parse."""


@dataclass(frozen=True)
class _Parameter:
    name: str
    pattern: str
    optional: bool
    catch_all: bool
    default: str | None


def _parse_parameter(token: str, template: str) -> _Parameter:
    catch_all = token.startswith("*")
    token = token.lstrip("*")
    default = None
    if "=" in token:
        token, default = token.split("=", 1)
    optional = token.endswith("?")
    token = token.rstrip("?")
    name, *constraints = token.split(":")
    if not name:
        raise RouteError(f"route {template!r}: empty parameter name")
    pattern = ".*" if catch_all else "[^/]+"
    for constraint in constraints:
        if constraint not in _CONSTRAINTS:
            raise RouteError(f"route {template!r}: unsupported constraint {constraint!r}")
        pattern = _CONSTRAINTS[constraint]
    return _Parameter(name, pattern, optional or default is not None, catch_all, default)


@dataclass(frozen=True)
class RouteTemplate:
    template: str
    regex: re.Pattern[str]
    groups: tuple[tuple[str, str], ...]  # (regex group, parameter name)
    defaults: tuple[tuple[str, str], ...]
    precedence: tuple[int, ...]

    @classmethod
    def parse(cls, template: str) -> RouteTemplate:
        parts: list[str] = []
        groups: list[tuple[str, str]] = []
        defaults: list[tuple[str, str]] = []
        precedence: list[int] = []
        segments = [s for s in template.strip("/").split("/") if s] if template.strip("/") else []
        for index, segment in enumerate(segments):
            separator = "/" if index else ""
            tokens = _PARAMETER.findall(segment)
            if not tokens:
                parts.append(separator + re.escape(segment))
                precedence.append(_LITERAL)
                continue
            if _PARAMETER.fullmatch(segment):
                param = _parse_parameter(tokens[0], template)
                group = f"p{len(groups)}"
                groups.append((group, param.name))
                if param.default is not None:
                    defaults.append((param.name, param.default))
                capture = f"(?P<{group}>{param.pattern})"
                if param.optional or param.catch_all:
                    parts.append(f"(?:{separator}{capture})?")
                    precedence.append(_CATCH_ALL if param.catch_all else _OPTIONAL)
                else:
                    parts.append(separator + capture)
                    precedence.append(_PLAIN if param.pattern == "[^/]+" else _CONSTRAINED)
                continue
            # Several parameters and literals in one segment: parameters match lazily.
            pieces = []
            for i, piece in enumerate(_PARAMETER.split(segment)):
                if i % 2 == 0:
                    pieces.append(re.escape(piece))
                    continue
                param = _parse_parameter(piece, template)
                group = f"p{len(groups)}"
                groups.append((group, param.name))
                lazy = param.pattern + "?" if param.pattern == "[^/]+" else param.pattern
                pieces.append(f"(?P<{group}>{lazy})")
            parts.append(separator + "".join(pieces))
            precedence.append(_COMPLEX)
        regex = re.compile("^" + "".join(parts) + "$", re.IGNORECASE)
        return cls(template, regex, tuple(groups), tuple(defaults), tuple(precedence))

    def match(self, raw_path: str) -> dict[str, str] | None:
        """Route parameters when `raw_path` (still percent-encoded, no prefix) matches, else None."""
        found = self.regex.match(raw_path.strip("/"))
        if not found:
            return None
        params = dict(self.defaults)
        for group, name in self.groups:
            value = found.group(group)
            # Matching the encoded path keeps an encoded "/" inside one parameter, as ASP.NET does.
            if value is not None:
                params[name] = unquote(value)
        return params
