"""WASI preview1 (``wasi_snapshot_preview1``) for dwasm: sandboxed, with snapshottable state.

    wasi = vm.wasi.Wasi(args=["prog"], env={"K": "V"}, preopens=[("/host/dir", "/data")],
                        stdout=sys.stdout.buffer)
    inst = vm.instantiate(store, module, wasi.imports())
    code = wasi.run(store, inst)

See docs/wasi.md for the sandbox rules, the state format and the durability guarantees.
"""

from __future__ import annotations

from . import abi, errno
from .calls_misc import ProcExit
from .durable import WasiRestoreError
from .errno import WasiError
from .host import FS_EFFECTS
from .stdio import OutputGapError
from .wasi import Wasi

__all__ = ["FS_EFFECTS", "OutputGapError", "ProcExit", "Wasi", "WasiError", "WasiRestoreError",
           "abi", "errno"]
