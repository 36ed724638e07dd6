"""Publishing a build into the cache beside concurrent builds of the same key (graphc.backends.llvm.cache.publish):
an entry another process finished (and may be loading from) is never removed; one a dead build left unfinished
is replaced."""

from __future__ import annotations

from pathlib import Path

from graphc.backends.llvm import cache


def _finished(entry: Path) -> bool:
    return (entry / "done").exists()


def _build(text: str):
    def build(tmp: Path) -> None:
        (tmp / "lib.so").write_text(text)
        (tmp / "done").write_text("")
    return build


def test_a_finished_entry_of_a_concurrent_build_stays(tmp_path):
    entry = tmp_path / "native" / "lib" / "key"
    cache.publish(entry, _build("first"), complete=_finished)
    handle = (entry / "lib.so").open()  # a process loading from the first build's entry
    cache.publish(entry, _build("second"), complete=_finished)
    assert (entry / "lib.so").read_text() == "first" and handle.read() == "first"
    handle.close()
    assert [p.name for p in entry.parent.iterdir()] == ["key"]  # the second build's directory is gone


def test_an_unfinished_entry_is_replaced(tmp_path):
    entry = tmp_path / "native" / "lib" / "key"
    entry.mkdir(parents=True)
    (entry / "lib.so").write_text("half")  # a build that died before writing "done"
    cache.publish(entry, _build("whole"), complete=_finished)
    assert (entry / "lib.so").read_text() == "whole" and _finished(entry)
    assert [p.name for p in entry.parent.iterdir()] == ["key"]
