"""`basetrigger base impact|list|rebuild|changes|latency|quarantine|…`: questions about base images.

`base impact IMAGE`: every task that would rebuild, transitively, if IMAGE changed.
`base changes IMAGE [--from DIGEST] [--to DIGEST]`: what changed between two digests of a base.
`base latency [--since 7d] [--slo 12h]`: how long base pushes took to reach every dependent.
"""

from __future__ import annotations

import argparse
from typing import Any

from cli.client import EXIT_OK, ApiError, Client, connection_options, handles_errors
from cli.graph_output import impact_dot, impact_mermaid, impact_tree
from cli.output import to_json
from shared.domain.image_ref import ImageRef, InvalidReference

EPILOG = """\
IMAGE is read as a Dockerfile's FROM reads it: `node:20` is docker.io/library/node:20, a name
without a tag means :latest, and an image of your registry needs its host
(localhost:5000/baseimages/node:9-alpine).

examples:
  basetrigger base impact localhost:5000/baseimages/node:9-alpine
  basetrigger base impact localhost:5000/baseimages/node:9-alpine --output dot | dot -Tsvg > impact.svg
  basetrigger base impact node:20 --output mermaid
"""

CHANGES_EPILOG = """\
examples:
  basetrigger base changes localhost:5000/baseimages/node:9-alpine
  basetrigger base changes node:20 --from sha256:1f2e… --to sha256:9a8b… --output json
"""

LATENCY_EPILOG = """\
examples:
  basetrigger base latency
  basetrigger base latency --since 30d --slo 12h
  basetrigger base latency --since 24h --output json
"""

