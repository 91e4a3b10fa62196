"""The command line as a user meets it: help, errors, exit codes."""

import json

import click
import pytest
from click.testing import CliRunner
from importcheck import imported_after

import searchengine
from searchengine.cli import main


def commands():
    return sorted(main.commands)


@pytest.mark.parametrize("name", commands())
def test_every_command_has_help_with_an_example(name):
    result = CliRunner().invoke(main, [name, "--help"])
    assert result.exit_code == 0
    assert "Examples:" in result.output
    assert f"searchengine {name}" in result.output


def test_help_does_not_import_torch():
    code = (
        "from click.testing import CliRunner\n"
        "from searchengine.cli import main\n"
        "for args in (['--help'], ['search', '--help'], ['index', '--help']):\n"
        "    assert CliRunner().invoke(main, args).exit_code == 0\n"
    )
    assert imported_after(code, ("torch", "open_clip", "transformers", "faiss")) == []


def test_missing_collection_is_one_clear_line(tmp_path):
    result = CliRunner().invoke(main, ["search", "a dog", "--index-dir", str(tmp_path)])
    assert result.exit_code == 1
    assert "no collection 'default'" in result.output
    assert "searchengine index PATH" in result.output
    assert "Traceback" not in result.output


def test_bad_model_spec_is_refused(tmp_path):
    (tmp_path / "p").mkdir()
    result = CliRunner().invoke(
        main, ["index", str(tmp_path / "p"), "--index-dir", str(tmp_path / "i"), "-m", "nonsense"]
    )
    assert result.exit_code == 1
    assert "cannot parse model spec 'nonsense'" in result.output


def test_bad_k_is_a_usage_error(tmp_path):
    result = CliRunner().invoke(main, ["search", "x", "-k", "0", "--index-dir", str(tmp_path)])
    assert result.exit_code == 2


def test_exported_members():
    # The public API is exactly what __all__ names, and every name resolves.
    for name in searchengine.__all__:
        assert getattr(searchengine, name) is not None
    public = {n for n in dir(searchengine) if not n.startswith("_")}
    modules = {n for n in public if isinstance(getattr(searchengine, n), type(searchengine))}
    assert public - modules == set(searchengine.__all__)


def test_commands_are_click_commands():
    assert all(isinstance(c, click.Command) for c in main.commands.values())


def test_status_json_on_empty_collection(tmp_path):
    from searchengine import Collection, Config

    Collection.open("c", Config(home=tmp_path), create=True, model="toy").close()
    result = CliRunner().invoke(main, ["status", "-c", "c", "--index-dir", str(tmp_path), "--json"])
    assert result.exit_code == 0, result.output
    info = json.loads(result.output)
    assert (info["model"], info["images"], info["index_type"]) == ("toy", 0, "Flat")


def test_a_query_of_an_empty_collection_says_how_to_fill_it(tmp_path):
    from imagegen import solid

    from searchengine import Collection, Config

    Collection.open("c", Config(home=tmp_path), create=True, model="toy").close()
    example = solid(tmp_path / "q.png", (250, 0, 0))
    base = ["-c", "c", "--index-dir", str(tmp_path), "--device", "cpu"]
    for args in (["search", "a red circle"], ["similar", str(example)]):
        result = CliRunner().invoke(main, [*args, *base])
        assert result.exit_code == 0, result.output
        assert result.output.strip() == (
            "no results: collection 'c' has no photos indexed yet; add some with: "
            "searchengine index PATH --collection c"
        )
        as_json = CliRunner().invoke(main, [*args, *base, "--json"])
        assert as_json.exit_code == 0 and json.loads(as_json.output) == []


def test_a_catalog_server_lost_mid_index_says_the_run_resumes_a_sqlite_error_does_not():
    """``index`` ends a lost server's line with what was kept (``errors(resumes=True)``);
    a SQLite catalog's error has no server to wait for, so its line is left as it was;
    a lock held too long says to wait for the other session, not for the server."""
    import sqlite3

    import psycopg
    from sqlalchemy.exc import OperationalError

    from searchengine.cli.common import errors

    kept = "; what was committed is kept"

    def said(original: Exception, resumes: bool = True) -> str:
        with pytest.raises(click.ClickException) as raised, errors(resumes=resumes):
            raise OperationalError("INSERT INTO images ...", {}, original)
        return raised.value.message

    lost = psycopg.OperationalError("server closed the connection unexpectedly")
    server = said(lost)
    assert server.startswith("cannot use the catalog database: server closed the connection")
    assert server.endswith(
        "that the server is up)" + kept + ": run the same command again once it is up"
    )
    assert said(lost, resumes=False).endswith("that the server is up)")  # a search keeps nothing
    local = said(sqlite3.OperationalError("disk I/O error"))
    assert local == (
        "cannot use the catalog database: disk I/O error "
        "(check the collection's folder and its disk)"
    )
    locked = said(psycopg.errors.LockNotAvailable("canceling statement due to lock timeout"))
    assert locked.startswith("cannot use the catalog database: another session held a lock")
    assert locked.endswith("to the URL)" + kept)
