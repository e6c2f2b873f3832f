"""Who owns a build's leftovers, and when that owner is provably gone (real /proc, no fakes)."""

import subprocess
import sys

from shared.adapters.builders.buildah import _without_marker
from shared.adapters.builders.ownership import Owner, new_marker, owner_of


def test_this_process_is_alive_and_its_markers_name_it():
    me = Owner.this_process()
    assert me.is_alive()
    marker = new_marker(me)
    assert owner_of(marker) == me and new_marker(me) != marker


def test_an_exited_process_a_reused_pid_and_another_boot_are_dead():
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    me = Owner.this_process()
    assert not Owner(me.boot, child.pid, me.start).is_alive()
    assert not Owner(me.boot, me.pid, me.start + 1).is_alive()  # the pid, but a later process
    assert not Owner("0" * 32, me.pid, me.start).is_alive()


def test_only_our_markers_name_an_owner():
    for other in ("", "h1exp-test", "abc.1.2.3", "0" * 32 + ".1.2", "0" * 32 + ".1.2.zz" + "0" * 10):
        assert owner_of(other) is None


def test_the_marker_is_left_out_of_buildahs_note_on_unused_build_args():
    note = "[Warning] one or more build args were not consumed: [{}]\n"
    assert _without_marker(note.format("BASETRIGGER_BUILD")) is None
    assert _without_marker(note.format("PLAIN BASETRIGGER_BUILD")) == note.format("PLAIN")
    assert _without_marker("STEP 1/2: FROM x\n") == "STEP 1/2: FROM x\n"
