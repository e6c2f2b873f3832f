"""The update policy's rules (shared.domain.rebase) and how the worker follows them, on fakes."""

import pytest

from shared.domain.builds import BuildResult
from shared.domain.rebase import (
    ADDS_ONLY,
    BASE_NAME,
    EVENT_DIGEST,
    EVENT_IMAGE,
    RUN_ID,
    TRIGGER,
    NotOnBase,
    build_annotations,
    config_verdict,
    final_stage_verdict,
    rebase_image,
)
from shared.domain.runs import Run
from shared.domain.tasks import Dependency, Task, TaskError, check_command
from shared.domain.vocabulary import BuilderKind, RunStatus, Trigger, UpdatePolicy, utc_now
from tests.fakes import FakeApp

BASE = "localhost:5000/team/node:20"
OTHER = "localhost:5000/team/golang:1"


@pytest.mark.parametrize(("dockerfile", "verdict"), [
    (f"FROM {BASE}\nCOPY app /app\nENV A=1\nLABEL x=y\nEXPOSE 80\nUSER 1000\nWORKDIR /app\n"
     "ENTRYPOINT [\"/app\"]\nCMD [\"--x\"]\n", None),
    (f"FROM {BASE}\nADD app.tar /app/\n", None),
    (f"FROM {BASE}\nCOPY app /app\nRUN chmod +x /app\n", "RUN in final stage"),
    (f"FROM {BASE}\nADD https://example.com/x /x\n", "ADD of a remote file in final stage"),
    (f"FROM {BASE}\nCOPY --chown=node:node app /app\n", "COPY --chown by name reads the base's /etc/passwd"),
    (f"FROM {BASE}\nCOPY --chown=1000:1000 app /app\n", None),
    # A build stage on another image may RUN: only what it copies reaches the final stage.
    (f"FROM {OTHER} AS build\nRUN make\nFROM {BASE}\nCOPY --from=build /out /app\n", None),
    (f"FROM {BASE} AS build\nRUN make\nFROM {BASE}\nCOPY --from=build /out /app\n",
     "COPY --from=build reads the changed base"),
    (f"FROM {BASE} AS build\nFROM build\nCOPY app /app\n", "the final stage does not start FROM an image"),
    (f"FROM {OTHER}\nCOPY app /app\n", f"the changed base {BASE} is not the final stage's base"),
    ("FROM scratch\nCOPY app /app\n", "the final stage does not start FROM an image"),
    (f"FROM {BASE}\nVOLUME /data\n", "VOLUME in final stage"),
])
def test_auto_rebases_only_a_final_stage_that_adds_files_and_metadata(dockerfile, verdict):
    assert final_stage_verdict(dockerfile, {}, BASE) == verdict


def config(**overrides):
    document = {"architecture": "amd64", "os": "linux", "created": "2026-01-01T00:00:00Z",
                "config": {"Env": ["PATH=/bin", "NODE_VERSION=20.1"], "Cmd": ["node"], "User": "",
                           "Labels": {"a": "b"}},
                "rootfs": {"type": "layers", "diff_ids": ["sha256:d1"]},
                "history": [{"created_by": "base"}]}
    document["config"].update(overrides.pop("config", {}))
    document.update(overrides)
    return document


def test_a_base_whose_config_changed_only_in_its_layers_is_rebased_and_any_other_change_rebuilds():
    layers_only = config(rootfs={"type": "layers", "diff_ids": ["sha256:d2", "sha256:d3"]},
                         history=[{"created_by": "patched"}], created="2026-02-02T00:00:00Z")
    assert config_verdict(config(), layers_only) is None
    assert config_verdict(config(), config(config={"Env": ["PATH=/bin", "NODE_VERSION=20.2"]})) \
        == "base ENV changed"
    assert config_verdict(config(), config(config={"Cmd": ["sh"]})) == "base CMD changed"
    assert config_verdict(config(), config(config={"User": "node"})) == "base USER changed"
    assert config_verdict(config(), config(config={"Labels": {}})) == "base LABEL changed"
    assert config_verdict(config(), config(config={"ExposedPorts": {"80/tcp": {}}})) == "base EXPOSE changed"
    assert config_verdict(config(), config(architecture="arm64")) == "base platform changed"


