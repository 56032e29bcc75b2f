"""Make this process look like Windows to the pack: no ``resource`` module, no ``/proc``.

``block()`` removes the Unix-only ``resource`` module (``import resource`` raises ImportError
from then on) and makes every ``open`` of a ``/proc`` path fail with OSError when the pack's
own code asks for it (the first caller outside the standard library is a file of
``dragon_core``, ``dragon_demo``, ``nodes`` or the entry point). Other libraries keep their
Linux behaviour: ComfyUI's memory checks read ``/proc`` through psutil here, which on Windows
uses its own API. Used by the portability tests, in a subprocess, before the pack is imported.
"""

from __future__ import annotations

import builtins
import io
import os
import sys
import sysconfig
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACK = tuple(str(ROOT / d) + os.sep for d in ("dragon_core", "dragon_demo", "nodes")) + (str(ROOT / "__init__.py"),)
STDLIB = (sysconfig.get_paths()["stdlib"] + os.sep, "<frozen ")
attempts: list[str] = []


def _from_pack() -> bool:
    f = sys._getframe(2)
    while f is not None and f.f_code.co_filename.startswith(STDLIB):
        f = f.f_back
    return f is not None and f.f_code.co_filename.startswith(PACK)


def block() -> None:
    sys.modules["resource"] = None  # type: ignore[assignment]  # import resource -> ImportError
    real_open = builtins.open

    def guarded_open(file, *args, **kwargs):
        if isinstance(file, (str, os.PathLike)) and os.fspath(file).startswith("/proc") and _from_pack():
            attempts.append(os.fspath(file))
            raise OSError(f"{os.fspath(file)}: no /proc on this system (portability test)")
        return real_open(file, *args, **kwargs)

    builtins.open = guarded_open
    io.open = guarded_open
