"""Dockerfile dependencies: stages, ARG expansion, stage references, runtime vs all, errors."""

import textwrap

import pytest

from shared.domain.dockerfile import DockerfileError, Stage, parse_dependencies

NODE = "docker.io/library/node:latest"
ALPINE = "docker.io/library/alpine:3.20"
D64 = "sha256:" + "a" * 64


def deps(text, build_args=None, **kwargs):
    return parse_dependencies(textwrap.dedent(text), build_args, **kwargs)


def bases(result):
    return [stage.base for stage in result.stages]


# --- single and multi-stage -------------------------------------------------------------------

def test_single_stage_is_normalized():
    result = deps("FROM node\nRUN echo hi\n")
    assert result.stages == [Stage(0, NODE, None, None, 1)]
    assert result.runtime == [NODE]
    assert result.all == [NODE]


@pytest.mark.parametrize(
    ("image", "expected"),
    [
        ("localhost:5000/base/img:1", "localhost:5000/base/img:1"),
        ("[::1]:5000/x", "[::1]:5000/x:latest"),
        (f"node@{D64}", f"docker.io/library/node@{D64}"),
        (f"node:20@{D64}", f"docker.io/library/node:20@{D64}"),
        ("user/app", "docker.io/user/app:latest"),
    ],
)
def test_base_references_are_normalized(image, expected):
    assert deps(f"FROM {image}\n").runtime == [expected]


def test_multi_stage_runtime_is_only_the_final_stage():
    result = deps("""
        FROM golang:1.22 AS build
        RUN go build -o /app
        FROM alpine:3.20
        COPY --from=build /app /app
    """)
    assert bases(result) == ["docker.io/library/golang:1.22", ALPINE]
    assert [s.alias for s in result.stages] == ["build", None]
    assert result.runtime == [ALPINE]
    assert result.all == ["docker.io/library/golang:1.22", ALPINE]


def test_stage_chain_is_followed_to_its_image():
    result = deps("""
        FROM node:20 AS base
        FROM python:3.12 AS tools
        FROM base AS deps
        FROM deps AS final
        COPY --from=tools /x /x
    """)
    assert [s.kind for s in result.stages] == ["image", "image", "stage", "stage"]
    assert [s.from_stage for s in result.stages] == [None, None, 0, 2]
    assert bases(result)[2:] == ["base", "deps"]
    assert result.runtime == ["docker.io/library/node:20"]
    assert result.all == ["docker.io/library/node:20", "docker.io/library/python:3.12"]


def test_all_has_no_duplicates_and_keeps_first_appearance_order():
    result = deps("""
        FROM alpine:3.20 AS a
        FROM node AS b
        FROM alpine:3.20 AS c
        FROM docker.io/library/node:latest
    """)
    assert result.all == [ALPINE, NODE]
    assert result.runtime == [NODE]


def test_scratch_is_not_a_dependency():
    result = deps("""
        FROM golang AS build
        FROM scratch
        COPY --from=build /app /app
    """)
    assert result.stages[1].base == "scratch"
    assert result.stages[1].kind == "scratch"
    assert result.stages[1].external_base is None
    assert result.runtime == []
    assert result.all == ["docker.io/library/golang:latest"]


def test_stage_built_on_scratch_stage_has_empty_runtime():
    result = deps("FROM scratch AS empty\nFROM empty\n")
    assert result.stages[1].from_stage == 0
    assert result.runtime == []
    assert result.all == []


def test_stage_index_in_from_is_an_image_not_a_stage():
    # BuildKit resolves FROM by stage *name* only; numbers work for COPY --from, not for FROM.
    result = deps("FROM node\nFROM 0\nCOPY --from=0 /a /b\n")
    assert result.stages[1].kind == "image"
    assert result.runtime == ["docker.io/library/0:latest"]


def test_later_stage_name_is_not_a_stage_reference():
    result = deps("FROM later\nFROM node AS later\n")
    assert result.stages[0].base == "docker.io/library/later:latest"
    assert result.stages[0].from_stage is None


