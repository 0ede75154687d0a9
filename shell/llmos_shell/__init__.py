"""llmos_shell: the shells around the runtime.

The command line (:mod:`llmos_shell.cli`), the terminal assistant (:mod:`llmos_shell.tui`), the
task runner (:mod:`llmos_shell.task`, :mod:`llmos_shell.runner`) and reports. They use the
runtime (``llmos``); the runtime never imports them.
"""
