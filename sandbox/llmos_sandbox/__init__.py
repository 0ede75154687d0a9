"""llmos_sandbox: persistent Jupyter kernels with measured isolation. A leaf: it never imports ``llmos``.

Front door::

    from llmos_sandbox import Sandbox, SandboxConfig, SandboxPool, probe

    with Sandbox(SandboxConfig(network="require")) as box:   # IsolationError if the host cannot
        result = box.run("x = 6 * 7\\nx", timeout=10)
        result.value, result.stdout, result.error, result.timed_out, box.isolation.level
"""

from llmos_sandbox import documents
from llmos_sandbox.isolation import Isolation, IsolationError, probe
from llmos_sandbox.kernel import Limits, Sandbox, SandboxConfig, SandboxError
from llmos_sandbox.outputs import CellResult, KernelError, Output
from llmos_sandbox.pool import SandboxPool

__all__ = [
    "CellResult",
    "Isolation",
    "IsolationError",
    "KernelError",
    "Limits",
    "Output",
    "Sandbox",
    "SandboxConfig",
    "SandboxError",
    "SandboxPool",
    "documents",
    "probe",
]
