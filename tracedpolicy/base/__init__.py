"""The ground floor: what every layer may use, and which uses nothing of tracedpolicy above it.

``_compat`` (every Python-version difference), ``version``, ``options`` (keyword options and
``TRACEDPOLICY_*`` variables), ``forksafe`` (locks made anew in a forked child, at-exit),
``patching`` (wrapt wrappers with an exact undo), ``imports`` (call back when a module is
imported). May import: only ``tracedpolicy.base``. (Docstring only: importing a subpackage
loads nothing else.)
"""
