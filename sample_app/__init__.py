"""A sample WSGI app for the deployment bundle; the app is :data:`sample_app.app.app`."""
