"""The base images a Dockerfile is built FROM: what basetrigger watches for a task.

Tokenizing is left to the PyPI `dockerfile` package, which wraps BuildKit's own parser (line
continuations, the `# escape=` directive, comments, heredocs, any keyword case). On top of it this
module does what BuildKit's frontend does before it pulls anything
(frontend/dockerfile/instructions and dockerfile2llb):

- ARGs declared before the first FROM are the only variables a FROM can use, with their defaults,
  overridden by the build args of the build; BuildKit's automatic platform args
  (`BUILDPLATFORM`, `TARGETARCH`, ...) are always available.
- `FROM [--platform=<p>] <image> [AS <name>]`: image and platform are expanded with shell rules
  (`$V`, `${V}`, `${V:-w}`, `${V-w}`, `${V:+w}`, `${V+w}`, `${V:?m}`, `${V#p}`, `${V%p}`,
  `${V/p/r}`, quotes, escapes), the stage name is lowercased.
- A FROM naming an earlier stage builds on that stage, `scratch` on nothing, anything else on
  an image, normalized with `shared.domain.image_ref`. Only names refer to stages: `FROM 0` is the image
  `docker.io/library/0` (indexes work for `COPY --from`, not for FROM).

The result lists every stage, the *runtime* bases (the chain of the final stage) and *all* bases
(every stage), as ACR's `--base-image-trigger-type Runtime|All` distinguishes them.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import dockerfile as _parser

from shared.domain.image_ref import ImageRef, InvalidReference

SCRATCH = "scratch"

# Platform assumed for BuildKit's automatic platform args when the caller gives none: what the
# local builder and ACR Tasks build by default.
DEFAULT_PLATFORM = "linux/amd64"

# instructions/parse.go: a stage name, once lowercased.
_STAGE_NAME = re.compile(r"[a-z][a-z0-9-_.]*")
# parser/directives.go: `# name=value` lines at the very top of the file.
_DIRECTIVE = re.compile(r"#\s*([a-zA-Z][a-zA-Z0-9]*)\s*=\s*(.+?)\s*")


# What an instruction word looks like. An unknown "instruction" is quoted only in this shape: the
# first word of a file that is no Dockerfile (a key, a password) is not.
_INSTRUCTION_WORD = re.compile(r"[A-Za-z]{1,20}")


class DockerfileError(ValueError):
    """The Dockerfile cannot be read; `line` is the 1-based line it is about, or None.

    `message` may quote the file (for `basetrigger dockerfile deps`, which reads the user's own
    file on the user's machine). `public` says the same without quoting anything of the file but an
    instruction word: what the service answers and logs, since the file was read on its machine.
    """

    def __init__(self, message: str, line: int | None = None, public: str | None = None):
        super().__init__(f"line {line}: {message}" if line is not None else message)
        self.message = message
        self.line = line
        self._public = public or message

    @property
    def public(self) -> str:
        return f"line {self.line}: {self._public}" if self.line is not None else self._public


@dataclass(frozen=True)
class Stage:
    """One FROM.

    `base` is what the stage starts from, after ARG expansion: a normalized image reference, the
    name of an earlier stage (then `from_stage` is that stage's index), or `"scratch"`.
    `alias` is the stage name (lowercased, as BuildKit stores it), `line` the FROM's first line.
    """

    index: int
    base: str
    alias: str | None
    platform: str | None
    line: int
    from_stage: int | None = None

    @property
    def kind(self) -> str:
        """`"image"`, `"stage"` or `"scratch"`."""
        if self.from_stage is not None:
            return "stage"
        return SCRATCH if self.base == SCRATCH else "image"

    @property
    def external_base(self) -> str | None:
        """The image this stage pulls, or None when it builds on a stage or on scratch."""
        return self.base if self.kind == "image" else None

    def to_dict(self) -> dict[str, Any]:
        return {"base": self.base, "alias": self.alias, "platform": self.platform}


@dataclass(frozen=True)
class DockerfileDeps:
    """The stages of a Dockerfile and the external images it depends on."""

    stages: list[Stage] = field(default_factory=list)
    runtime: list[str] = field(default_factory=list)
    all: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "stages": [stage.to_dict() for stage in self.stages],
            "runtime": list(self.runtime),
            "all": list(self.all),
        }


def parse_dependencies(
    text: str,
    build_args: dict[str, str] | None = None,
    *,
    platform: str = DEFAULT_PLATFORM,
) -> DockerfileDeps:
    """Stages and base images of the Dockerfile `text`.

    `build_args` are the `--build-arg` values of the build; `platform` (`os/arch[/variant]`) is
    the build and target platform the automatic platform args describe.
    Raises DockerfileError for a file BuildKit would refuse before pulling anything.
    """
    build_args = dict(build_args or {})
    try:
        commands = _parser.parse_string(text)
    except _parser.GoParseError as exc:
        raise DockerfileError(f"cannot parse Dockerfile: {exc}",
                              public="cannot parse the Dockerfile") from None
    escape = _escape_token(text)
    known = set(_parser.all_cmds())

    meta_args: list[_parser.Command] = []
    froms: list[_parser.Command] = []
    for cmd in commands:
        # A lone line continuation at the end (`FROM a\n\\`) comes back as an instruction without
        # a name, which BuildKit refuses as an unknown (empty) instruction.
        raw = cmd.cmd or ""
        name = raw.upper()
        if raw.lower() not in known:
            shown = f": {name}" if _INSTRUCTION_WORD.fullmatch(name) else ""
            raise DockerfileError(f"unknown instruction: {name}", cmd.start_line,
                                  public=f"unknown instruction{shown}")
        if name == "FROM":
            froms.append(cmd)
        elif not froms:
            if name != "ARG":
                raise DockerfileError(f"{name} before the first FROM: no build stage in current context",
                                      cmd.start_line)
            meta_args.append(cmd)
    if not froms:
        raise DockerfileError("Dockerfile has no FROM instruction")

    parsed_froms = [_split_from(cmd) for cmd in froms]
    target_stage = parsed_froms[-1][2] or ""
    env = _automatic_args(platform, target_stage, build_args)
    env = _meta_args(meta_args, env, build_args, escape)

    stages: list[Stage] = []
    stage_by_name: dict[str, Stage] = {}
    for index, (cmd, (raw_platform, raw_base, alias)) in enumerate(zip(froms, parsed_froms, strict=True)):
        line = cmd.start_line
        base = _expand(raw_base, env, escape, line, "FROM")
        if not base:
            raise DockerfileError(f"base name ({raw_base}) should not be blank", line,
                                  public="FROM: the base name is blank once its variables are expanded")
        stage_platform = None
        if raw_platform:
            stage_platform = _expand(raw_platform, env, escape, line, "FROM")
            if not stage_platform:
                raise DockerfileError(f"empty platform value from expression {raw_platform}", line,
                                      public="FROM: the --platform value is empty once its variables "
                                             "are expanded")

        from_stage = None
        if base == SCRATCH:
            pass
        elif base in stage_by_name:
            # BuildKit looks the expanded name up as written among the (lowercased) names of the
            # stages before this one; anything else is an image.
            from_stage = stage_by_name[base].index
        else:
            try:
                base = str(ImageRef.parse(base))
            except InvalidReference as exc:
                source = f" (from {raw_base!r})" if raw_base != base else ""
                raise DockerfileError(
                    f"invalid image reference {base!r}{source}: {exc.reason}", line,
                    public="FROM: invalid image reference") from None

        stage = Stage(index, base, alias, stage_platform, line, from_stage)
        stages.append(stage)
        if alias:
            stage_by_name[alias] = stage

    # Runtime: follow the final stage down through the stages it is built FROM.
    runtime: list[str] = []
    current: Stage | None = stages[-1]
    while current is not None:
        if current.external_base and current.external_base not in runtime:
            runtime.append(current.external_base)
        current = stages[current.from_stage] if current.from_stage is not None else None
    all_bases = list(dict.fromkeys(s.external_base for s in stages if s.external_base))
    return DockerfileDeps(stages, runtime, all_bases)


def declared_args(text: str) -> dict[str, int]:
    """Each name an `ARG` declares (before the first FROM or in any stage), with the line of its
    first declaration; {} for a file that cannot be parsed (parse_dependencies says why)."""
    try:
        commands = _parser.parse_string(text)
    except _parser.GoParseError:
        return {}
    found: dict[str, int] = {}
    for cmd in commands:
        if (cmd.cmd or "").upper() == "ARG":
            for word in cmd.value:
                found.setdefault(word.split("=", 1)[0], cmd.start_line)
    return found


def secret_arg_warnings(text: str, secret_names: Iterable[str], as_build_args: bool) -> list[str]:
    """What to tell the owner of a Dockerfile that reads a secret arg through `ARG NAME`.

    `as_build_args`: does the builder pass secret args as build args (ACR, as its `--secret-arg`
    does) or as build secrets only (buildah: /run/secrets/NAME, never in a layer or the history)?
    """
    declared = declared_args(text)
    warnings = []
    for name in sorted(set(secret_names) & set(declared)):
        where = f"secret arg {name} is declared as `ARG {name}` (Dockerfile line {declared[name]})"
        if as_build_args:
            warnings.append(f"{where}: this builder (ACR) passes secret args as build args, so a RUN "
                            "that uses it keeps its value in the pushed image's history")
        else:
            warnings.append(f"{where}, but secret args are never passed as build args (the image's "
                            f"history would keep them), so the ARG does not receive it: read it with "
                            f"`RUN --mount=type=secret,id={name}` from /run/secrets/{name}")
    return warnings


def _escape_token(text: str) -> str:
    """The escape character set by a leading `# escape=` directive (the parser checked it)."""
    for line in text.lstrip("\ufeff").splitlines():
        match = _DIRECTIVE.fullmatch(line.lstrip())
        if not match:
            break  # directives end at the first line that is not one
        if match.group(1).lower() == "escape":
            return match.group(2)
    return "\\"


def _split_from(cmd: Any) -> tuple[str | None, str, str | None]:
    """(platform expression, base expression, stage name) of a FROM, validated like BuildKit."""
    line = cmd.start_line
    args = list(cmd.value)
    if len(args) == 3 and args[1].lower() == "as":
        alias = args[2].lower()
        if not _STAGE_NAME.fullmatch(alias):
            raise DockerfileError(f"invalid name for build stage: {args[2]!r}, "
                                  "name can't start with a number or contain symbols", line,
                                  public="FROM: invalid name for build stage: it can't start with a "
                                         "number or contain symbols")
    elif len(args) == 1:
        alias = None
    elif not args:
        raise DockerfileError("FROM requires an image: FROM [--platform=<p>] <image> [AS <name>]", line)
    else:
        raise DockerfileError(f"FROM requires either one or three arguments, got {' '.join(args)!r}", line,
                              public=f"FROM requires either one or three arguments, got {len(args)}")

    platform = None
    seen = set()
    for flag in cmd.flags:
        name, has_value, value = flag[2:].partition("=")
        if name != "platform":
            raise DockerfileError(f"unknown flag: {name}", line,
                                  public="FROM: unknown flag (FROM takes only --platform)")
        if name in seen:
            raise DockerfileError(f"duplicate flag specified: {name}", line)
        if not has_value:
            raise DockerfileError(f"missing a value on flag: {name}", line)
        seen.add(name)
        platform = value or None
    return platform, args[0], alias


def _automatic_args(platform: str, target_stage: str, build_args: dict[str, str]) -> dict[str, str]:
    """BuildKit's automatic global args (dockerfile2llb defaultArgs); build args override them."""
    os_name, _, rest = platform.partition("/")
    arch, _, variant = rest.partition("/")
    env = {
        "BUILDPLATFORM": platform,
        "BUILDOS": os_name,
        "BUILDOSVERSION": "",
        "BUILDARCH": arch,
        "BUILDVARIANT": variant,
        "TARGETPLATFORM": platform,
        "TARGETOS": os_name,
        "TARGETOSVERSION": "",
        "TARGETARCH": arch,
        "TARGETVARIANT": variant,
        "TARGETSTAGE": target_stage,
    }
    for name in env:
        if name in build_args:
            env[name] = build_args[name]
    return env


def _meta_args(meta_args: Any, env: dict[str, str], build_args: dict[str, str],
               escape: str) -> dict[str, str]:
    """Add the ARGs before the first FROM (dockerfile2llb buildMetaArgs).

    A build arg replaces a declared ARG's value (unexpanded); otherwise the default is expanded
    with the args declared so far. An ARG with neither stays unset. Undeclared build args are
    not visible to FROM, as in Docker.
    """
    env = dict(env)
    for cmd in meta_args:
        if not cmd.value:
            raise DockerfileError("ARG requires at least one argument", cmd.start_line)
        for word in cmd.value:
            name, has_default, default = word.partition("=")
            if not name:
                raise DockerfileError(f"ARG names can not be blank: {word!r}", cmd.start_line,
                                      public="ARG names can not be blank")
            if name in build_args:
                env[name] = build_args[name]
            elif has_default:
                env[name] = _expand(default, env, escape, cmd.start_line, "ARG")
    return env


def _expand(word: str, env: dict[str, str], escape: str, line: int, instruction: str) -> str:
    try:
        return _ShellWord(word, env, escape).expand()
    except _ExpansionError as exc:
        raise DockerfileError(f"failed to process {word!r}: {exc}", line,
                              public=f"{instruction}: cannot expand its variables (a missing "
                                     "quote or brace, or ${V:?} of an unset one)") from None


class _ExpansionError(Exception):
    pass


_SPECIAL_PARAMS = set("@*#?-$!0")
_EOF = ""


class _ShellWord:
    """BuildKit's shell.Lex.ProcessWord: quote removal, escapes and variable substitution.

    A port of frontend/dockerfile/shell/lex.go for one word (no word splitting), so that a FROM
    line expands exactly as `docker build` expands it. Unset variables expand to "".
    """

    def __init__(self, word: str, env: dict[str, str], escape: str):
        self.word = word
        self.pos = 0
        self.env = env
        self.escape = escape

    def expand(self) -> str:
        return self._until(_EOF, raw_escapes=False)

    def _peek(self) -> str:
        return self.word[self.pos] if self.pos < len(self.word) else _EOF

    def _next(self) -> str:
        ch = self._peek()
        self.pos += 1 if ch else 0
        return ch

    def _until(self, stop: str, raw_escapes: bool) -> str:
        """Process characters up to `stop` (consumed) or the end of the word."""
        out: list[str] = []
        while (ch := self._peek()) != _EOF:
            if stop and ch == stop:
                self._next()
                return "".join(out)
            if ch == "$":
                out.append(self._dollar())
            elif ch == "'":
                out.append(self._single_quoted())
            elif ch == '"':
                out.append(self._double_quoted(raw_escapes))
            else:
                ch = self._next()
                if ch == self.escape:
                    if raw_escapes:
                        out.append(ch)
                    ch = self._next()  # the escaped character, taken literally
                    if ch == _EOF:
                        break
                out.append(ch)
        if stop:
            raise _ExpansionError(f"unexpected end of statement while looking for matching {stop}")
        return "".join(out)

    def _single_quoted(self) -> str:
        self._next()
        out: list[str] = []
        while (ch := self._next()) != "'":
            if ch == _EOF:
                raise _ExpansionError("unexpected end of statement while looking for matching single-quote")
            out.append(ch)
        return "".join(out)

    def _double_quoted(self, raw_escapes: bool) -> str:
        self._next()
        out: list[str] = []
        while True:
            ch = self._peek()
            if ch == _EOF:
                raise _ExpansionError("unexpected end of statement while looking for matching double-quote")
            if ch == '"':
                self._next()
                return "".join(out)
            if ch == "$":
                out.append(self._dollar())
                continue
            ch = self._next()
            if ch == self.escape:
                if raw_escapes:
                    out.append(ch)
                if self._peek() == _EOF:
                    continue
                # Inside double quotes the escape only protects `"`, `$` and itself.
                if self._peek() in ('"', "$", self.escape):
                    ch = self._next()
            out.append(ch)

    def _name(self) -> str:
        ch = self._peek()
        if ch.isdigit():
            start = self.pos
            while self._peek().isdigit():
                self._next()
            return self.word[start:self.pos]
        if ch and ch in _SPECIAL_PARAMS:
            return self._next()
        start = self.pos
        while (ch := self._peek()) and (ch.isalnum() or ch == "_"):
            self._next()
        return self.word[start:self.pos]

    def _dollar(self) -> str:
        self._next()
        if self._peek() != "{":
            name = self._name()
            return self.env.get(name, "") if name else "$"
        self._next()
        if self._peek() == _EOF:
            raise _ExpansionError("syntax error: missing '}'")
        if self._peek() in "{}:":
            raise _ExpansionError("syntax error: bad substitution")
        name = self._name()
        value = self.env.get(name)
        op = self._next()
        if op == "}":
            return value or ""
        if op == _EOF:
            raise _ExpansionError("syntax error: missing '}'")
        if op == "/":
            return self._replace(value or "")
        null_is_unset = op == ":"
        if null_is_unset:
            op = self._next()
        if op not in ("-", "+", "?", "#", "%"):
            modifier = (":" if null_is_unset else "") + op
            raise _ExpansionError(f"unsupported modifier ({modifier}) in substitution")
        word = self._until("}", raw_escapes=op in "#%")
        unset = value is None or (null_is_unset and value == "")
        if op == "-":
            return word if unset or value is None else value
        if op == "+":
            return "" if unset else word
        if op == "?":
            if value is None:
                raise _ExpansionError(f"{name}: {word or 'is not allowed to be unset'}")
            if unset:
                raise _ExpansionError(f"{name}: {word or 'is not allowed to be empty'}")
            return value
        # `#`/`%` remove the shortest matching prefix/suffix; doubled, the longest.
        greedy = word.startswith(op)
        if greedy:
            word = word[1:]
        value = value or ""
        if op == "#":
            return _trim_prefix(word, value, greedy)
        return _trim_prefix(_reverse_pattern(word), value[::-1], greedy)[::-1]

    def _replace(self, value: str) -> str:
        replace_all = self._peek() == "/"
        if replace_all:
            self._next()
        try:
            pattern = self._until("/", raw_escapes=True)
        except _ExpansionError:
            raise _ExpansionError("syntax error: missing '/' in ${}") from None
        replacement = self._until("}", raw_escapes=True)
        regex = _shell_pattern(pattern, greedy=True, anchored=False)
        return str(regex.sub(lambda _: replacement, value, count=0 if replace_all else 1))


def _shell_pattern(pattern: str, greedy: bool, anchored: bool) -> re.Pattern[str]:
    """A shell wildcard pattern (`*`, `?`, `\\` escapes; no brackets) as a regex."""
    out = ["^"] if anchored else []
    i = 0
    while i < len(pattern):
        ch = pattern[i]
        i += 1
        if ch == "*":
            out.append(".*" if greedy else ".*?")
        elif ch == "?":
            out.append(".")
        elif ch == "\\":
            if i < len(pattern) and pattern[i] in "}/":
                continue  # escaped only to get it through ${...}; literal in the pattern
            if i >= len(pattern) or pattern[i] not in "*?\\":
                raise _ExpansionError(f"invalid pattern ({pattern}) in substitution: invalid escape")
            out.append(re.escape(pattern[i]))
            i += 1
        else:
            out.append(re.escape(ch))
    return re.compile("".join(out))


def _trim_prefix(pattern: str, value: str, greedy: bool) -> str:
    match = _shell_pattern(pattern, greedy, anchored=True).search(value)
    return value[match.end():] if match else value


def _reverse_pattern(pattern: str) -> str:
    """Reverse a pattern keeping each `\\x` escape in front of its character."""
    tokens = []
    i = 0
    while i < len(pattern):
        step = 2 if pattern[i] == "\\" and i + 1 < len(pattern) else 1
        tokens.append(pattern[i:i + step])
        i += step
    return "".join(reversed(tokens))