def test_alias_and_as_keyword_are_case_insensitive():
    result = deps("""
        FROM node As Builder
        from builder as NEXT
        FROM next
    """)
    assert [s.alias for s in result.stages] == ["builder", "next", None]
    assert [s.from_stage for s in result.stages] == [None, 0, 1]
    assert result.runtime == [NODE]


def test_stage_reference_is_matched_as_written():
    # BuildKit stores names lowercased but looks the FROM value up as written, so `FROM Builder`
    # is the image "Builder", which is not a valid reference.
    with pytest.raises(DockerfileError, match="must be lowercase"):
        deps("FROM node AS builder\nFROM Builder\n")


# --- ARG expansion --------------------------------------------------------------------------

def test_arg_before_from_with_default():
    result = deps("""
        ARG VERSION=18
        FROM node:${VERSION}
    """)
    assert result.runtime == ["docker.io/library/node:18"]


def test_build_arg_overrides_default():
    text = """
        ARG REGISTRY=docker.io
        ARG VERSION=18
        FROM $REGISTRY/library/node:$VERSION
    """
    assert deps(text).runtime == ["docker.io/library/node:18"]
    assert deps(text, {"VERSION": "20", "REGISTRY": "localhost:5000"}).runtime == [
        "localhost:5000/library/node:20"
    ]


def test_build_arg_for_arg_without_default():
    text = "ARG BASE\nFROM ${BASE:-alpine:3.20}\n"
    assert deps(text).runtime == [ALPINE]
    assert deps(text, {"BASE": "node"}).runtime == [NODE]


def test_undeclared_build_args_are_not_visible_to_from():
    result = deps("FROM node:${VERSION:-18}\n", {"VERSION": "20"})
    assert result.runtime == ["docker.io/library/node:18"]


def test_arg_defaults_can_use_earlier_args_and_build_args_are_not_expanded():
    text = """
        ARG MAJOR=3
        ARG TAG=${MAJOR}.20
        FROM alpine:$TAG
    """
    assert deps(text).runtime == [ALPINE]
    assert deps(text, {"MAJOR": "4"}).runtime == ["docker.io/library/alpine:4.20"]
    # A build arg's value is used as given, not expanded again.
    with pytest.raises(DockerfileError, match=r"'alpine:\$MAJOR'"):
        deps(text, {"TAG": "$MAJOR"})


def test_several_args_per_line_and_quotes():
    result = deps("""
        ARG NAME="node" TAG='20' EMPTY=
        FROM "${NAME}":${TAG}${EMPTY}
    """)
    assert result.runtime == ["docker.io/library/node:20"]


def test_arg_declared_after_first_from_is_not_used_by_later_from():
    result = deps("""
        FROM node
        ARG TAG=3.20
        FROM alpine:${TAG:-edge}
    """)
    assert result.runtime == ["docker.io/library/alpine:edge"]


def _expanded_tag(expression, env):
    # Expand through FROM with a known prefix, and read the tag back from the stage.
    arg_lines = "".join(f'ARG {k}="{v}"\n' for k, v in env.items())
    return deps(f"{arg_lines}FROM alpine:t{expression}\n").stages[0].base.split(":", 1)[1][1:]


@pytest.mark.parametrize(
    ("expression", "env", "expected"),
    [
        ("${V:-x}", {}, "x"),
        ("${V:-x}", {"V": ""}, "x"),
        ("${V:-x}", {"V": "y"}, "y"),
        ("${V-x}", {}, "x"),
        ("${V-x}", {"V": ""}, ""),
        ("${V:+x}", {}, ""),
        ("${V:+x}", {"V": ""}, ""),
        ("${V:+x}", {"V": "y"}, "x"),
        ("${V+x}", {}, ""),
        ("${V+x}", {"V": ""}, "x"),
        ("${V:?}", {"V": "y"}, "y"),
        ("$V$V", {"V": "y"}, "yy"),
        ("${V}_1", {"V": "y"}, "y_1"),
        ("${V:-${W:-z}}", {}, "z"),
        ("${V#*.}", {"V": "3.20.1"}, "20.1"),
        ("${V##*.}", {"V": "3.20.1"}, "1"),
        ("${V%.*}", {"V": "3.20.1"}, "3.20"),
        ("${V%%.*}", {"V": "3.20.1"}, "3"),
        ("${V/./-}", {"V": "3.20.1"}, "3-20.1"),
        ("${V//./-}", {"V": "3.20.1"}, "3-20-1"),
        ('"$V"', {"V": "y"}, "y"),
        ("'x'", {}, "x"),
    ],
)
def test_shell_substitutions(expression, env, expected):
    assert _expanded_tag(expression, env) == expected