FORMATS = {"tree": impact_tree, "json": to_json, "dot": impact_dot, "mermaid": impact_mermaid}


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    group = subparsers.add_parser(
        "base", help="base images: what depends on them",
        description="Questions about base images.")
    commands = group.add_subparsers(title="commands", metavar="<command>", required=True)
    impact = commands.add_parser(
        "impact", parents=[connection_options()], epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        help="every task that would rebuild, level by level, if IMAGE changed",
        description="Every task that would rebuild, transitively, if IMAGE changed: the tasks built "
        "FROM it, then those built FROM their output images, and so on, by level (a task's level is "
        "the wave it would rebuild in). Build-stage dependencies and tasks whose trigger is off are "
        "marked; they would not rebuild, so nothing below them is followed.")
    impact.add_argument("image", metavar="IMAGE",
                        help="the base image, e.g. localhost:5000/baseimages/node:9-alpine")
    impact.add_argument("--output", "-o", choices=tuple(FORMATS), default="tree",
                        help="tree (default), json, dot (Graphviz) or mermaid")
    impact.set_defaults(func=base_impact)

    listing = commands.add_parser(
        "list", parents=[connection_options()], help="every base in use: how it is watched, what was seen",
        description="Every distinct base image the tasks are built FROM: its digest as last seen, whether "
        "its registry's events or the poller watch it, when it was last checked, the tasks that use it "
        "and the last error (a refused password, an unreachable registry).")
    listing.add_argument("--output", "-o", choices=("table", "json"), default="table")
    listing.set_defaults(func=base_list)

    rebuild = commands.add_parser(
        "rebuild", parents=[connection_options()],
        help="rebuild everything built FROM IMAGE, as a change would",
        description="Start a wave of every task built FROM IMAGE, transitively, level by level, whatever "
        "digests they last built on (Renovate's \"rebuild all that depend on X\"). `basetrigger wave show` "
        "follows it.")
    rebuild.add_argument("image", metavar="IMAGE[@DIGEST]", help="the base image, e.g. node:20 or "
                         "localhost:5000/baseimages/node:9-alpine@sha256:…")
    rebuild.add_argument("--output", "-o", choices=("table", "json"), default="table")
    rebuild.set_defaults(func=base_rebuild)

    changes = commands.add_parser(
        "changes", parents=[connection_options()], epilog=CHANGES_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        help="what changed between two digests of a base: config, layers, OS packages",
        description="Compare two digests of a base, platform by platform: its config (env, entrypoint, "
        "cmd, user, workdir, labels, exposed ports, platform), its layers (added, removed, kept, "
        "re-compressed), its OS packages (dpkg, apk) and /etc/os-release, and classify the change: "
        "identical content, metadata only, packages, os release changed.")
    changes.add_argument("image", metavar="IMAGE", help="the base image by its tag, e.g. node:20")
    changes.add_argument("--from", dest="old", metavar="DIGEST",
                         help="the old digest (default: what the dependents last built on, else the "
                         "previous digest pushed)")
    changes.add_argument("--to", dest="new", metavar="DIGEST",
                         help="the new digest (default: what the tag points at now)")
    changes.add_argument("--output", "-o", choices=("text", "json"), default="text")
    changes.set_defaults(func=base_changes)

    quarantine = commands.add_parser(
        "quarantine", parents=[connection_options()],
        help="block every wave and manual run that would build on IMAGE@DIGEST",
        description="Quarantine a base digest: pushes of it (under any tag), `base rebuild` on it and "
        "manual runs of tasks whose base points at it build nothing; their decision says "
        "`quarantined: REASON`, for the tasks there are now and those added later. A wave's circuit "
        "breaker quarantines the digest its wave was on by itself. `base release` lifts it.")
    quarantine.add_argument("target", metavar="IMAGE@DIGEST", help="e.g. node:20@sha256:…")
    quarantine.add_argument("--reason", required=True, help="why (what blocked runs will say)")
    quarantine.add_argument("--rollback", action="store_true",
                            help="also move the tags rebuilt on the digest back to the images they had "
                            "before, each move a run with trigger Rollback (a tag without an earlier "
                            "image, or pushed again since, is left as it is; the decision says why)")
    quarantine.add_argument("--output", "-o", choices=("table", "json"), default="table")
    quarantine.set_defaults(func=base_quarantine)

    release = commands.add_parser(
        "release", parents=[connection_options()], help="lift the quarantine of IMAGE@DIGEST",
        description="Lift a quarantine: the next push of the base is decided as usual (a push that "
        "was blocked claimed nothing, so nothing is left to undo).")
    release.add_argument("target", metavar="IMAGE@DIGEST")
    release.add_argument("--output", "-o", choices=("table", "json"), default="table")
    release.set_defaults(func=base_release)

    latency = commands.add_parser(
        "latency", parents=[connection_options()], epilog=LATENCY_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        help="patch latency: base push to the last dependent pushed (p50, p95, worst)",
        description="How long each base push took to reach every image built on it: from the push "
        "(the registry's event time, or when a poll first saw the digest) to the last dependent "
        "pushed, as p50, p95 and the worst case, per base and overall; then the dependents that "
        "missed the SLO (pushed late, ended without pushing, still building past it) or are still "
        "on an old digest.")
    latency.add_argument("--since", default="7d", help="how far back, e.g. 24h, 7d (default 7d, at most 90d)")
    latency.add_argument("--slo", default="12h", help="the objective, e.g. 12h (default 12h)")
    latency.add_argument("--output", "-o", choices=("table", "json"), default="table")
    latency.set_defaults(func=base_latency)

    quarantined = commands.add_parser(
        "quarantined", parents=[connection_options()], help="every quarantined base digest",
        description="Every quarantined base digest, newest first: the image it was named as, why, "
        "who (a person, or a wave's circuit breaker) and since when.")
    quarantined.add_argument("--output", "-o", choices=("table", "json"), default="table")
    quarantined.set_defaults(func=base_quarantined)

    settling = commands.add_parser(
        "settling", parents=[connection_options()], help="bases within their settle window",
        description="Bases whose registry has a settle window (BASETRIGGER_SETTLE_SECONDS) and that "
        "moved within it: the newest digest, and when its one wave starts if it stays still. "
        "--now dispatches those that have been still for their window now (housekeeping does it "
        "every minute).")
    settling.add_argument("--now", action="store_true",
                          help="dispatch the bases that have been still for their window now")
    settling.add_argument("--output", "-o", choices=("table", "json"), default="table")
    settling.set_defaults(func=base_settling)


