from django.urls import path
from djangoproject import views

urlpatterns = [
    path("", views.home),
    path("json", views.echo_json),
    path("stream", views.stream),
    path("upload", views.upload),
    path("form", views.form),
    path("notes", views.notes),
    path("until-disconnect", views.until_disconnect),
]
