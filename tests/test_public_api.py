"""The public face: what `import eskit` offers is sorted, importable and documented, and lints clean."""

from __future__ import annotations

import doctest
import importlib
import pkgutil

import eskit


def test_all_is_sorted_and_every_name_in_it_exists() -> None:
    assert eskit.__all__ == sorted(eskit.__all__)
    missing = [name for name in eskit.__all__ if not hasattr(eskit, name)]
    assert missing == []


def test_integration_events_and_multi_stream_projections_are_public() -> None:
    for name in ("IntegrationStream", "MultiStreamProjection", "Partner", "Republisher", "integration"):
        assert name in eskit.__all__
    assert callable(eskit.Client.publish_integration) and callable(eskit.Client.public_store)


def test_every_public_name_and_module_has_a_docstring() -> None:
    undocumented = [n for n in eskit.__all__ if callable(getattr(eskit, n)) and not getattr(eskit, n).__doc__]
    modules = [m.name for m in pkgutil.walk_packages(eskit.__path__, "eskit.")]
    bare = [m for m in modules if not importlib.import_module(m).__doc__]
    assert undocumented == [] and bare == []


def test_the_process_manager_api_is_public_under_the_names_the_docs_teach() -> None:
    names = ["Append", "CommandService", "ProcessError", "ProcessManager", "ProcessStats", "Request",
             "command_service", "reacts_to"]  # fmt: skip
    assert [n for n in names if n not in eskit.__all__] == []
    assert eskit.ProcessManager is eskit.process.ProcessManager and eskit.Append is eskit.process.Append


def test_every_error_is_an_eskit_error_and_drawn_in_the_error_tree() -> None:
    errors = importlib.import_module("eskit.errors")
    classes = [c for c in vars(errors).values() if isinstance(c, type) and issubclass(c, Exception)]
    assert all(issubclass(c, eskit.EskitError) for c in classes)
    assert [c.__name__ for c in classes if c.__name__ not in (errors.__doc__ or "")] == []


def test_the_doctests_that_need_no_server_pass() -> None:
    for name in ("eskit.events", "eskit.errors", "eskit.examples", "eskit.auth", "eskit.upcasting",
                 "eskit.process.commands", "eskit.process.examples", "eskit.integration.public",
                 "eskit.integration.republish"):  # fmt: skip
        result = doctest.testmod(importlib.import_module(name), optionflags=doctest.ELLIPSIS)
        assert result.attempted > 0 and result.failed == 0, name


def test_the_analysis_extra_stays_optional_importing_eskit_loads_neither_parquet_nor_duckdb() -> None:
    import subprocess
    import sys
    from pathlib import Path

    code = (
        "import sys\n"
        "sys.modules['pyarrow'] = None\n"  # as if the extra were not installed: `import pyarrow` fails
        "import eskit\n"
        "assert 'duckdb' not in sys.modules and 'pyarrow.parquet' not in sys.modules\n"
        "try:\n"
        "    eskit.export._arrow()\n"
        "except eskit.EskitError as exc:\n"
        "    print(exc)\n"
    )
    root = Path(__file__).resolve().parents[1]
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=root)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == ["the Arrow/Parquet export needs pyarrow: pip install 'eskit[analysis]'"]
