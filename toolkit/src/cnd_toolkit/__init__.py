"""Deploy and operations tooling: plain, typed modules that ``tasks.py`` calls.

Every expected failure is an :class:`cnd_toolkit.errors.OpsError` whose message says what is wrong and
what to do; ``tasks.py`` turns it into a one-line exit, never a traceback.
"""