def manifest(*layers):
    return {"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": "sha256:c",
                       "size": 1},
            "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": d, "size": 1}
                       for d in layers],
            "annotations": {"keep": "me"}}


def test_a_rebase_swaps_the_base_layers_diff_ids_and_history_and_keeps_the_rest():
    image_config = config(config={"Env": ["PATH=/bin", "APP=1"], "Cmd": ["/app"]},
                          rootfs={"type": "layers", "diff_ids": ["sha256:d1", "sha256:own"]},
                          history=[{"created_by": "base"}, {"created_by": "COPY app /app"}])
    old = (manifest("sha256:l1"), config())
    new = (manifest("sha256:n1", "sha256:n2"),
           config(rootfs={"type": "layers", "diff_ids": ["sha256:e1", "sha256:e2"]},
                  history=[{"created_by": "patched 1"}, {"created_by": "patched 2"}]))
    rebased = rebase_image(manifest("sha256:l1", "sha256:own-layer"), image_config, old, new,
                           {BASE_NAME: BASE})
    assert [x["digest"] for x in rebased.manifest["layers"]] == ["sha256:n1", "sha256:n2", "sha256:own-layer"]
    assert rebased.config["rootfs"]["diff_ids"] == ["sha256:e1", "sha256:e2", "sha256:own"]
    assert [h["created_by"] for h in rebased.config["history"]] == ["patched 1", "patched 2", "COPY app /app"]
    assert rebased.config["config"] == image_config["config"]  # the image's own settings stay
    assert rebased.manifest["annotations"] == {"keep": "me", BASE_NAME: BASE}


def test_an_image_not_on_the_old_base_is_refused():
    image_config = config(rootfs={"type": "layers", "diff_ids": ["sha256:x", "sha256:own"]},
                          history=[{}, {}])
    with pytest.raises(NotOnBase, match="bottom layers are not the old base's"):
        rebase_image(manifest("sha256:foreign", "sha256:own"), image_config,
                     (manifest("sha256:l1"), config()), (manifest("sha256:n1"), config()), {})


def test_annotations_name_the_run_its_trigger_and_the_base_event():
    assert build_annotations("da7", "Image Update", f"{BASE}@sha256:{'1' * 64}") == {
        RUN_ID: "da7", TRIGGER: "Image Update", EVENT_IMAGE: BASE, EVENT_DIGEST: f"sha256:{'1' * 64}"}
    assert build_annotations("da8", "Manual", None) == {RUN_ID: "da8", TRIGGER: "Manual"}


def test_the_update_policy_defaults_to_rebuild_and_refuses_other_words():
    task = Task(name="t", images=["t:1"], context="/ctx")
    task.validate()
    assert task.update_policy == UpdatePolicy.REBUILD and task.public_dict()["update_policy"] == "rebuild"
    bad = Task(name="t", images=["t:1"], context="/ctx", update_policy="sometimes")  # type: ignore[arg-type]
    with pytest.raises(TaskError, match="update policy must be rebuild or rebase or auto"):
        bad.validate()


def test_runs_stored_before_base_layers_read_them_as_empty():
    record = Run("da1", RunStatus.SUCCEEDED, Trigger.MANUAL).to_record()
    for key in ("base_layers", "builder", "update_decision", "final_base", "final_stage"):
        del record[key]
    old = Run.from_record(record)
    assert (old.base_layers, old.builder, old.update_decision, old.final_stage) == ({}, None, None, None)


# ---- the worker ------------------------------------------------------------------------------
OLD, NEW = "sha256:" + "0" * 64, "sha256:" + "1" * 64
LAST = "sha256:" + "9" * 64


@pytest.fixture
def app(tmp_path):
    app = FakeApp(tmp_path, "localhost:5000")
    app.registry.layers[f"localhost:5000/team/node@{OLD}"] = ["sha256:o1"]
    app.registry.layers[f"localhost:5000/team/node@{NEW}"] = ["sha256:n1"]
    return app