@pytest.mark.parametrize(
    ("expression", "message"),
    [
        ("${V:?}", "V: is not allowed to be unset"),
        ("${V?required}", "V: required"),
        ("${V", "missing '}'"),
        ("${}", "bad substitution"),
        ("${V!x}", "unsupported modifier"),
        ("'x", "single-quote"),
        ('"x', "double-quote"),
    ],
)
def test_substitution_errors_name_the_line(expression, message):
    with pytest.raises(DockerfileError, match=message) as info:
        deps(f"# first line\nFROM alpine:{expression}\n")
    assert info.value.line == 2


def test_empty_value_is_an_error_for_colon_question():
    with pytest.raises(DockerfileError, match="V: is not allowed to be empty"):
        deps('ARG V=""\nFROM alpine:t${V:?}\n')


def test_escaped_dollar_is_literal():
    # `\$V` is the two characters `$V`, not an expansion; as a tag that is invalid.
    with pytest.raises(DockerfileError, match="'alpine:t\\$V'"):
        deps("ARG V=y\nFROM alpine:t\\$V\n")


# --- platform -------------------------------------------------------------------------------

def test_platform_flag_is_expanded_with_automatic_args():
    result = deps("""
        FROM --platform=$BUILDPLATFORM golang AS build
        FROM --platform=linux/arm64 alpine:3.20
        FROM --platform=${TARGETOS}/${TARGETARCH} node
    """)
    assert [s.platform for s in result.stages] == ["linux/amd64", "linux/arm64", "linux/amd64"]


def test_platform_can_be_chosen_and_build_args_override_automatic_args():
    text = "FROM --platform=$BUILDPLATFORM node:${TARGETARCH}\n"
    assert deps(text, platform="linux/arm64/v8").stages[0].platform == "linux/arm64/v8"
    assert deps(text, platform="linux/arm64/v8").runtime == ["docker.io/library/node:arm64"]
    overridden = deps(text, {"BUILDPLATFORM": "linux/s390x", "TARGETARCH": "ppc64le"})
    assert overridden.stages[0].platform == "linux/s390x"
    assert overridden.runtime == ["docker.io/library/node:ppc64le"]


def test_platform_from_meta_arg():
    result = deps("ARG PLATFORM=linux/arm/v7\nFROM --platform=${PLATFORM} node\n")
    assert result.stages[0].platform == "linux/arm/v7"


def test_no_platform_flag_means_none():
    assert deps("FROM node\n").stages[0].platform is None


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("FROM --platform node", "missing a value on flag: platform"),
        ("FROM --platform=$NOPE node", "empty platform value"),
        ("FROM --chown=1 node", "unknown flag: chown"),
        ("FROM --platform=a --platform=b node", "duplicate flag"),
    ],
)
def test_bad_platform_flags(line, message):
    with pytest.raises(DockerfileError, match=message) as info:
        deps(f"ARG X=1\n{line}\n")
    assert info.value.line == 2


# --- syntax the parser handles --------------------------------------------------------------

def test_line_continuation_reports_first_line():
    result = deps("""\
        FROM \\
            node:20 \\
            AS build
        RUN a && \\
            b
        FROM \\
          build
    """)
    assert [(s.base, s.alias, s.line) for s in result.stages] == [
        ("docker.io/library/node:20", "build", 1),
        ("build", None, 6),
    ]


