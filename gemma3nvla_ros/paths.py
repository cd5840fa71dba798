"""Where the package's shared files (config/, launch/) live, however it was installed."""
from __future__ import annotations

import sys
from pathlib import Path

PACKAGE = "gemma3nvla_ros"


def share_dir() -> Path:
    """The directory holding ``config/`` and ``launch/``.

    A source checkout (editable install) wins so edits take effect without reinstalling; then the ament
    index (colcon install); then the data files a plain ``pip install`` put under ``sys.prefix``.
    """
    checkout = Path(__file__).resolve().parents[1]
    if (checkout / "package.xml").is_file() and (checkout / "config").is_dir():
        return checkout
    try:
        from ament_index_python.packages import get_package_share_directory

        return Path(get_package_share_directory(PACKAGE))
    except Exception:  # noqa: BLE001 - no ROS, or the package is not in the ament index
        pass
    installed = Path(sys.prefix) / "share" / PACKAGE
    if (installed / "config").is_dir():
        return installed
    raise FileNotFoundError(f"cannot find the {PACKAGE} share directory (config/, launch/)")


def config_dir() -> Path:
    return share_dir() / "config"


def graph_path(name_or_path: str) -> Path:
    """``so101_pickplace`` -> ``<share>/config/so101_pickplace.yaml``; an existing path is taken as is."""
    candidate = Path(name_or_path)
    if candidate.suffix in (".yaml", ".yml") and candidate.is_file():
        return candidate
    name = candidate.name.removesuffix(".launch.py").removesuffix(".yaml")
    path = config_dir() / f"{name}.yaml"
    if not path.is_file():
        available = sorted(p.stem for p in config_dir().glob("*.yaml") if _is_graph(p))
        raise FileNotFoundError(f"no launch graph '{name}' in {config_dir()}; available: {', '.join(available)}")
    return path


def _is_graph(path: Path) -> bool:
    try:
        return "\nnodes:" in "\n" + path.read_text()
    except OSError:
        return False
