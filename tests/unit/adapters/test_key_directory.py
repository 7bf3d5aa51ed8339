"""The key directory: one file per key, created atomically, one winner per generation across processes."""

from __future__ import annotations

import json
import multiprocessing
import stat
from pathlib import Path

import pytest

from delegation_service.adapters.key_directory import KeyDirectory, KeyDirectoryError, file_name


def test_a_created_key_loads_back_with_its_generation_time_kid_and_private_mode(tmp_path: Path) -> None:
    directory = KeyDirectory(tmp_path / "keys", clock=lambda: 1234.5)
    directory.ensure()
    assert directory.create(0, "ES256") is True
    (stored,) = directory.load()
    assert stored.record.generation == 0
    assert stored.record.created_at == 1234.5
    assert stored.record.kid == stored.key.kid
    assert stored.key.alg == "ES256"
    assert stored.path.name == file_name(0) == "key-00000000.json"
    assert stat.S_IMODE(stored.path.stat().st_mode) == 0o600
    assert stat.S_IMODE((tmp_path / "keys").stat().st_mode) == 0o700
    assert sorted(p.name for p in (tmp_path / "keys").iterdir()) == ["key-00000000.json"]  # no temp file


def test_the_first_key_of_a_generation_wins_and_the_loser_leaves_nothing(tmp_path: Path) -> None:
    first, second = KeyDirectory(tmp_path), KeyDirectory(tmp_path)
    assert first.create(3, "EdDSA") is True
    assert second.create(3, "EdDSA") is False
    assert [p.name for p in tmp_path.iterdir()] == [file_name(3)]
    assert first.load()[0].key.kid == second.load()[0].key.kid


Outcome = tuple[list[int], list[str]]
"""The generations one process created, and the kids it then read."""


def _race(
    path: str, start: multiprocessing.synchronize.Event, results: multiprocessing.Queue[Outcome]
) -> None:
    directory = KeyDirectory(Path(path))
    start.wait(10)
    won = [generation for generation in range(5) if directory.create(generation, "ES256")]
    results.put((won, [stored.key.kid for stored in directory.load()]))


def test_processes_racing_on_one_directory_create_each_generation_once_and_agree(tmp_path: Path) -> None:
    context = multiprocessing.get_context("spawn")
    start = context.Event()
    results: multiprocessing.Queue[Outcome] = context.Queue()
    workers = [context.Process(target=_race, args=(str(tmp_path), start, results)) for _ in range(4)]
    for worker in workers:
        worker.start()
    start.set()
    outcomes = [results.get(timeout=60) for _ in workers]
    for worker in workers:
        worker.join(timeout=30)
    won = sorted(g for wins, _ in outcomes for g in wins)
    assert won == [0, 1, 2, 3, 4]
    assert len({tuple(kids) for _, kids in outcomes}) == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == [file_name(g) for g in range(5)]


def test_files_that_are_not_keys_by_name_are_ignored(tmp_path: Path) -> None:
    directory = KeyDirectory(tmp_path)
    directory.create(0, "ES256")
    (tmp_path / "README").write_text("not a key")
    (tmp_path / ".tmp-abandoned.json").write_text("{")
    assert [stored.record.generation for stored in directory.load()] == [0]


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        ("{", "not a readable key file"),
        ("[]", "not a key file"),
        ('{"format": 1, "generation": 7}', "format, generation, fields"),
    ],
)
def test_a_broken_key_file_is_an_error_naming_it(tmp_path: Path, content: str, problem: str) -> None:
    (tmp_path / file_name(0)).write_text(content)
    with pytest.raises(KeyDirectoryError, match=problem) as raised:
        KeyDirectory(tmp_path).load()
    assert raised.value.path == tmp_path / file_name(0)


def test_a_key_file_whose_kid_is_not_its_key_is_refused(tmp_path: Path) -> None:
    KeyDirectory(tmp_path).create(0, "ES256")
    path = tmp_path / file_name(0)
    document = json.loads(path.read_text())
    path.write_text(json.dumps({**document, "kid": "someone-else"}))
    with pytest.raises(KeyDirectoryError, match="kid does not match"):
        KeyDirectory(tmp_path).load()


def test_a_file_under_another_generations_name_is_refused(tmp_path: Path) -> None:
    KeyDirectory(tmp_path).create(0, "ES256")
    (tmp_path / file_name(0)).rename(tmp_path / file_name(1))
    with pytest.raises(KeyDirectoryError, match="generation"):
        KeyDirectory(tmp_path).load()


def test_a_removed_key_is_gone_for_every_reader(tmp_path: Path) -> None:
    one, other = KeyDirectory(tmp_path), KeyDirectory(tmp_path)
    one.create(0, "ES256")
    one.create(1, "ES256")
    seen_by_other = other.load()
    one.remove(one.load()[0])
    assert [stored.record.generation for stored in other.load()] == [1]
    other.remove(seen_by_other[0])  # already gone: both processes may remove a retired key
    assert [stored.record.generation for stored in one.load()] == [1]


def test_an_unreadable_directory_is_an_error_naming_it(tmp_path: Path) -> None:
    with pytest.raises(KeyDirectoryError, match="cannot list"):
        KeyDirectory(tmp_path / "missing").load()
