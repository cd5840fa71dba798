"""Stand-in for PyAV on machines without it (the lent H200 image): LeRobot imports ``av`` at module level for
video decoding and encoding, which the policy benchmark never does. ``av.logging``'s constants, read at import,
exist; any other name (LeRobot 0.6 evaluates ``av.codec.Codec | None`` and the like in annotations at import)
is a placeholder that raises when it is called."""
import types

logging = types.SimpleNamespace(WARNING=30, ERROR=40, INFO=20, DEBUG=10, restore_default_callback=lambda: None,
                                set_level=lambda level: None)


class _Missing:
    def __init__(self, path: str):
        self._path = path

    def __getattr__(self, name: str) -> "_Missing":
        return _Missing(f"{self._path}.{name}")

    def __or__(self, other):
        return self

    __ror__ = __or__

    def __call__(self, *args, **kwargs):
        raise ImportError(f"PyAV is not installed here ({self._path} was called); this is the benchmark's stand-in.")


def __getattr__(name: str) -> _Missing:
    return _Missing(f"av.{name}")
