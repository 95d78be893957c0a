"""What a wheel of benchlab holds: every package of the source tree."""

from __future__ import annotations

try:
    import tomllib
except ImportError:  # Python 3.10
    import tomli as tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_every_package_of_the_tree_is_listed_for_the_wheel():
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    listed = set(config["packages"])
    found = {".".join(init.parent.relative_to(ROOT).parts)
             for init in (ROOT / "benchlab").rglob("__init__.py")}
    assert found <= listed, f"missing from pyproject.toml: {sorted(found - listed)}"
    assert "benchlab_plugins" in listed and config["package-dir"]["benchlab_plugins"] == "plugins"


def test_the_static_files_of_report_html_are_package_data():
    """A non-editable install must carry the scripts and styles report.html inlines."""
    from fnmatch import fnmatch

    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    patterns = config["package-data"]["benchlab.report"]
    static = ROOT / "benchlab" / "report" / "static"
    files = [p.relative_to(static.parent).as_posix() for p in static.iterdir()]
    assert {"static/page.js", "static/page.css", "static/plotly-basic.min.js"} <= set(files)
    assert [f for f in files if not any(fnmatch(f, p) for p in patterns)] == []
