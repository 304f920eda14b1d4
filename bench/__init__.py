"""A hand-run benchmark: our server against gunicorn, behind one nginx, measured with wrk.

Not part of the test suite.  ``python -m bench --help`` (or ``python bench/run.py --help``) and
``bench/README.md`` explain how to run it and how to read its table.
"""