BASE_COLUMNS = ("BASE", "DIGEST", "WATCHED BY", "LAST CHECKED", "TASKS", "LAST ERROR")


def bases_table(answer: dict[str, Any]) -> str:
    from cli.decision_cmd import short_digest
    from cli.output import format_time, table

    def watched(b: dict[str, Any]) -> str:
        watch: str = b["watch"]
        return {"events": "events", "poll": "polling", "both": "events+polling"}.get(watch, watch)

    return table(BASE_COLUMNS, ([b["base"], short_digest(b.get("digest")), watched(b),
                                 format_time(b.get("last_checked")) if b.get("polled") else "-",
                                 ", ".join(b.get("tasks") or []), b.get("last_error") or ""]
                                for b in answer.get("bases", [])))


@handles_errors
def base_list(args: argparse.Namespace) -> int:
    answer = Client.from_args(args).request("GET", "bases").json()
    print(to_json(answer) if args.output == "json" else bases_table(answer))
    return EXIT_OK


@handles_errors
def base_impact(args: argparse.Namespace) -> int:
    try:
        image = str(ImageRef.parse(args.image))
    except InvalidReference as exc:
        raise ApiError(str(exc)) from None
    print(FORMATS[args.output](Client.from_args(args).base_impact(image)))
    return EXIT_OK


@handles_errors
def base_rebuild(args: argparse.Namespace) -> int:
    try:
        ImageRef.parse(args.image)
    except InvalidReference as exc:
        raise ApiError(str(exc)) from None
    decision = Client.from_args(args).rebuild_base(args.image)
    if args.output == "json":
        print(to_json(decision))
    else:
        print(f"{decision['outcome']}: {decision['reason']}")
        if decision.get("runs"):
            print("runs: " + ", ".join(decision["runs"]))
    return EXIT_OK


def changes_text(change: dict[str, Any]) -> str:
    from cli.decision_cmd import short_digest

    lines = [f"{change['image']}: {short_digest(change['from'])} -> {short_digest(change['to'])}: "
             f"{change['classification']}"]
    for p in change.get("platforms", []):
        lines.append(f"\n{p['platform']}: {p['classification']}"
                     f" ({short_digest(p.get('from'))} -> {short_digest(p.get('to'))})")
        release = p.get("os_release") or {}
        if release.get("from") != release.get("to"):
            lines.append(f"  os release: {release.get('from') or '-'} -> {release.get('to') or '-'}")
        elif release.get("to"):
            lines.append(f"  os release: {release['to']}")
        for name, values in (p.get("config") or {}).items():
            lines.append(f"  config {name}: {values['from']} -> {values['to']}")
        layers = p.get("layers") or {}
        lines.append("  layers: " + ", ".join(f"{len(layers.get(k) or [])} {k}"
                                               for k in ("kept", "recompressed", "added", "removed")))
        packages = p.get("packages") or {}
        for u in packages.get("upgraded") or []:
            lines.append(f"  upgraded {u['package']} {u['from']} -> {u['to']}")
        for name, version in (packages.get("added") or {}).items():
            lines.append(f"  added    {name} {version}")
        for name, version in (packages.get("removed") or {}).items():
            lines.append(f"  removed  {name} {version}")
        lines.extend(f"  note: {note}" for note in p.get("notes") or [])
    return "\n".join(lines)


@handles_errors
def base_changes(args: argparse.Namespace) -> int:
    try:
        ref = ImageRef.parse(args.image)
    except InvalidReference as exc:
        raise ApiError(str(exc)) from None
    change = Client.from_args(args).base_changes(str(ref), args.old, args.new)
    print(to_json(change) if args.output == "json" else changes_text(change))
    return EXIT_OK


QUARANTINE_COLUMNS = ("DIGEST", "IMAGE", "SINCE", "BY", "REASON")


def quarantine_table(entries: list[dict[str, Any]]) -> str:
    from cli.decision_cmd import short_digest
    from cli.output import format_time, table

    return table(QUARANTINE_COLUMNS, ([short_digest(e["digest"]), e["image"], format_time(e.get("since")),
                                       e.get("by") or "", e.get("reason") or ""] for e in entries))


