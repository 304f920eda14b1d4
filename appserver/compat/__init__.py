"""gunicorn's world, kept at the edge of the server.

* :mod:`.sources`: the configuration sources gunicorn reads (a Python config file, ``-c
  python:MODULE``, ``./gunicorn.conf.py``, ``GUNICORN_CMD_ARGS``) and our ``APPSERVER_CMD_ARGS``,
  merged with the TOML file and ``APPSERVER_*`` variables in gunicorn's order of precedence.
* :mod:`.pyconfig`: executes a Python config file and sorts its names into settings, warnings
  (a misspelt setting) and names that are none of our business.
* :mod:`.unsupported`: the one table of gunicorn settings the server does not offer yet.
* :mod:`.hooks` and :mod:`.views`: the server hooks, called with gunicorn-shaped views over the
  server's own objects.
* :mod:`.glogger`: gunicorn's ``logger_class``, a deployment's class with the interface of
  ``gunicorn.glogging.Logger``, built and called where gunicorn calls it.

Nothing in the core imports from here; the command line wires it in.
"""
