"""The local stack behind `scripts/stack.py`: Azurite, a TLS registry and the local Functions host.

`scripts/stack.py` is the command line; this package does the work, one concern per module:

    settings     STACK_DIR, ports, the folder layout, stack.json; StackError
    files        owner-only and write-if-changed file writes
    keys         the host's function key and the app's Fernet key, made once per STACK_DIR
    environment  the variables a client of the stack needs (what `stack.py env` prints)
    net          loopback probes: is a port answering, a GET that bypasses proxies
    processes    pid files, whether a pid is still the process we started, spawn, wait, stop
    certs        the stack's CA, the registry's server certificate, system-wide trust
    azurite      the Azure Storage emulator: command line, readiness, connection string
    registry     docker-registry (distribution 2.8): command line, config.yml, readiness
    host         the local Functions host (`python -m devhost`): command line, environment, status
    parts        the three parts side by side: start order, timeouts, readiness, "is this ours?"
    commands     up, down and status

Only the standard library is used: the stack starts before anything is pip-installed.
See docs/local-stack.md.
"""