def test_escape_directive_backtick():
    result = deps("""\
        # escape=`
        ARG TAG=3.20
        FROM alpine:$TAG `
            AS base
        RUN dir c:\\
        FROM al`pine:$TAG
    """)
    assert [s.base for s in result.stages] == [ALPINE, ALPINE]
    assert result.stages[0].alias == "base"
    # With the backtick as escape character, a backslash is an ordinary (invalid) character.
    with pytest.raises(DockerfileError, match=r"al\\\\pine"):
        deps("# escape=`\nFROM al\\pine\n")


def test_directive_after_other_line_is_a_comment():
    # Directives only count at the very top; here the backslash stays the escape character.
    result = deps("""\
        FROM node AS a
        # escape=`
        FROM alpine:3.20 \\
          AS b
    """)
    assert [s.alias for s in result.stages] == ["a", "b"]


def test_lowercase_keywords_comments_and_blank_lines():
    result = deps("""\
        # syntax=docker/dockerfile:1
        # a comment

        arg tag=3.20
          # indented comment
        from alpine:${tag}   as   base
        run echo "FROM not-a-base"
    """)
    assert result.runtime == [ALPINE]
    assert result.stages[0].line == 6


def test_heredoc_does_not_hide_or_invent_stages():
    result = deps("""\
        FROM node AS build
        RUN <<EOF
        FROM ignored
        EOF
        FROM alpine:3.20
    """)
    assert result.all == [NODE, ALPINE]


def test_crlf_and_bom():
    result = parse_dependencies("\ufeffARG T=3.20\r\nFROM alpine:$T\r\n")
    assert result.runtime == [ALPINE]


# --- errors -------------------------------------------------------------------------------------

@pytest.mark.parametrize(
    ("text", "line", "message"),
    [
        ("FROM\n", 1, "FROM requires an image"),
        ("ARG A=1\nFROM --platform=linux/amd64\n", 2, "FROM requires an image"),
        ("FROM node AS\n", 1, "one or three arguments"),
        ("FROM node AS a b\n", 1, "one or three arguments"),
        ("FROM node AS 1st\n", 1, "invalid name for build stage"),
        ("FROM node AS a/b\n", 1, "invalid name for build stage"),
        ("FROM node\nFROM $UNSET\n", 2, "should not be blank"),
        ('FROM ""\n', 1, "should not be blank"),
        ("FROM Node\n", 1, "must be lowercase"),
        ("FROM node:\n", 1, "invalid reference format"),
        ("FROM node@sha256:abc\n", 1, "invalid"),
        ("FROM https://example.com/x\n", 1, "invalid reference format"),
        ("\n\nRUN echo\nFROM node\n", 3, "no build stage"),
        ("FROM node\nFOO bar\n", 2, "unknown instruction: FOO"),
        ("ARG\nFROM node\n", 1, "ARG requires at least one argument"),
        ("ARG =x\nFROM node\n", 1, "ARG names can not be blank"),
    ],
)
def test_errors_name_the_line(text, line, message):
    with pytest.raises(DockerfileError, match=message) as info:
        parse_dependencies(text)
    assert info.value.line == line
    assert str(info.value).startswith(f"line {line}: ")


def test_invalid_reference_after_expansion_names_text_and_expression():
    with pytest.raises(DockerfileError) as info:
        parse_dependencies("ARG IMG=MyImage\n\nFROM ${IMG}:1 AS x\n")
    assert info.value.line == 3
    assert "'MyImage:1'" in str(info.value)
    assert "'${IMG}:1'" in str(info.value)
    assert isinstance(info.value, ValueError)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "no instructions"),
        ("# only a comment\n\n", "no instructions"),
        ("ARG A=1\n", "no FROM"),
        ("FROM node\nRUN <<EOF\necho\n", "heredoc"),
        ("# escape=x\nFROM node\n", "escape"),
    ],
)
def test_file_level_errors_have_no_line(text, message):
    with pytest.raises(DockerfileError, match=message) as info:
        parse_dependencies(text)
    assert info.value.line is None


