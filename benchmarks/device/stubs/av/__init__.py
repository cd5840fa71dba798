"""Stand-in for PyAV on machines without it (the lent H200 image): LeRobot imports ``av`` at module level for
video decoding and encoding, which the policy benchmark never does. Only ``av.logging``'s constants, read at
import, exist; anything else raises."""
import types

logging = types.SimpleNamespace(WARNING=30, ERROR=40, INFO=20, DEBUG=10, restore_default_callback=lambda: None,
                                set_level=lambda level: None)


def __getattr__(name):
    raise ImportError(f"PyAV is not installed here (av.{name} was asked for); this is the benchmark's stand-in.")
