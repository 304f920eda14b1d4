"""The deployment bundle: one settings file renders nginx, compose and the app server's config.

``settings.toml`` is declared by :mod:`appserver.bundle.settings` (``[server]`` is the server's own
:class:`~appserver.config.ServerConfig`) and read by :mod:`appserver.bundle.loading`;
:mod:`appserver.bundle.plan` computes every value that several files share (socket path, users,
derived limits) once per target (docker, local); :mod:`appserver.bundle.crosscheck` refuses
settings whose layers would disagree; :mod:`appserver.bundle.render` prints plans through the Jinja
templates in ``templates/``; :mod:`appserver.bundle.kubernetes` computes the pod's values for
``deploy/kubernetes/`` (checked by :mod:`appserver.bundle.crosscheck_kubernetes`);
:mod:`appserver.bundle.tools` runs ``nginx -t`` and ``docker compose
config``; :mod:`appserver.bundle.localstack` runs nginx and the app server as plain processes;
:mod:`appserver.bundle.layering` merges overlays and ``APPSERVER__TABLE__KEY`` variables over the
settings file, remembering where each value came from; :mod:`appserver.bundle.environments` places
an environment's render under ``deploy/NAME/`` and diffs two of them;
:mod:`appserver.bundle.commands` adds ``render``, ``check``, ``up`` and ``diff`` to the CLI.

The server's request path never imports this package beyond ``commands`` (argparse only), so Jinja
stays out of the workers; ``healthcheck`` uses the standard library only, for the app image.
"""