def image_update_run(app, policy: UpdatePolicy, dockerfile: str, with_last_image: bool = True) -> Run:
    """The task built once by hand on OLD (when `with_last_image`), then the run of a push of NEW."""
    app.sources.dockerfile = dockerfile
    task = Task(name="app", images=["localhost:5000/app:{{.Run.ID}}"], context="/ctx",
                update_policy=policy, dependencies=[Dependency(BASE, OLD, True)])
    app.task_store.create(task)
    if with_last_image:
        app.builder.result = BuildResult(RunStatus.SUCCEEDED, output_digest=LAST, base_digests={BASE: OLD})
        first = app.worker.execute(app.scheduler.run_task("app").run_id)
        assert first.base_layers == {BASE: ["sha256:o1"]}  # read from the registry for the record
    app.builder.result = BuildResult(RunStatus.SUCCEEDED, output_digest="sha256:" + "a" * 64,
                                     base_digests={BASE: NEW})
    app.builder.requests.clear()
    (run_id,) = app.runs.allocate(1)
    app.runs.create_many([Run(run_id, RunStatus.QUEUED, Trigger.IMAGE_UPDATE, task="app",
                              cause=f"{BASE}@{NEW}", output_images=[f"localhost:5000/app:{run_id}"])])
    return app.worker.execute(run_id)


COPY_ONLY = f"FROM {BASE}\nCOPY app /app\n"


def test_auto_rebases_a_copy_only_image_onto_the_pushed_base_without_reading_the_sources(app):
    run = image_update_run(app, UpdatePolicy.AUTO, COPY_ONLY)
    assert run.status == RunStatus.SUCCEEDED and run.builder == BuilderKind.REBASE
    assert run.update_decision == ("rebased: the final stage only adds files and metadata, and the base "
                                   "changed only its layers")
    assert app.builder.requests == []
    assert len(app.sources.checkouts) == 1  # the first build's only: a rebase reads no sources
    plan = app.rebaser.plans[0]
    assert (plan.image, plan.old_base, plan.new_base, plan.prove_config) == (
        f"localhost:5000/app@{LAST}", f"localhost:5000/team/node@{OLD}", f"localhost:5000/team/node@{NEW}",
        True)
    assert (run.final_base, run.final_stage) == (BASE, ADDS_ONLY)  # kept for the next rebase
    assert "update policy auto: rebased:" in app.logs.read(run.run_id).decode()
    assert app.task_store.get("app").dependencies[0].digest == NEW


def test_auto_rebuilds_a_final_stage_with_run_and_says_why(app):
    run = image_update_run(app, UpdatePolicy.AUTO, f"FROM {BASE}\nRUN echo hi > /x\n")
    assert run.status == RunStatus.SUCCEEDED and run.builder == BuilderKind.BUILDAH
    assert run.update_decision == "rebuilt: RUN in final stage"
    assert app.rebaser.plans == [] and len(app.builder.requests) == 1
    assert run.base_layers == {BASE: ["sha256:n1"]}


def test_a_refused_rebase_is_rebuilt_in_the_same_run(app):
    app.rebaser.refusal = "the image's bottom layers are not the old base's"
    run = image_update_run(app, UpdatePolicy.REBASE, f"FROM {BASE}\nRUN echo hi > /x\n")
    assert run.status == RunStatus.SUCCEEDED and run.builder == BuilderKind.BUILDAH
    assert run.update_decision == "rebuilt: the image's bottom layers are not the old base's"
    assert len(app.rebaser.plans) == 1 and not app.rebaser.plans[0].prove_config


def test_rebuild_policy_and_a_task_without_an_earlier_image_build(app):
    run = image_update_run(app, UpdatePolicy.AUTO, COPY_ONLY, with_last_image=False)
    assert (run.builder, run.update_decision) == (BuilderKind.BUILDAH,
                                                  "rebuilt: no earlier image of the task to rebase")
    assert (run.final_base, run.final_stage) == (BASE, ADDS_ONLY)


def test_a_task_changed_since_its_last_image_is_rebuilt(app):
    app.sources.dockerfile = COPY_ONLY
    task = Task(name="app", images=["localhost:5000/app:{{.Run.ID}}"], context="/ctx",
                update_policy=UpdatePolicy.AUTO, dependencies=[Dependency(BASE, OLD, True)])
    app.task_store.create(task)
    app.builder.result = BuildResult(RunStatus.SUCCEEDED, output_digest=LAST, base_digests={BASE: OLD})
    app.worker.execute(app.scheduler.run_task("app").run_id)
    changed = app.task_store.get("app")  # as `task update` leaves it: another build arg, a new time
    changed.build_args, changed.updated_at = {"V": "2"}, utc_now()
    app.task_store.save(changed)
    (run_id,) = app.runs.allocate(1)
    app.runs.create_many([Run(run_id, RunStatus.QUEUED, Trigger.IMAGE_UPDATE, task="app",
                              cause=f"{BASE}@{NEW}", output_images=[f"localhost:5000/app:{run_id}"])])
    run = app.worker.execute(run_id)
    assert (run.builder, run.update_decision) == (BuilderKind.BUILDAH,
                                                  "rebuilt: the task changed after its last image was built")


