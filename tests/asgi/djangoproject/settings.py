"""Settings of the test project: one app (this package, for its model), no middleware, and an
in-memory SQLite database shared by every thread of the worker (see asgi.py)."""

SECRET_KEY = "not-secret-test-only"
DEBUG = False
ALLOWED_HOSTS = ["*"]
ROOT_URLCONF = "djangoproject.urls"
INSTALLED_APPS = ["djangoproject"]
MIDDLEWARE: list[str] = []
USE_TZ = True
# Django's ASGI handler runs each request's sync code in a thread of its own, and a thread has its
# own connection: a shared-cache in-memory database is one database for all of them (Django never
# closes an in-memory connection, and the importing thread's stays open for the worker's life).
DATABASES = {"default": {"ENGINE": "django.db.backends.sqlite3",
                         "NAME": "file:appserver-asgi-django?mode=memory&cache=shared"}}
DEFAULT_AUTO_FIELD = "django.db.models.AutoField"
DATA_UPLOAD_MAX_MEMORY_SIZE = None
FILE_UPLOAD_MAX_MEMORY_SIZE = 1 << 20