# --- serialization --------------------------------------------------------------------------

def test_to_dict_shape():
    result = deps("""
        ARG V=3.20
        FROM --platform=$BUILDPLATFORM golang:1.22 AS build
        FROM build AS test
        FROM alpine:$V
    """)
    assert result.to_dict() == {
        "stages": [
            {"base": "docker.io/library/golang:1.22", "alias": "build", "platform": "linux/amd64"},
            {"base": "build", "alias": "test", "platform": None},
            {"base": ALPINE, "alias": None, "platform": None},
        ],
        "runtime": [ALPINE],
        "all": ["docker.io/library/golang:1.22", ALPINE],
    }


def test_a_base_too_long_to_index_is_refused_with_the_task_not_at_the_index():
    from shared.domain.tasks import TaskError, compute_dependencies

    # A valid reference whose escaped form (every `/` is three characters) overflows a table key.
    base = "localhost:5000/" + "a/" * 115 + "a:" + "t" * 128
    assert parse_dependencies(f"FROM {base}\n", {}).all == [base]
    with pytest.raises(TaskError, match="too long to track"):
        compute_dependencies(f"FROM {base}\n", {})


# Text that must never come back from the service: the Dockerfile was read on its machine, and a
# file that is no Dockerfile (a key, a password) must not be quoted through its errors.
FILE_TEXT = "Zq9Secretx"


@pytest.mark.parametrize(("text", "line"), [
    (f"{FILE_TEXT}\n", 1),  # an instruction that has no instruction's shape
    (f"FROM a\n{FILE_TEXT}-x b\n", 2),
    (f"FROM ${{{FILE_TEXT}:?{FILE_TEXT}}}\n", 1),
    (f"FROM a\nFROM {FILE_TEXT}:t:t::\n", 2),
    (f"FROM a AS {FILE_TEXT}!\n", 1),
    (f"FROM a b {FILE_TEXT} c\n", 1),
    (f"FROM --{FILE_TEXT}=1 a\n", 1),
    (f"ARG ={FILE_TEXT}\nFROM a\n", 1),
    (f"FROM --platform=${{{FILE_TEXT}}} a\n", 1),
    (f"FROM ${{{FILE_TEXT}}}\n", 1),
    ("FROM localhost:5000/" + "a/" * 115 + f"{FILE_TEXT}:" + "t" * 128 + "\n", 1),
])
def test_errors_the_service_shows_quote_nothing_of_the_file_but_name_the_line(text, line):
    from shared.domain.tasks import TaskError, compute_dependencies

    with pytest.raises(TaskError) as info:
        compute_dependencies(text, {})
    assert FILE_TEXT.lower() not in str(info.value).lower()
    assert f"line {line}:" in str(info.value)


def test_an_unknown_instruction_of_instruction_shape_is_named():
    from shared.domain.tasks import TaskError, compute_dependencies

    with pytest.raises(TaskError, match="line 2: unknown instruction: FORM"):
        compute_dependencies("FROM a\nFORM b\n", {})


def test_secret_arg_warnings_name_each_secret_an_arg_declares_and_its_line():
    from shared.domain.dockerfile import secret_arg_warnings

    text = "ARG V=1\nFROM base:$V\narg KEY=default PLAIN\nARG KEY\nRUN --mount=type=secret,id=TOKEN true\n"
    warnings = secret_arg_warnings(text, ["KEY", "TOKEN"], as_build_args=False)
    assert len(warnings) == 1
    assert warnings[0].startswith("secret arg KEY is declared as `ARG KEY` (Dockerfile line 3)")
    assert "RUN --mount=type=secret,id=KEY" in warnings[0]
    (acr,) = secret_arg_warnings(text, ["KEY"], as_build_args=True)
    assert "history" in acr and "ACR" in acr
    assert secret_arg_warnings(text, ["TOKEN", "V2"], as_build_args=False) == []