def test_the_default_policy_rebuilds_and_says_so(app):
    run = image_update_run(app, UpdatePolicy.REBUILD, COPY_ONLY)
    assert (run.builder, run.update_decision) == (BuilderKind.BUILDAH, "rebuilt: update policy rebuild")


def test_builds_carry_the_run_annotations_and_their_final_base(app):
    image_update_run(app, UpdatePolicy.REBUILD, COPY_ONLY)
    request = app.builder.requests[0]
    assert request.final_base == BASE
    assert request.annotations[EVENT_IMAGE] == BASE and request.annotations[EVENT_DIGEST] == NEW
    assert request.annotations[TRIGGER] == "Image Update"


def test_the_cli_sends_the_update_policy_on_create_and_update_and_refuses_other_words(capsys, tmp_path):
    from cli.main import build_parser
    from cli.task_cmd import _spec

    parser = build_parser()
    created = parser.parse_args(["task", "create", "-n", "t", "-t", "t:1", "-c", str(tmp_path),
                                 "--update-policy", "auto"])
    assert _spec(created)["update_policy"] == "auto"
    updated = parser.parse_args(["task", "update", "-n", "t", "--update-policy", "rebase"])
    assert _spec(updated) == {"update_policy": "rebase"}
    checked = parser.parse_args(["task", "update", "-n", "t", "--rebase-check", "node --version"])
    assert _spec(checked) == {"rebase_check": "node --version"}
    cleared = parser.parse_args(["task", "update", "-n", "t", "--rebase-check", ""])
    assert _spec(cleared) == {"rebase_check": None}
    assert "update_policy" not in _spec(parser.parse_args(["task", "update", "-n", "t"]))
    with pytest.raises(SystemExit):
        parser.parse_args(["task", "update", "-n", "t", "--update-policy", "sometimes"])
    assert "sometimes" in capsys.readouterr().err


def test_a_rebase_check_is_words_split_as_a_shell_would_and_refused_when_it_cannot_be():
    task = Task(name="t", images=["t:1"], context="/ctx", rebase_check="node -e 'process.exit(0)'")
    task.validate()
    assert check_command(task.rebase_check) == ["node", "-e", "process.exit(0)"]
    assert task.public_dict()["rebase_check"] == "node -e 'process.exit(0)'"
    cleared = Task(name="t", images=["t:1"], context="/ctx", rebase_check="")
    cleared.validate()
    assert cleared.rebase_check is None
    for bad, message in (("node 'unterminated", "cannot be split into words"), ("   ", "names no command"),
                         ("a\nb", "printable text")):
        with pytest.raises(TaskError, match=message):
            Task(name="t", images=["t:1"], context="/ctx", rebase_check=bad).validate()


def test_the_worker_hands_the_rebase_check_to_the_rebase(app):
    app.sources.dockerfile = COPY_ONLY
    task = Task(name="app", images=["localhost:5000/app:{{.Run.ID}}"], context="/ctx",
                update_policy=UpdatePolicy.REBASE, rebase_check="node --version",
                dependencies=[Dependency(BASE, OLD, True)])
    app.task_store.create(task)
    app.builder.result = BuildResult(RunStatus.SUCCEEDED, output_digest=LAST, base_digests={BASE: OLD})
    app.worker.execute(app.scheduler.run_task("app").run_id)
    (run_id,) = app.runs.allocate(1)
    app.runs.create_many([Run(run_id, RunStatus.QUEUED, Trigger.IMAGE_UPDATE, task="app",
                              cause=f"{BASE}@{NEW}", output_images=[f"localhost:5000/app:{run_id}"])])
    assert app.worker.execute(run_id).builder == BuilderKind.REBASE
    assert app.rebaser.plans[0].check == ("node", "--version")
