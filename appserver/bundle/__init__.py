"""The deployment bundle: one settings file renders nginx, compose and the app server's config.

``settings.toml`` is validated by :mod:`appserver.bundle.settings`; :mod:`appserver.bundle.plan`
computes every value that several files share (socket path, users, derived limits) once;
:mod:`appserver.bundle.crosscheck` refuses settings whose layers would disagree;
:mod:`appserver.bundle.render` prints them through the Jinja templates in ``templates/``;
:mod:`appserver.bundle.localstack` runs nginx and the app server as plain processes.

The server's request path never imports this package (Jinja stays out of the workers), so
nothing here is imported eagerly: ``healthcheck`` must run in the app image with the stdlib only.
"""
