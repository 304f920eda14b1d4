"""The ASGI entry point (``djangoproject.asgi:application``), as ``startproject`` writes it, plus
the table of the in-memory database."""

import os

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "djangoproject.settings")
application = get_asgi_application()


def _create_tables() -> None:
    from django.db import connection
    from djangoproject.models import Note

    if Note._meta.db_table not in connection.introspection.table_names():
        with connection.schema_editor() as editor:
            editor.create_model(Note)


_create_tables()