def _target(text: str) -> str:
    try:
        ref = ImageRef.parse(text)
    except InvalidReference as exc:
        raise ApiError(str(exc)) from None
    if not ref.digest:
        raise ApiError(f"{text!r} names no digest: use IMAGE@DIGEST (`basetrigger base list` shows digests)")
    return text


@handles_errors
def base_quarantine(args: argparse.Namespace) -> int:
    entry = Client.from_args(args).quarantine(_target(args.target), args.reason, args.rollback)
    if args.output == "json":
        print(to_json(entry))
        return EXIT_OK
    print(f"quarantined {entry['image']}@{entry['digest']}: {entry['reason']}")
    rollback = entry.get("rollback")
    if rollback:
        decision = rollback["decision"]
        print(decision["reason"])
        for task in decision["tasks"]:
            print(f"  {task['task']}: {task['outcome']}: {task['reason']}")
    return EXIT_OK


@handles_errors
def base_release(args: argparse.Namespace) -> int:
    entry = Client.from_args(args).release(_target(args.target))
    print(to_json(entry) if args.output == "json" else
          f"released {entry['image']}@{entry['digest']} (was quarantined: {entry['reason']})")
    return EXIT_OK


@handles_errors
def base_settling(args: argparse.Namespace) -> int:
    from cli.decision_cmd import short_digest
    from cli.output import format_time, table

    client = Client.from_args(args)
    if args.now:
        decisions = client.settle_now()
        print(to_json(decisions) if args.output == "json" else
              "\n".join(f"{d['image']}@{short_digest(d.get('digest'))}: {d['outcome']}: {d['reason']}"
                        for d in decisions) or "no base has been still for its window yet")
        return EXIT_OK
    bases = client.settling()
    print(to_json(bases) if args.output == "json" else
          table(("BASE", "DIGEST", "MOVED", "STARTS", "DELIVERIES"),
                ([b["image"], short_digest(b["digest"]), format_time(b["moved_at"]),
                  format_time(b["starts_at"]), str(b["deliveries"])] for b in bases)))
    return EXIT_OK


@handles_errors
def base_quarantined(args: argparse.Namespace) -> int:
    entries = Client.from_args(args).quarantined()
    print(to_json(entries) if args.output == "json" else quarantine_table(entries))
    return EXIT_OK


LATENCY_COLUMNS = ("BASE", "EVENTS", "CLOSED", "P50", "P95", "WORST", "MISSED SLO")
MISSED_COLUMNS = ("TASK", "BASE", "WHY", "EXPOSED", "WAVE", "RUN", "DETAIL")


def latency_text(report: dict[str, Any]) -> str:
    from cli.output import format_duration, table

    def row(name: str, f: dict[str, Any]) -> list[Any]:
        return [name, f["events"], f["closed"], format_duration(f["p50_seconds"]) or "-",
                format_duration(f["p95_seconds"]) or "-", format_duration(f["worst_seconds"]) or "-",
                f["missed_slo"]]

    lines = [f"patch latency over the last {format_duration(report['since_seconds'])} "
             f"(SLO {format_duration(report['slo_seconds'])}), base push to the last dependent pushed:",
             table(LATENCY_COLUMNS, [*(row(b["base"], b) for b in report["bases"]),
                                     row("overall", report["overall"])])]
    missed = report.get("missed") or []
    if missed:
        lines += ["", "missed the SLO or still on an old digest:",
                  table(MISSED_COLUMNS, ([m["task"], m["base"], m["why"],
                                          format_duration(m.get("exposure_seconds")) or "-",
                                          m.get("wave_id") or "", m.get("run_id") or "",
                                          m.get("detail") or ""]
                                         for m in missed))]
    return "\n".join(lines)


@handles_errors
def base_latency(args: argparse.Namespace) -> int:
    report = Client.from_args(args).latency(args.since, args.slo)
    print(to_json(report) if args.output == "json" else latency_text(report))
    return EXIT_OK
