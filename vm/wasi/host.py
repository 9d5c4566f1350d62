"""The ``wasi_snapshot_preview1`` import module: wasm signatures, error handling, suspension.

Every import is a ``vm.HostFunction`` around one method of ``Wasi``. The wrapper is where WASI's
error model is enforced: ``WasiError`` and host ``OSError``s become errno results, a few Python
errors that bad arguments can cause map to their errno, and only traps (``TrapError``: bad guest
pointers) and ``ProcExit`` leave the call. A call named in ``Wasi.suspend_on`` that has an
effect raises ``vm.Suspend`` instead of running, so a durable driver can checkpoint right before
the effect and then run it with ``Wasi.perform``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable

from ..errors import Suspend
from ..runtime.objects import HostFunction
from ..structure import I32, I64, FuncType
from .errno import EILSEQ, EINVAL, ENOMEM, EOVERFLOW, SUCCESS, WasiError, from_oserror

if TYPE_CHECKING:
    from .wasi import Wasi

MODULE = "wasi_snapshot_preview1"

# name → parameter types; every function returns an errno (i32) except proc_exit.
SIGNATURES: dict[str, tuple[int, ...]] = {
    "args_get": (I32, I32),
    "args_sizes_get": (I32, I32),
    "environ_get": (I32, I32),
    "environ_sizes_get": (I32, I32),
    "clock_res_get": (I32, I32),
    "clock_time_get": (I32, I64, I32),
    "fd_advise": (I32, I64, I64, I32),
    "fd_allocate": (I32, I64, I64),
    "fd_close": (I32,),
    "fd_datasync": (I32,),
    "fd_fdstat_get": (I32, I32),
    "fd_fdstat_set_flags": (I32, I32),
    "fd_fdstat_set_rights": (I32, I64, I64),
    "fd_filestat_get": (I32, I32),
    "fd_filestat_set_size": (I32, I64),
    "fd_filestat_set_times": (I32, I64, I64, I32),
    "fd_pread": (I32, I32, I32, I64, I32),
    "fd_prestat_get": (I32, I32),
    "fd_prestat_dir_name": (I32, I32, I32),
    "fd_pwrite": (I32, I32, I32, I64, I32),
    "fd_read": (I32, I32, I32, I32),
    "fd_readdir": (I32, I32, I32, I64, I32),
    "fd_renumber": (I32, I32),
    "fd_seek": (I32, I64, I32, I32),
    "fd_sync": (I32,),
    "fd_tell": (I32, I32),
    "fd_write": (I32, I32, I32, I32),
    "path_create_directory": (I32, I32, I32),
    "path_filestat_get": (I32, I32, I32, I32, I32),
    "path_filestat_set_times": (I32, I32, I32, I32, I64, I64, I32),
    "path_link": (I32, I32, I32, I32, I32, I32, I32),
    "path_open": (I32, I32, I32, I32, I32, I64, I64, I32, I32),
    "path_readlink": (I32, I32, I32, I32, I32, I32),
    "path_remove_directory": (I32, I32, I32),
    "path_rename": (I32, I32, I32, I32, I32, I32),
    "path_symlink": (I32, I32, I32, I32, I32),
    "path_unlink_file": (I32, I32, I32),
    "poll_oneoff": (I32, I32, I32, I32),
    "proc_exit": (I32,),
    "proc_raise": (I32,),
    "sched_yield": (),
    "random_get": (I32, I32),
    "sock_accept": (I32, I32, I32),
    "sock_recv": (I32, I32, I32, I32, I32, I32),
    "sock_send": (I32, I32, I32, I32, I32),
    "sock_shutdown": (I32, I32),
}

NO_RESULT = frozenset({"proc_exit"})

# The calls that change the file system (fd_write and fd_pwrite only on files, path_open only
# with O_CREAT or O_TRUNC; see Wasi.has_effect). A driver passing them as ``suspend_on`` and
# checkpointing at each suspension gets every file-system effect exactly once.
FS_EFFECTS = frozenset({
    "fd_allocate", "fd_filestat_set_size", "fd_filestat_set_times", "fd_pwrite", "fd_write",
    "path_create_directory", "path_filestat_set_times", "path_link", "path_open",
    "path_remove_directory", "path_rename", "path_symlink", "path_unlink_file",
})


def call_errno(method: Callable[..., Any], args: tuple[int, ...] | list[int]) -> int:
    """Run a WASI method; returns its errno instead of raising."""
    try:
        result = method(*args)
    except WasiError as exc:
        return exc.errno
    except OSError as exc:
        return from_oserror(exc)
    except UnicodeError:
        return EILSEQ
    except ValueError:  # e.g. an embedded NUL the path checks did not catch
        return EINVAL
    except OverflowError:  # a 64-bit argument beyond what the host call takes
        return EOVERFLOW
    except MemoryError:
        return ENOMEM
    return SUCCESS if result is None else result


def _import(wasi: "Wasi", name: str) -> Callable[..., int]:
    method = getattr(wasi, name)
    durable = wasi.durable

    def call(*args: int) -> int:
        durable.fresh = False
        if name in wasi.suspend_on and wasi.has_effect(name, args):
            wasi.suspended = (name, args)
            raise Suspend({"wasi": name})
        return call_errno(method, args)

    call.__name__ = name
    return call


def build_imports(wasi: "Wasi") -> dict[str, dict[str, HostFunction]]:
    """``{"wasi_snapshot_preview1": {name: HostFunction}}`` for every preview1 function."""
    funcs: dict[str, HostFunction] = {}
    for name, params in SIGNATURES.items():
        if name in NO_RESULT:
            funcs[name] = HostFunction(FuncType(params, ()), getattr(wasi, name), name)
        else:
            funcs[name] = HostFunction(FuncType(params, (I32,)), _import(wasi, name), name)
    return {MODULE: funcs}
