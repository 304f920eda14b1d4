"""A minimal Django project served through Django's ASGI handler (tests/asgi/test_through_nginx.py):
async views, a streamed response, uploads, and the ORM through sync_to_async."""
