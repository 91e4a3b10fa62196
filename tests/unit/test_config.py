from pathlib import Path

import pytest

from searchengine.config import Config
from searchengine.errors import ConfigError


def test_defaults_and_env_and_overrides():
    assert Config.from_env({}).home == Path("indexes")
    env = {
        "SEARCHENGINE_HOME": "/data/idx",
        "SEARCHENGINE_MODEL": "toy",
        "SEARCHENGINE_BATCH_SIZE": "8",
    }
    cfg = Config.from_env(env)
    assert (cfg.home, cfg.model, cfg.batch_size) == (Path("/data/idx"), "toy", 8)
    # explicit options win over the environment; None means "not given"
    cfg = Config.from_env(env, home=Path("/other"), model=None)
    assert (cfg.home, cfg.model) == (Path("/other"), "toy")


def test_bad_env_number_is_a_config_error():
    with pytest.raises(ConfigError, match="SEARCHENGINE_WORKERS"):
        Config.from_env({"SEARCHENGINE_WORKERS": "many"})


def test_a_home_that_is_a_file_is_a_config_error(tmp_path):
    afile = tmp_path / "indexes"
    afile.write_text("")
    with pytest.raises(ConfigError, match=r"SEARCHENGINE_HOME='.*indexes' is a file"):
        Config.from_env({"SEARCHENGINE_HOME": str(afile)})
    made_later = tmp_path / "not-yet"  # a folder that does not exist yet is fine
    assert Config.from_env({"SEARCHENGINE_HOME": str(made_later)}).home == made_later
