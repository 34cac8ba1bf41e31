"""The admin, and a CSRF-protected form."""
from django.contrib import admin
from django.http import HttpResponse
from django.middleware.csrf import get_token
from django.urls import path


def form(request):
    if request.method == "POST":
        return HttpResponse(f"posted {request.POST.get('name', '')}")
    token = get_token(request)
    return HttpResponse(f"token={token}")


urlpatterns = [
    path("admin/", admin.site.urls),
    path("form/", form),
]
