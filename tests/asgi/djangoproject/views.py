"""Async views; the ORM is synchronous, so it runs through sync_to_async."""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
from collections.abc import AsyncIterator

from asgiref.sync import sync_to_async
from django.http import HttpRequest, HttpResponse, JsonResponse, StreamingHttpResponse
from djangoproject.models import Note


async def home(request: HttpRequest) -> HttpResponse:
    return JsonResponse({"hello": "django"})


async def echo_json(request: HttpRequest) -> HttpResponse:
    # Django's ASGI handler has no lifespan: nothing to report as state.
    return JsonResponse({"got": json.loads(request.body), "db": None})


async def stream(request: HttpRequest) -> HttpResponse:
    count = int(request.GET.get("n", "100"))

    async def numbers() -> AsyncIterator[bytes]:
        for i in range(count):
            yield b"%d\n" % i

    return StreamingHttpResponse(numbers(), content_type="text/plain")


async def upload(request: HttpRequest) -> HttpResponse:
    # The handler spools the body before the view runs; the view reads it as a stream.
    digest = hashlib.sha256()
    total = pieces = 0
    while chunk := request.read(65536):
        digest.update(chunk)
        total += len(chunk)
        pieces += 1
    return JsonResponse({"total": total, "pieces": pieces, "sha256": digest.hexdigest()})


async def form(request: HttpRequest) -> HttpResponse:
    upload = request.FILES["file"]
    return JsonResponse({"name": request.POST["name"], "filename": upload.name,
                         "size": len(upload.read())})


async def notes(request: HttpRequest) -> HttpResponse:
    if request.method == "POST":
        await sync_to_async(Note.objects.create)(text=json.loads(request.body)["text"])
    texts = await sync_to_async(lambda: list(Note.objects.order_by("id")
                                             .values_list("text", flat=True)))()
    count = await sync_to_async(Note.objects.count)()
    return JsonResponse({"count": count, "texts": texts})


async def until_disconnect(request: HttpRequest) -> HttpResponse:
    async def waiting() -> AsyncIterator[bytes]:
        yield b"x" * 16384
        try:
            await asyncio.sleep(60)  # nothing more to send for a long time
        except asyncio.CancelledError:
            # Django's handler cancels the view's task when receive() gives http.disconnect.
            path = os.environ.get("ASGI_DISCONNECT_MARK")
            if path:
                with open(path, "a") as fh:
                    fh.write("disconnect django\n")
            raise

    response = StreamingHttpResponse(waiting(), content_type="application/octet-stream")
    response["X-Accel-Buffering"] = "no"
    return response
